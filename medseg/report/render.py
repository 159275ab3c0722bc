"""``report.html``: one self-contained page per output folder (run, inference, comparison, sweep).

Everything is read from what the folder already holds (``run_summary.json``, ``.hydra/``, ``metrics.csv``,
``val_cases*.csv``, ``vis/``, ``<case>.npy``, ``comparison.csv``, ``sweep_summary.csv``); pictures go to
``report_files/`` beside the page, within ``max_mb``. The page has inline CSS/JS only: it opens from
``file://`` with no network request. :func:`report_or_warning` is what the entry points call: a report
never fails a run.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from pathlib import Path

from medseg.report import images as im
from medseg.report.pages import compare_page, inference_page, run_page, sweep_page
from medseg.report.read import FILES, _json, detect_kind, git_commit

log = logging.getLogger(__name__)
CONTEXT = "context.json"  # facts known only while the run is alive (overrides, dataset config, commit)
DEFAULT_MAX_MB = 20.0


# ---------------------------------------------------------------------------------------------- writing
def _context(folder: Path, cfg, extra: dict | None) -> dict:
    """Facts known while the run is alive, kept in ``report_files/context.json`` for later re-renders."""
    old = _json(folder / FILES / CONTEXT)
    if cfg is None:  # a re-render: the commit of the run when it was recorded, else today's code
        commit = old.get("git_commit") or f"{git_commit() or 'unknown'} (code when this report was written)"
        return {**old, "git_commit": commit, **(extra or {})}
    ctx = {
        "git_commit": git_commit(),
        "run_date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            ctx["overrides"] = list(hc.overrides.task)
            ctx["script"] = str(hc.job.name)
        if cfg.get("dataset") is not None:
            ctx["dataset_cfg"] = OmegaConf.to_container(cfg.dataset, resolve=True)
        if cfg.get("model") is not None and cfg.model.get("name"):  # inference: model= for a native file
            ctx["model"] = f"{cfg.model.name} ({cfg.model.get('image_size', '?')} px)"
    except Exception as e:  # noqa: BLE001  (facts are best effort)
        log.debug("report context: %s", e)
    return {**old, **ctx, **(extra or {})}


def write_report(
    folder: str | Path,
    *,
    cfg=None,
    dataset=None,
    kind: str | None = None,
    max_mb: float | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``folder/report.html`` (and ``folder/report_files/``); returns the page's path.

    ``cfg``: the run's config while it is alive (overrides, dataset, ``report.max_mb``); ``dataset``: the
    inference's dataset (else built again from the stored config); ``kind``: run | inference | compare |
    sweep (default: from what the folder holds). The page and its pictures are written beside the old ones
    and swapped in at the end.
    """
    import jinja2

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    if max_mb is None:
        from omegaconf import OmegaConf

        max_mb = float(
            OmegaConf.select(cfg, "report.max_mb", default=DEFAULT_MAX_MB)
            if cfg is not None
            else DEFAULT_MAX_MB
        )
    budget = im.Budget(max_mb)
    kind = kind or detect_kind(folder)
    context = _context(folder, cfg, extra)
    new = folder / f"{FILES}.new"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    try:
        budget.take(64 * 1024)  # room for the page itself
        if kind == "inference":
            page = inference_page(folder, new, budget, context, dataset)
        else:
            page = {"run": run_page, "compare": compare_page, "sweep": sweep_page}[kind](
                folder, new, budget, context
            )
        if budget.skipped:
            page["notes"].append(
                f"{budget.skipped} pictures left out to keep the report under {max_mb:g} MB (report.max_mb)"
            )
        (new / CONTEXT).write_text(json.dumps(context, indent=2, default=str), encoding="utf-8")
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        html = env.get_template("report.html.j2").render(
            kind=kind, folder=str(folder), max_mb=max_mb, **_defaults(page)
        )
        tmp = folder / "report.html.tmp"
        tmp.write_text(html, encoding="utf-8")
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    old = folder / FILES
    if old.exists():
        shutil.rmtree(old)
    new.rename(old)
    os.replace(tmp, folder / "report.html")
    return folder / "report.html"


def _defaults(page: dict) -> dict:
    for k, v in {"arms": None, "sweep": None, "legend": [], "cases_from": "", "table": None}.items():
        page.setdefault(k, v)
    return page


def report_or_warning(folder: str | Path, **kwargs) -> Path | None:
    """:func:`write_report`, or a WARNING when it fails: a report never fails a run nor loses its results."""
    try:
        path = write_report(folder, **kwargs)
    except Exception as e:  # noqa: BLE001
        log.warning("report.html not written in %s: %s: %s", folder, type(e).__name__, e)
        return None
    log.info("report: %s", path)
    return path
