"""The type, default and allowed values of every run option: one dataclass per config node.

Hydra composes each entry point's config on top of these (they are stored in Hydra's ConfigStore by
:func:`register_schemas`, and the yaml files start from them: ``conf/train_2d.yaml`` lists
``train_schema`` first, ``conf/trainer/default.yaml`` lists ``schema``). So:

- an option's default is written once, here (the yaml files hold presets: ``trainer=cpu`` says only
  what differs); ``python train_2d.py --cfg job`` prints them all;
- a wrong type (``trainer.max_epochs=abc``) or an unknown key (``trainer.max_epoch=3``) fails while Hydra
  composes, and so does an added key nothing reads (``+optimm=sgd``, ``+trainer.max_epoch=3``: refused by
  :func:`medseg.run.config_check.check_added_keys` right after composition, before the run starts);
- ranges and choices (``>= 1``, ``max | min``) are the fields' :class:`medseg.options.Rule`, checked by
  :func:`medseg.options.check_options` before anything is built.

Groups that name a class to build (``dataset``, ``model``, ``loss``, ``logger``) stay free-form: their
constructor checks its own arguments. The prompt's schema is :class:`medseg.data.prompts.PromptConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medseg.data.prompts import PromptConfig
from medseg.options import opt

__all__ = [
    "DDPConfig",
    "EvalPromptConfig",
    "Func2DConfig",
    "Func3DConfig",
    "Inference2DConfig",
    "Inference3DConfig",
    "TrainConfig",
    "TrainerConfig",
    "VerifyDatasetConfig",
    "register_schemas",
]

AUTO_BOOL = (True, False, "auto")


@dataclass
class DDPConfig:
    """DistributedDataParallel, used when several processes run (torchrun, srun, submitit)."""

    find_unused_parameters: Any = opt(
        "auto", choices=AUTO_BOOL
    )  # auto: one graph walk on the first batch decides
    bucket_cap_mb: float = opt(25.0, gt=0)


@dataclass
class TrainerConfig:
    """``trainer.*``: how the engine (:class:`medseg.train.engine.Engine`) fits and validates."""

    device: str = "auto"  # auto = cuda, then mps, then cpu; or cpu / cuda / cuda:1 / mps
    deterministic: bool = opt(False)  # torch.use_deterministic_algorithms + cudnn deterministic
    max_epochs: int = opt(10, ge=1)
    max_steps: int | None = opt(
        None, kind="int", ge=1
    )  # stop after this many optimizer steps (null: epochs decide)
    batch_size: Any = opt(
        4, kind="int", ge=1, choices=("auto",)
    )  # images (2D) or clips (3D) per step per process
    batch_fallback: int = opt(
        4, ge=1
    )  # batch_size=auto for models without a Hiera variant (ResNet, U-Net, YOLO)
    batch_table: dict[str, dict[str, int]] | None = None  # batch_size=auto: {2d|3d: {"<size>@<px>": batch}}
    num_workers: int = opt(2, ge=0)
    pin_memory: Any = opt("auto", choices=AUTO_BOOL)  # auto: true on CUDA
    limit_train_batches: int | None = opt(
        None, kind="int", ge=1
    )  # batches per epoch, for quick runs and tests
    limit_val_batches: int | None = opt(
        None, kind="int", ge=1
    )  # cases per validation; null = the whole split
    val_freq: int = opt(1, ge=1)  # validate every N epochs
    val_before_training: bool = opt(False)  # also validate the initial weights (row epoch 0 of metrics.csv)
    accumulate_grad_batches: int = opt(1, ge=1)
    gradient_clip_val: float | None = opt(1.0, gt=0, null=True)  # max grad norm; null to disable
    amp: bool = opt(True)  # bf16 autocast, used on CUDA only
    monitor: str = "val/dice"  # metric that picks checkpoint_best.pth
    monitor_mode: str = opt("max", choices=("max", "min"))
    resume: str | None = None  # checkpoint_last.pth to continue from; auto = this run folder's, if any
    save_every_n_steps: int | None = opt(
        None, kind="int", ge=1
    )  # also write checkpoint_last.pth inside an epoch
    ddp: DDPConfig = field(default_factory=DDPConfig)
    stop_after_epochs: int | None = opt(None, kind="int", ge=1)  # end this job after N epochs (SLURM slots)
    log_every_n_steps: int = opt(10, ge=1)
    activation_checkpointing: bool = opt(
        False
    )  # recompute encoder blocks (and 3D memory attention) in backward
    progress_bar: bool = opt(True)


@dataclass
class EvalPromptConfig:
    """The evaluation protocol (:mod:`medseg.eval.evaluation`): prompts never depend on ``seed``."""

    jitter_px: float = opt(0.0, ge=0)  # 0 = tight boxes from the reference; > 0 only for robustness studies
    jitter_frac: float = opt(0.0, ge=0)
    seed: int = opt(0, ge=0)  # fixes extra clicks / jitter per case; independent of the run's seed


@dataclass
class Func2DConfig:
    """SAM2 on images (:mod:`func_2d`)."""

    multimask_output: bool = opt(True)  # 3 candidate masks + IoU head on ambiguous prompts
    memory_bank: bool = opt(False)  # Medical-SAM2-style memory of previous images attended to
    bank_size: int = opt(16, ge=1)  # memory entries kept (most dissimilar kept when full, by quality)
    bank_min_iou: float = opt(0.5, ge=0, le=1)  # an image enters the bank only above this predicted IoU
    threshold: float = opt(0.0)  # logit threshold for binary masks


@dataclass
class Func3DConfig:
    """SAM2 on volumes (:mod:`func_3d`): training clips, validation and inference propagation."""

    video_length: int = opt(8, ge=1)  # consecutive slices per training clip
    max_objects: int = opt(8, ge=1)  # objects (organs) per clip, chosen at random when more are present
    batch_clips: bool = opt(True)  # run the trainer.batch_size clips of a step as one batched propagation
    encoder_chunk: int = opt(32, ge=1)  # frames per image-encoder call in training
    reverse_prob: float = opt(0.0, ge=0, le=1)  # probability of running a clip backwards
    val_prompt: str = opt(
        "key_slice", choices=("key_slice", "freq")
    )  # key_slice: box on each organ's key slice
    offload: bool = opt(True)  # keep per-slice features on CPU during whole-volume validation
    threshold: float = opt(0.0)
    largest_component: bool = opt(False)  # keep only the largest connected component per organ (MedSAM2)
    exact_parity: bool = opt(False)  # track organs one by one as Meta's predictor does: bit for bit, slower


@dataclass
class DataCacheConfig:
    """CT/MRI volumes decoded once, then memory-mapped (:mod:`medseg.data.cache`)."""

    dir: str | None = "${oc.env:SAM2_MEDICAL_CACHE,.cache/volumes}"  # null: no cache
    dtype: str = opt("float32", choices=("float32", "float16"))  # float16 halves disk and I/O


# ------------------------------------------------------------------ optimizers and schedulers
@dataclass
class ParamGroupConfig:
    """One ``optim.param_groups`` entry: parameters whose name matches ``pattern`` (fnmatch)."""

    pattern: str = "*"
    lr: float | None = opt(None, gt=0)
    weight_decay: float | None = opt(None, ge=0)


@dataclass
class OptimConfig:
    """What every optimizer has; ``_target_`` is built with ``_partial_`` over the parameter groups."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = opt(1e-4, gt=0)
    weight_decay: float = opt(0.0, ge=0)
    param_groups: list[ParamGroupConfig] = field(default_factory=list)


@dataclass
class AdamWConfig(OptimConfig):
    weight_decay: float = opt(0.01, ge=0)
    betas: list[float] = opt(factory=lambda: [0.9, 0.999], kind="pair", ge=0, lt=1)


@dataclass
class AdamConfig(OptimConfig):
    _target_: str = "torch.optim.Adam"
    betas: list[float] = opt(factory=lambda: [0.9, 0.999], kind="pair", ge=0, lt=1)
    eps: float = opt(1e-8, gt=0)


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = opt(1e-2, gt=0)
    momentum: float = opt(0.9, ge=0, lt=1)
    weight_decay: float = opt(1e-4, ge=0)


@dataclass
class CosineConfig:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr``, stepped once per optimizer step."""

    _target_: str = "medseg.train.optim.warmup_cosine"
    _partial_: bool = True
    warmup_steps: int = opt(0, ge=0)
    min_lr_ratio: float = opt(0.01, ge=0, le=1)


@dataclass
class ConstantConfig:
    """Linear warm-up then a constant lr."""

    _target_: str = "medseg.train.optim.warmup_constant"
    _partial_: bool = True
    warmup_steps: int = opt(0, ge=0)


@dataclass
class StepConfig:
    """Multiply the lr by ``gamma`` every ``step_size`` optimizer steps."""

    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = opt(1000, ge=1)
    gamma: float = opt(0.5, gt=0)


# ------------------------------------------------------------------ root configs of the entry points
@dataclass
class RunConfig:
    """What every entry point has. Free-form groups (their constructors check them) are ``Any``."""

    task_name: str = "run"
    seed: int = opt(42, ge=0)
    overwrite: bool = opt(False)  # true: allow a new run / new outputs where an earlier one is
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    model: Any = None
    paths: Any = None


@dataclass
class TrainConfig(RunConfig):
    """Root of ``train_2d.py`` and ``train_3d.py``."""

    dataset: Any = None
    loss: Any = None
    optim: Any = None  # one of the optimizer schemas above (conf/optim/*.yaml name theirs)
    scheduler: Any = None
    logger: Any = None
    eval_prompt: EvalPromptConfig = field(default_factory=EvalPromptConfig)
    train: bool = opt(True)  # false: evaluate model.checkpoint (zero-shot or fine-tuned), no training
    eval_split: str = opt(
        "val", choices=("val", "test", "train")
    )  # split scored by validation and train=false
    test_after_training: bool = opt(False)  # score the test split once after training (best weights)
    vis: bool = opt(False)  # PNG grids under vis/ and in TensorBoard
    vis_max_cases: int = opt(8, ge=1)
    verify_data: bool = opt(True)  # fast integrity check of every case before step 1
    sam2_checkpoint: str | None = (
        "auto"  # weights of the SAM2 arms of multi-model experiments: auto | PATH | null
    )
    yolo_cfg: str = "yolo11l-seg.yaml"  # architecture of the YOLO arm of multi-model experiments
    compare_runs: bool = opt(False)  # after a multirun, also run tools/compare.py over the jobs
    optimized_metric: str | None = None  # returned to Hydra sweepers (optuna) from the run's validations
    data_cache: DataCacheConfig = field(default_factory=DataCacheConfig)
    func_2d: Func2DConfig = field(default_factory=Func2DConfig)
    func_3d: Func3DConfig = field(default_factory=Func3DConfig)


@dataclass
class Inference3DConfig(RunConfig):
    """Root of ``inference_3d.py``."""

    task_name: str = "inference_3d"
    dataset: Any = None
    eval_prompt: EvalPromptConfig = field(default_factory=EvalPromptConfig)
    checkpoint: str = "???"  # our checkpoint_*.pth of any model, or a native file (needs model=)
    split: str = opt("test", choices=("train", "val", "test", "all"))
    output_dir: str = "${hydra:runtime.output_dir}/predictions"
    save_vis: bool = opt(False)
    vis_slices: int = opt(5, ge=1)  # slices per case drawn in vis/
    prompts_file: str | None = None  # JSON with boxes/clicks per organ and slice (volumes without labels)
    verify_data: bool = opt(True)  # check every case before anything is written
    splits_file: str | None = None  # splits.json of a training run (default: the split in the checkpoint)
    func_3d: Func3DConfig = field(default_factory=Func3DConfig)


@dataclass
class Inference2DConfig(RunConfig):
    """Root of ``inference_2d.py``."""

    task_name: str = "inference_2d"
    checkpoint: str = "???"  # our checkpoint_*.pth of any model, or a native file (needs model=)
    input_dir: str = "???"  # folder of images (PNG/JPEG/TIFF/NIfTI/npy)
    mask_dir: str | None = None  # folder of masks matched by stem: metrics.csv (and prompts from them)
    prompts_file: str | None = None  # JSON {stem: [{class, box | points + labels}]} or CSV
    classes: dict[int, str] = field(default_factory=lambda: {1: "foreground"})  # label id -> name
    intensity: Any = field(default_factory=lambda: {"modality": "rgb"})  # medseg/data/transforms.py
    threshold: float = opt(0.0)  # logit threshold of a pixel's best object
    output_dir: str = "${hydra:runtime.output_dir}/predictions"
    save_vis: bool = opt(False)


@dataclass
class VerifyDatasetConfig:
    """Root of ``tools/verify_dataset.py``."""

    dataset: Any = None
    fast: bool = opt(False)  # headers only (plus one full case)


_STORED = False


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore under the names the yaml files' defaults lists use
    (idempotent; done when :mod:`medseg.run.cli` is imported, i.e. by every entry point)."""
    global _STORED
    if _STORED:
        return
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="inference_3d_schema", node=Inference3DConfig)
    cs.store(name="inference_2d_schema", node=Inference2DConfig)
    cs.store(name="verify_dataset_schema", node=VerifyDatasetConfig)
    # group schemas live in one group of their own, "schema" (a yaml takes one with /schema/<name>@_here_)
    cs.store(group="schema", name="trainer", node=TrainerConfig)
    cs.store(group="schema", name="prompt", node=PromptConfig)
    for name, node in (("adamw", AdamWConfig), ("adam", AdamConfig), ("sgd", SGDConfig)):
        cs.store(group="schema", name=f"optim_{name}", node=node)
    for name, node in (("cosine", CosineConfig), ("constant", ConstantConfig), ("step", StepConfig)):
        cs.store(group="schema", name=f"scheduler_{name}", node=node)
    _STORED = True
