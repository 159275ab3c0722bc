"""bench/ package: the page re-renders from results.json alone, the CLI rejects unknown names, and the
steps it times still build from the real configs (bench 2d/mfu/per_size failed once a task needed
``label_names`` and no test ran the bench code)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import ROOT


def test_render_reproduces_the_committed_page():
    """docs/BENCHMARKS.md is generated: rendering bench/results.json gives it byte for byte."""
    from bench.report import render

    results = json.loads((ROOT / "bench" / "results.json").read_text(encoding="utf-8"))
    assert render(results) == (ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8")


def test_render_only_writes_the_page_without_measuring(tmp_path):
    from bench.run import main

    doc = tmp_path / "page.md"
    (tmp_path / "r.json").write_text(
        json.dumps({"device": {"type": "cpu"}, "commands": ["cd x"]}), encoding="utf-8"
    )
    assert main(["--render-only", "--results", str(tmp_path / "r.json"), "--doc", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks") and "cd x" in text and "not measured" in text


def test_unknown_section_and_child_kind_are_refused(capsys):
    from bench.run import parse_args, run_child

    with pytest.raises(SystemExit):
        parse_args(["--skip", "2d,inferense"])
    assert "inferense" in capsys.readouterr().err
    assert parse_args(["--skip", "2d,mfu"]).skip == {"2d", "mfu"}
    with pytest.raises(ValueError, match="nope"):
        run_child({"kind": "nope", "threads": 1, "device": "cpu"})


def test_timed_tasks_build_from_the_real_configs(tmp_path):
    """The tasks bench/steps.py times, from the composed train_2d / train_3d configs."""
    from bench.steps import image_task, video_task
    from bench.workloads import base_overrides, compose

    cfg2 = compose("train_2d", base_overrides(64, "cpu"), tmp_path / "2d")
    assert image_task(cfg2).parts.classes == [1]
    cfg3 = compose("train_3d", base_overrides(64, "cpu"), tmp_path / "3d")
    task = video_task(cfg3, batch_clips=False, checkpointing=True)
    assert (task.batch_clips, task.checkpointing) == (False, True)


def test_activation_count_patches_every_checkpoint_caller():
    """bench/activations.py counts the inputs that checkpointed regions keep by wrapping
    ``torch.utils.checkpoint.checkpoint`` where the 3D propagation and the image encoder call it; it
    used to name ``func_3d.propagate`` and broke when the propagation moved to another module."""
    import torch

    from bench.activations import checkpoint_callers, saved_bytes

    callers = checkpoint_callers()
    assert {m.__name__.split(".")[0] for m in callers} == {"func_3d", "sam2_train"}
    model = torch.nn.Linear(4, 4)
    x = torch.randn(8, 4)
    assert saved_bytes(lambda: model(x).sum(), model) == x.numel() * 4  # the input kept for the weight grad
    assert all(m.checkpoint is torch.utils.checkpoint.checkpoint for m in callers)  # restored


# ---------------------------------------------------------------- issue 21: device handling, memory, OOM
def test_label_slice_indexes_ids_on_the_logits_device(device):
    """bench/run.py --device cuda crashed in the inference section: a CPU id table indexed with the
    predictor's CUDA argmax. The meta device stands in for CUDA on a CPU machine (same 'not on the
    expected device'); the ``gpu`` lane runs it on CUDA too."""
    from bench.sections.inference import label_slice

    logits = torch.tensor([[[2.0, -1.0], [-3.0, 0.5]], [[1.0, 3.0], [-1.0, 0.2]]])  # 2 organs, 2x2
    got = label_slice(logits.to(device), [4, 9])
    assert got.device == logits.to(device).device and got.cpu().tolist() == [[4, 9], [0, 4]]
    on_meta = label_slice(torch.empty(13, 8, 8, device="meta"), list(range(1, 14)))
    assert on_meta.device.type == "meta" and on_meta.shape == (8, 8)


def _bench(tmp_path, **kw):
    from bench.harness import Bench

    return Bench(
        device=torch.device("cpu"),
        threads=1,
        results={},
        results_path=tmp_path / "r.json",
        doc_path=tmp_path / "page.md",
        render=lambda r: "",
        **kw,
    )


def test_peak_memory_is_measured_under_the_timing_autocast(tmp_path, monkeypatch):
    """The clips section took peak CUDA memory in fp32 while it timed under bf16 autocast (4 clips @1024
    ran out of memory only in the fp32 peak pass). CUDA stands in: its memory calls faked, autocast on
    the CPU clock."""
    from bench.harness import Bench
    from bench.sections import clips

    monkeypatch.setattr(Bench, "gpu", property(lambda self: True))
    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 3 * 2**20)
    bench = _bench(tmp_path, clock="cpu", amp=True)
    seen = []
    fns = {"batched": lambda: seen.append(torch.is_autocast_enabled("cpu"))}
    assert clips._peak_memory_mb(bench, fns) == {"batched": 3.0}
    bench.timed(fns["batched"])
    assert seen == [True, True]  # the peak pass in the precision of the timed pass


def test_an_out_of_memory_row_is_recorded_and_the_next_rows_go_on(tmp_path, monkeypatch):
    """One OOM used to end the section (and the run); now it is the row's result, "OOM at N GB"."""
    from bench.report import render
    from bench.sections import clips, inference, mfu

    def fake_clips(bench, S, B, warmup, repeats):
        if S == 1024:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return {"image_size": S, "clips": B, "speedup_vs_bare": 6.5, "peak_memory_mb": {"batched": 2048.0}}

    monkeypatch.setattr(clips, "plan", lambda bench: [(1024, 4), (512, 8)])
    monkeypatch.setattr(clips, "bench_clips_3d", fake_clips)
    bench = _bench(tmp_path)
    clips.run(bench)
    rows = bench.results["train_clips_3d_all"]
    assert rows[0]["clips"] == 4 and rows[0]["oom"].startswith("OOM at ") and rows[0]["oom"].endswith(" GB")
    assert rows[1]["speedup_vs_bare"] == 6.5 and bench.results["train_clips_3d"] is rows[1]

    def fake_mfu(bench, v, S, w, r, peak, n):
        if n == 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return {"variant": v, "image_size": S, "images": n, "mfu": 0.1}

    monkeypatch.setattr(mfu, "batches", lambda bench: (2, 8, 32))
    monkeypatch.setattr(mfu, "matmul_peak", lambda bench: 1.0)
    monkeypatch.setattr(mfu, "bench_mfu_2d", fake_mfu)
    mfu.run(bench)
    got = [(x["variant"], x["images"], "oom" in x) for x in bench.results["mfu_2d"]]
    assert got == [(v, n, n == 8) for v in mfu.MFU_VARIANTS for n in (2, 8)]  # the sweep stops at the OOM

    monkeypatch.setattr(inference, "cases", lambda bench: [(512, 64, 13)])
    monkeypatch.setattr(
        inference, "bench_inference", lambda *a, **k: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError())
    )
    inference.run(bench)
    assert "oom" in bench.results["inference_vs_meta"][0]
    r = bench.results
    ooms = {k: [x for x in r[k] if "oom" in x] for k in ("train_clips_3d_all", "mfu_2d", "inference_vs_meta")}
    page = render({**ooms, "device": {"type": "cuda"}})  # OOM rows render, in the GPU table too
    assert "| 3D clips, 4 clips × 8 frames @1024 | runs; peak memory recorded | OOM at " in page


def test_gpu_rows_are_defined_and_empty_without_a_gpu_run():
    from bench.report import gpu_rows

    rows = gpu_rows({"device": {"type": "cpu"}, "inference_vs_meta": [{"image_size": 512, "speedup": 99.0}]})
    assert len(rows) == 7 and all(c == "not measured: no GPU lent" for _, _, c in rows)


@pytest.mark.gpu
def test_peak_memory_on_cuda_is_taken_in_bf16(tmp_path):
    """On a real CUDA device: a bf16 matmul's peak is about half of the fp32 one (the peak pass runs
    under the timing's autocast)."""
    from bench.harness import Bench

    def bench(amp):
        return Bench(device=torch.device("cuda"), threads=1, clock="cuda", amp=amp)

    x = torch.randn(8192, 64, device="cuda")  # 2 MB in, a 8192² product out: 256 MB in fp32, 128 in bf16
    fp32 = bench(False).peak_memory_mb(lambda: x @ x.T)
    bf16 = bench(True).peak_memory_mb(lambda: x @ x.T)
    assert bf16 < 0.6 * fp32, (bf16, fp32)
