"""The one checkpoint module's strict loading: every mismatch is one CheckpointError line naming the file."""

from __future__ import annotations

import pytest
import torch

from medseg.train.checkpoint import CheckpointError, load_state_strict


def test_shape_mismatch_is_one_line_naming_the_file(tmp_path):
    """torch's own error for a shape mismatch is a multi-line list that names no file (a baseline
    checkpoint of another width, a ResNet-18 given as ResNet-50 encoder weights)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 1, 1))
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 1, 1)).state_dict()
    path = tmp_path / "narrow.pth"
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        load_state_strict(net, other, path, what="the unet")
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "3 tensors have the wrong shape for the unet" in msg
    assert "0.weight: file (4, 3, 3, 3) vs model (8, 3, 3, 3)" in msg
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing half-loaded


def test_missing_and_unexpected_keys_are_named(tmp_path):
    net = torch.nn.Linear(2, 1)
    with pytest.raises(
        CheckpointError, match=r"keys do not match the model: 1 missing keys \(first: bias\); 1 unex"
    ):
        load_state_strict(net, {"weight": torch.zeros(1, 2), "extra": torch.zeros(1)}, tmp_path / "x.pth")
