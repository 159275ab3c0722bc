"""checkpoints/download_ckpts.sh with stand-ins for curl and python (no network here): which files it asks
for, that a finished file is never downloaded again, and that ``--medsam2`` alone works (issue 23)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_CURL = """#!/usr/bin/env bash
# stand-in for curl: -I probes succeed; a download writes the URL into the -o file and logs it
out=""; url=""; head=0
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift ;;
    -fsI) head=1 ;;
    --max-time|--retry|-C) shift ;;
    -*) ;;
    *) url="$1" ;;
  esac
  shift
done
[ "$head" = 1 ] && exit 0
echo "$url" >> "$LOG"
echo "weights from $url" > "$out"
"""

FAKE_PY = """#!/usr/bin/env bash
# stand-in for the verifying python: reads the heredoc, records file/kind/variant
cat >/dev/null
[ "$1" = - ] && shift
echo "verify $1 $2 $3" >> "$LOG"
echo "OK $3: $1"
"""


@pytest.fixture()
def tool(tmp_path):
    """A copy of the script in its own checkpoints/ folder, with fake curl/python on PATH."""
    ck = tmp_path / "repo" / "checkpoints"
    ck.mkdir(parents=True)
    shutil.copy(ROOT / "checkpoints" / "download_ckpts.sh", ck / "download_ckpts.sh")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("curl", FAKE_CURL), ("fakepy", FAKE_PY)):
        (bin_ / name).write_text(text, encoding="utf-8")
        (bin_ / name).chmod(0o755)
    log = tmp_path / "log.txt"
    env = {
        **os.environ,
        "PATH": f"{bin_}:{os.environ['PATH']}",
        "PYTHON": str(bin_ / "fakepy"),
        "LOG": str(log),
    }

    def run(*args):
        log.write_text("", encoding="utf-8")
        r = subprocess.run(
            ["bash", str(ck / "download_ckpts.sh"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return r, log.read_text(encoding="utf-8").splitlines()

    return ck, run


def test_medsam2_alone_downloads_only_medsam2(tool):
    ck, run = tool
    r, log = run("--medsam2")
    assert r.returncode == 0, r.stderr
    downloads = [ln for ln in log if ln.startswith("http")]
    assert downloads == ["https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt"]
    assert (ck / "MedSAM2_latest.pt").is_file() and not (ck / "MedSAM2_latest.pt.part").exists()
    assert f"verify {ck / 'MedSAM2_latest.pt'} sam2 sam2.1_hiera_t" in log


def test_sam21_set_names_every_size_and_finished_files_are_not_downloaded_again(tool):
    ck, run = tool
    r, log = run("sam2.1")
    assert r.returncode == 0, r.stderr
    names = sorted(Path(u).name for u in log if u.startswith("http"))
    assert names == sorted(f"sam2.1_hiera_{s}.pt" for s in ("tiny", "small", "base_plus", "large"))
    assert f"verify {ck / 'sam2.1_hiera_base_plus.pt'} sam2 sam2.1_hiera_b+" in log
    before = (ck / "sam2.1_hiera_tiny.pt").read_bytes()
    r, log = run("sam2.1", "--medsam2")
    assert r.returncode == 0, r.stderr
    assert [u for u in log if u.startswith("http")] == [
        "https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt"
    ]
    assert "already here" in r.stdout and (ck / "sam2.1_hiera_tiny.pt").read_bytes() == before
    assert sum(ln.startswith("verify ") for ln in log) == 5  # the four kept files are verified again


def test_unknown_set_or_option_is_one_line(tool):
    _, run = tool
    for args, text in ((("sam3",), "unknown set 'sam3'"), (("--medsam3",), "unknown option '--medsam3'")):
        r, log = run(*args)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and text in r.stderr
        assert log == []
