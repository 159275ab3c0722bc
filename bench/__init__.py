"""Benchmarks (never timed tests). ``bench/run.py`` is the CLI of the main suite; ``harness`` (timing,
child processes), ``workloads`` (configs, inputs), ``steps`` (our and bare training steps), ``sections``
(one module per section) and ``report`` (docs/BENCHMARKS.md from bench/results.json) are its parts."""
