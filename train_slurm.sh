#!/usr/bin/env bash
# sbatch train_slurm.sh <resnet|resnet50|unet|yolo|sam2_t|sam2_s|sam2_b+|sam2_l|sam2.1_t|...> [hydra overrides...]
#
# One 2D training job on a SLURM node, optionally inside a Singularity/Apptainer image:
#   CONTAINER=/path/sam2med.sif DATA=/data/Kvasir-SEG sbatch train_slurm.sh sam2.1_t experiment=kvasir_finetune
# Without CONTAINER it uses the repository's .venv (make venv). Extra arguments go to train_2d.py.
# For sweeps over many jobs prefer Hydra's launcher: python train_2d.py -m launcher=slurm ...
#SBATCH --job-name=sam2med
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: sbatch train_slurm.sh <resnet|resnet50|unet|yolo|sam2_t|sam2_s|sam2_b+|sam2_l|sam2.1_t|sam2.1_s|sam2.1_b+|sam2.1_l|medsam2> [overrides...]" >&2
  exit 2
fi
which="$1"; shift
case "$which" in
  resnet)   model=resnet_box_prompt ;;
  resnet50) model=resnet50_frozen_decoder ;;
  unet)     model=unet ;;
  yolo)     model=yolo_seg ;;
  medsam2)  model=medsam2 ;;
  sam2_t|sam2_s|sam2_b+|sam2_l|sam2.1_t|sam2.1_s|sam2.1_b+|sam2.1_l)
            model="${which%_*}_hiera_${which##*_}" ;;
  *) echo "error: unknown model '$which' (resnet, resnet50, unet, yolo, sam2_t ... sam2.1_l, medsam2)" >&2; exit 2 ;;
esac
repo="${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
cd "$repo"
args=("model=$model" "hydra.run.dir=outputs/slurm/${SLURM_JOB_ID:-local}_${which}")
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
echo "[$(date)] $which -> model=$model on $(hostname) ${CUDA_VISIBLE_DEVICES:+GPU $CUDA_VISIBLE_DEVICES}"
exec $runner $py train_2d.py "${args[@]}" "$@"
