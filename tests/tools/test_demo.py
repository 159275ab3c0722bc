"""``make demo`` replaces only its own earlier outputs: a ``--out`` folder holding anything else is kept."""

from __future__ import annotations

from tests.conftest import ROOT, run_cli


def test_demo_refuses_an_out_folder_of_the_users(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "thesis_figures.png").write_bytes(b"mine")
    r = run_cli(ROOT / "tools" / "demo.py", "--out", out, "--device", "cpu")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "thesis_figures.png" in lines[0], r.stderr
    assert (out / "thesis_figures.png").read_bytes() == b"mine" and sorted(p.name for p in out.iterdir()) == [
        "thesis_figures.png"
    ]
