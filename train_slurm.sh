#!/usr/bin/env bash
# sbatch train_slurm.sh [--gpus N --nodes M] <resnet|resnet50|unet|yolo|sam2_t|...|sam2.1_l|medsam2> [hydra overrides...]
#
# One training job on SLURM, one process per GPU started by srun (DistributedDataParallel over
# N x M processes; rank/world/master are read from SLURM's variables), optionally inside a
# Singularity/Apptainer image:
#   CONTAINER=/path/sam2med.sif DATA=/data/Kvasir-SEG sbatch train_slurm.sh sam2.1_t experiment=kvasir_finetune
#   bash train_slurm.sh --gpus 8 --nodes 2 sam2.1_t experiment=btcv_organs   # submits itself with 2x8 GPUs
# (`sbatch --nodes=2 --ntasks-per-node=8 --gres=gpu:8 train_slurm.sh --gpus 8 --nodes 2 ...` does the same.)
# Without CONTAINER it uses the repository's .venv (make venv). Extra arguments go to $ENTRY (train_2d.py;
# ENTRY=train_3d.py for volumes). Pre-emption: SLURM sends USR1 120 s before the end; the run writes
# checkpoint_last.pth, requeues the job (scontrol requeue) and the requeued job resumes from it
# (trainer.resume=auto, same run folder outputs/slurm/<job id>_<model>).
# For sweeps over many jobs prefer Hydra's launcher: python train_2d.py -m launcher=slurm ...
#SBATCH --job-name=sam2med
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=USR1@120
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
gpus=1; nodes=1; gpus_given=""; nodes_given=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus)  [ $# -ge 2 ] || { echo "error: --gpus needs a number" >&2; exit 2; }; gpus="$2"; gpus_given=1; shift 2 ;;
    --nodes) [ $# -ge 2 ] || { echo "error: --nodes needs a number" >&2; exit 2; }; nodes="$2"; nodes_given=1; shift 2 ;;
    *) break ;;
  esac
done
for v in "$gpus" "$nodes"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "error: --gpus and --nodes take a positive integer, got '$v'" >&2; exit 2; }
done
if [ $# -lt 1 ]; then
  echo "usage: sbatch train_slurm.sh [--gpus N --nodes M] <resnet|resnet50|unet|yolo|sam2_t|sam2_s|sam2_b+|sam2_l|sam2.1_t|sam2.1_s|sam2.1_b+|sam2.1_l|medsam2|sam_vit_b|sam_vit_l|sam_vit_h|medsam_vit_b|frozen_encoder_decoder> [overrides...]" >&2
  exit 2
fi
which="$1"; shift
case "$which" in
  resnet)   model=resnet_box_prompt ;;
  resnet50) model=resnet50_frozen_decoder ;;
  unet)     model=unet ;;
  yolo)     model=yolo_seg ;;
  medsam2)  model=medsam2 ;;
  sam_vit_b|sam_vit_l|sam_vit_h|medsam_vit_b|frozen_encoder_decoder) model=$which ;;
  sam2_t|sam2_s|sam2_b+|sam2_l|sam2.1_t|sam2.1_s|sam2.1_b+|sam2.1_l)
            model="${which%_*}_hiera_${which##*_}" ;;
  *) echo "error: unknown model '$which' (resnet, resnet50, unet, yolo, sam2_t ... sam2.1_l, medsam2, sam_vit_b|l|h, medsam_vit_b, frozen_encoder_decoder)" >&2; exit 2 ;;
esac
if [ -z "${SLURM_JOB_ID:-}" ]; then  # run by hand: submit this script with the allocation asked for
  command -v sbatch >/dev/null || { echo "error: sbatch not found: run this on a SLURM login node" >&2; exit 1; }
  exec sbatch --nodes="$nodes" --ntasks-per-node="$gpus" --gres="gpu:$gpus" "${BASH_SOURCE[0]}" --gpus "$gpus" --nodes "$nodes" "$which" "$@"
fi
have_nodes="${SLURM_JOB_NUM_NODES:-1}"; have_tasks="${SLURM_NTASKS_PER_NODE:-1}"; have_tasks="${have_tasks%%(*}"
if { [ -n "$gpus_given" ] && [ "$have_tasks" != "$gpus" ]; } || { [ -n "$nodes_given" ] && [ "$have_nodes" != "$nodes" ]; }; then
  echo "error: --gpus $gpus --nodes $nodes but this allocation has $have_nodes node(s) x $have_tasks task(s): submit with 'bash train_slurm.sh --gpus $gpus --nodes $nodes ...' or 'sbatch --nodes=$nodes --ntasks-per-node=$gpus --gres=gpu:$gpus train_slurm.sh ...'" >&2
  exit 2
fi
repo="${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
cd "$repo"
args=("model=$model" "hydra.run.dir=outputs/slurm/${SLURM_JOB_ID:-local}_${which}" "trainer.resume=auto")
[ -n "${DATA:-}" ] && args+=("dataset.root=$DATA")
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$repo/.cache/ultralytics}"
runner=""
if [ -n "${CONTAINER:-}" ]; then
  if command -v apptainer >/dev/null; then runner="apptainer exec --nv";
  elif command -v singularity >/dev/null; then runner="singularity exec --nv";
  else echo "error: CONTAINER is set but neither apptainer nor singularity is installed" >&2; exit 1; fi
  binds="--bind $repo"
  [ -n "${DATA:-}" ] && binds="$binds --bind $DATA"
  runner="$runner $binds $CONTAINER"
  py=python
else
  py="$repo/.venv/bin/python"
  [ -x "$py" ] || { echo "error: $py not found: run 'make venv' or set CONTAINER=image.sif" >&2; exit 1; }
fi
# rank, local rank and world size come from SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS (medseg/train/distributed.py)
# the first host: sed reads the whole list (head would close the pipe early, scontrol would die of
# SIGPIPE and, under pipefail, "|| echo" would append a second line to the address)
if [ -z "${MASTER_ADDR:-}" ]; then
  MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | sed -n 1p || true)"
fi
export MASTER_ADDR="${MASTER_ADDR:-localhost}"
export MASTER_PORT="${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}"
entry="${ENTRY:-train_2d.py}"
echo "[$(date)] $which -> model=$model, $have_nodes node(s) x $have_tasks process(es), master $MASTER_ADDR:$MASTER_PORT"
exec srun --kill-on-bad-exit=1 $runner $py "$entry" "${args[@]}" "$@"
