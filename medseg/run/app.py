"""What the entry points share: build model + data + task from the config, then fit or evaluate."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medseg.data.splits import check_same_data, dataset_fingerprint
from medseg.eval.evaluation import protocol_record
from medseg.family import build_configured, build_family
from medseg.run.context import prepare_data, setup_runtime
from medseg.schema import TrainerConfig
from medseg.train.contract import PreparesModel, RunSpec
from medseg.train.distributed import agree_on_start
from medseg.train.engine import Engine
from medseg.train.optim import build_optimizer, build_scheduler
from medseg.train.preemption import RunInterrupted
from medseg.train.run_folder import rollback_failed_start
from medseg.train.runtime import finish_distributed, resolve_batch_size
from medseg.train.task_settings import TaskSettings
from medseg.train.weights import describe

log = logging.getLogger(__name__)


def output_dir(cfg: DictConfig) -> Path:
    """The run folder: Hydra's runtime output dir (``hydra.run.dir`` / the multirun job folder)."""
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        out = OmegaConf.select(hc, "runtime.output_dir")
        if out:
            return Path(out)
        return Path(hc.run.dir)
    return Path(OmegaConf.select(cfg, "paths.output_dir", default="outputs/run"))


def build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    """The model of ``cfg.model`` through its family (:func:`medseg.family.build_configured`: loads and
    checks ``model.checkpoint`` before anything is written)."""
    model = build_configured(cfg.model)
    log.info("weights: %s", describe(model.weights_info))
    if not isinstance(model, torch.nn.Module):  # e.g. YOLO, trained by its own library
        return model
    from medseg.train.params import trainable_table

    table = trainable_table(model)
    log.info("parameters of %s (trainable / frozen per module):\n%s", cfg.model.name, table)
    return model.to(device)


def check_data(cfg: DictConfig, ctx) -> None:
    """Integrity check of every case (see :func:`medseg.data.verify.preflight`; run by :func:`run` before the
    splits are written)."""
    from medseg.data.verify import preflight

    preflight(cfg, ctx.dataset, is_main=ctx.dist.is_main)


def build_task(cfg: DictConfig, ctx, task_key: str):
    """The model family's task (``cfg.model.<task_key>``, e.g. ``task_2d``): it receives the run's
    :class:`TaskSettings` and its own options (bound in the model yaml), never the whole config."""
    mode = "3d" if task_key == "task_3d" else "2d"
    return instantiate(cfg.model[task_key])(ctx=ctx, settings=TaskSettings.from_cfg(cfg, mode))


def run_spec(cfg: DictConfig) -> RunSpec:
    """The :class:`~medseg.train.contract.RunSpec` of a composed training config: what the engine needs
    besides ``trainer`` and the task (it never receives ``cfg``)."""
    from medseg.train.loggers import build_loggers, loggable_config

    logger_cfg = cfg.logger
    return RunSpec(
        seed=int(cfg.seed),
        optimizer=functools.partial(build_optimizer, cfg.optim),
        scheduler=lambda optimizer, total: build_scheduler(cfg.scheduler, optimizer, total),
        loggers=lambda out: build_loggers(logger_cfg, out),
        hparams=loggable_config(cfg),
        record=OmegaConf.to_container(cfg, resolve=False),
        vis=bool(cfg.vis),
        test_after_training=bool(cfg.test_after_training),
        overwrite=bool(cfg.overwrite),
        model_name=str(cfg.model.name),
    )


def trainer_options(cfg: DictConfig) -> TrainerConfig:
    """``cfg.trainer`` as the typed :class:`~medseg.schema.TrainerConfig` object the engine takes."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainerConfig), cfg.trainer))


def prepare_model(cfg: DictConfig, task, model) -> int:
    """Set-up of a built model before the engine gets it: ``trainer.activation_checkpointing`` (training
    only) through the family's contract (:class:`medseg.family.ModelFamily`), then the task's own
    ``prepare_model`` (learned class prompts). Returns how many encoder blocks are checkpointed."""
    n = 0
    if cfg.trainer.activation_checkpointing and cfg.train:
        n = build_family(cfg.model).enable_activation_checkpointing(model)
        log.info("activation checkpointing: %d image-encoder blocks recomputed in the backward pass", n)
        if n == 0:
            log.warning("trainer.activation_checkpointing=true: model=%s has no blocks", cfg.model.name)
    if isinstance(task, PreparesModel):  # a task's own set-up (learned class prompts)
        task.prepare_model(model)
    return n


def run(cfg: DictConfig, *, mode: str, task_key: str) -> float | None:
    """Fit (``train=true``) or evaluate (``train=false``) the model named by ``cfg.model`` in ``mode``.

    Returns the best value of ``trainer.monitor`` (or ``optimized_metric``) for Hydra sweepers.
    """
    from medseg.run.config_check import validate_config
    from medseg.train.loggers import check_loggers
    from medseg.train.resume_policy import resume_preflight

    validate_config(cfg)  # also done by medseg.run.rundir's callback before Hydra writes the run folder
    out = output_dir(cfg)
    batch = resolve_batch_size(cfg, mode)
    if str(cfg.trainer.batch_size) != str(batch):
        log.info(
            "trainer.batch_size=auto -> %d (trainer.batch_table.%s, %s @ %s px)",
            batch,
            mode,
            cfg.model.get("variant", cfg.model.get("name")),
            cfg.model.get("image_size"),
        )
        cfg = OmegaConf.merge(
            cfg, {"trainer": {"batch_size": batch}}
        )  # a copy: the user's cfg is not written
    engine, started = None, False
    try:
        check_loggers(cfg.logger)  # a missing optional package: refused before the model is built
        resuming = resume_preflight(cfg, out, announce=True) if cfg.train else None
        device, dist_info = setup_runtime(cfg)
        model = build_model(cfg, device)
        ctx = prepare_data(cfg, out, mode=mode, device=device, dist_info=dist_info, preflight=True)
        data_record = {"name": str(cfg.dataset.get("name", "")), **dataset_fingerprint(ctx.dataset)}
        if resuming is not None:
            check_same_data(resuming[1].get("dataset"), data_record, resuming[0], cfg.dataset.root)
        task = build_task(cfg, ctx, task_key)
        prepare_model(cfg, task, model)  # activation checkpointing (the family), class prompts (the task)
        engine = Engine(
            trainer=trainer_options(cfg),
            run=run_spec(cfg),
            task=task,
            model=model,
            out_dir=out,
            device=device,
            dist_info=dist_info,
            extra_state={
                "model_cfg": OmegaConf.to_container(cfg.model, resolve=True),
                "splits": ctx.splits,
                "dataset": data_record,  # inference applies the splits only to these cases
                "weights": getattr(model, "weights_info", None),
                "eval_protocol": protocol_record(task),
                **({"resume_changes": resuming[2]} if resuming is not None else {}),
            },
        )
        if resuming is not None:
            engine.resume_checkpoint = resuming[1]
            resuming = None  # the engine holds it until it resumes
        started = True  # from here on a failure is this rank's own (no second agreement)
        agree_on_start(None)  # every rank set up: or all stop with the failing rank's one line
        if cfg.train:  # our loop, or a library's (YOLO: medseg.train.contract.ExternalTrainer)
            result = engine.fit()
        else:
            summary = engine.evaluate()
            result = summary.get(str(cfg.trainer.monitor))
    except RunInterrupted:  # stopped on a signal after writing checkpoint_last.pth: kept
        raise
    except (Exception, KeyboardInterrupt) as e:
        kept = engine is not None and (engine.steps_done or engine.rows_added or engine.external_started)
        if not kept:
            rollback_failed_start(out)  # nothing to keep: the folder as this start found it
        if not started and isinstance(e, Exception):
            agree_on_start(e)  # the other ranks wait there: they stop quietly, this rank prints
        raise
    metric = cfg.optimized_metric
    if metric and engine.history:
        vals = [r.get(metric) for r in engine.history if r.get(metric) is not None]
        result = max(vals) if vals else None
    finish_distributed()  # every rank is done before any of them closes its connections
    if dist_info.is_main:
        from medseg.report import report_or_warning

        report_or_warning(out, cfg=cfg)  # report.html: a failure is a WARNING, never a failed run
        print(f"outputs in {out}", flush=True)
    return result
