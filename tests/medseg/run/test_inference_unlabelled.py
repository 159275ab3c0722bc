"""``inference_3d.py split=all`` (or ``split=test``) over a dataset whose ``imagesTs/`` has no labels and no
``prompts_file=``: refused before anything is written, naming the unlabelled case and ``prompts_file=``
(issue 23, 3: it used to segment the labelled cases, write them, then stop on the unlabelled one, so the
folder needed ``overwrite=true`` for the next try)."""

from __future__ import annotations

from tests.fault_helpers import inference_cfg, meta_ckpt, one_line_exit


def test_unlabelled_case_without_prompts_file_is_refused_before_anything_is_written(tmp_path, nnunet, capsys):
    from func_3d.inference import run_inference

    unlabelled = sorted(p.name for p in (nnunet / "imagesTs").glob("*_0000.nii.gz"))
    assert unlabelled == ["case_004_0000.nii.gz"]  # the fixture's one test case (imagesTs, no labelsTs)
    preds = tmp_path / "preds"
    cfg = inference_cfg(tmp_path, nnunet, meta_ckpt(tmp_path), preds)  # split=all
    line = one_line_exit(lambda: run_inference(cfg), capsys)
    assert "case_004" in line and "prompts_file=" in line
    assert not preds.exists()  # no case written: the next try needs no overwrite=true
