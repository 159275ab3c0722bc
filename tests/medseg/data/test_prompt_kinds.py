"""Prompt types are strategies (issue 16): ``prompt.type`` is read once, in medseg/data/prompts.py; every
other module asks the :class:`PromptKind` what the type means."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medseg.data.prompts import KINDS, PromptConfig, PromptKind, object_prompt
from tests.conftest import ROOT


@pytest.mark.parametrize("name", ["box", "click", "mask", "none"])
def test_each_type_is_a_kind_with_its_own_inputs(name):
    kind = PromptConfig.from_cfg({"type": name, "n_pos": 1}).kind
    assert isinstance(kind, PromptKind) and kind.name == name
    assert [kind.box, kind.clicks, kind.mask, kind.automatic].count(True) == 1
    mask = np.zeros((16, 16), bool)
    mask[4:9, 5:12] = True
    p = object_prompt(mask, {"type": name, "n_pos": 1}, np.random.default_rng(0))
    assert bool(np.any(p["box"])) == kind.box
    assert (len(p["point_labels"]) > 0) == kind.clicks
    assert bool(np.any(p["mask_prompt"])) == kind.mask


def test_no_module_compares_the_prompt_type_string():
    pattern = re.compile(r"""(prompt_type|\.type)\s*(==|!=|in)\s*[("']""")
    hits = []
    for pkg in ("medseg", "func_2d", "func_3d", "sam_family", "traditional_models", "sam2_train"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "prompts.py" and path.parent.name == "data":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line) and "device" not in line and "dev." not in line:
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)
    assert set(KINDS) == {"box", "click", "mask", "none"}
