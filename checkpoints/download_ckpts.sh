#!/usr/bin/env bash
# Download Meta's SAM2 (072824) and SAM2.1 (092824) checkpoints into this folder, resuming partial
# downloads, then verify each file by loading it strictly into its variant and print its sha256.
# Usage: checkpoints/download_ckpts.sh [sam2|sam2.1|all] [--medsam2]
#        checkpoints/download_ckpts.sh --medsam2            (MedSAM2 only)
#        checkpoints/download_ckpts.sh sam|medsam|resnet50
#   sam: Meta's SAM (v1) sam_vit_{b_01ec64,l_0b3195,h_4b8939}.pth; medsam: MedSAM's medsam_vit_b.pth
#   (bowang-lab's Zenodo record 10689643); resnet50: torchvision's ImageNet resnet50-0676ba61.pth
#   (the frozen-encoder fallback). `all` means SAM2 + SAM2.1.
# A file already here is not downloaded again (it is verified again); an interrupted download resumes
# from its `.part` file. No checksum is stored in this repository: the printed sha256 is computed from
# the file you have.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"; [ -x "$py" ] || py=python3
which_set=all; medsam2=0; sets=0
for a in "$@"; do
  case "$a" in
    --medsam2) medsam2=1 ;;
    -*) echo "error: unknown option '$a' (--medsam2)" >&2; exit 2 ;;
    *) which_set="$a"; sets=$((sets + 1)) ;;
  esac
done
[ "$sets" -le 1 ] || { echo "error: give one set (sam2, sam2.1, all, sam, medsam, resnet50), got: $*" >&2; exit 2; }
# `--medsam2` alone downloads MedSAM2 only; with a set, that set too
[ "$medsam2" = 1 ] && [ "$sets" = 0 ] && which_set=none
meta="https://dl.fbaipublicfiles.com/segment_anything_2"
sam_base="https://dl.fbaipublicfiles.com/segment_anything"
# one entry per file: "<file name> <url> <verify kind> <variant>"
declare -a items=()
add_sam2() {  # $1 = release folder, $2 = variant prefix
  local size
  for size in tiny:t small:s base_plus:b+ large:l; do
    items+=("${2}_hiera_${size%%:*}.pt $meta/$1/${2}_hiera_${size%%:*}.pt sam2 ${2}_hiera_${size##*:}")
  done
}
case "$which_set" in
  sam2) add_sam2 072824 sam2 ;;
  sam2.1) add_sam2 092824 sam2.1 ;;
  all) add_sam2 072824 sam2; add_sam2 092824 sam2.1 ;;
  sam) items+=("sam_vit_b_01ec64.pth $sam_base/sam_vit_b_01ec64.pth sam vit_b"
               "sam_vit_l_0b3195.pth $sam_base/sam_vit_l_0b3195.pth sam vit_l"
               "sam_vit_h_4b8939.pth $sam_base/sam_vit_h_4b8939.pth sam vit_h") ;;
  medsam) items+=("medsam_vit_b.pth https://zenodo.org/records/10689643/files/medsam_vit_b.pth?download=1 sam vit_b") ;;
  resnet50) items+=("resnet50-0676ba61.pth https://download.pytorch.org/models/resnet50-0676ba61.pth resnet50 resnet50") ;;
  none) ;;
  *) echo "error: unknown set '$which_set' (sam2, sam2.1, all, sam, medsam, resnet50)" >&2; exit 2 ;;
esac
[ "$medsam2" = 1 ] && items+=("MedSAM2_latest.pt https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt sam2 sam2.1_hiera_t")

if command -v curl >/dev/null; then
  fetch() { curl -fL --retry 3 -C - -o "$2" "$1"; }
  probe() { curl -fsI --max-time 15 "$1" >/dev/null; }
elif command -v wget >/dev/null; then
  fetch() { wget -c -O "$2" "$1"; }
  probe() { wget -q --spider --timeout=15 "$1"; }
else
  echo "error: neither curl nor wget is installed" >&2; exit 1
fi

verify() {  # $1 file, $2 kind, $3 variant: strict load (one-line error), then the sha256
  PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$py" - "$1" "$2" "$3" <<'PY'
import hashlib, sys
path, kind, variant = sys.argv[1:4]
if kind == "resnet50":
    import torchvision
    from traditional_models.resnet50_frozen_decoder import load_resnet_weights
    load_resnet_weights(torchvision.models.resnet50(weights=None), path)
elif kind == "sam":
    from sam_family.build import build_sam_model
    build_sam_model(variant, image_size=1024, checkpoint=path)
else:
    from sam2_train import build_sam2_model
    build_sam2_model(variant, image_size=512 if "MedSAM2" in path else 1024, checkpoint=path)
h = hashlib.sha256(open(path, "rb").read()).hexdigest()
print(f"OK {variant}: {path}  sha256={h}")
PY
}

todo=0
for it in "${items[@]}"; do
  read -r name _ _ _ <<<"$it"; [ -s "$here/$name" ] || todo=$((todo + 1))
done
if [ "$todo" -gt 0 ]; then
  for it in "${items[@]}"; do
    read -r name url _ _ <<<"$it"
    [ -s "$here/$name" ] && continue
    if ! probe "$url"; then
      echo "error: cannot reach $url (no network?). Download the file elsewhere and copy it into $here" >&2
      exit 2
    fi
    break
  done
fi
for it in "${items[@]}"; do
  read -r name url kind variant <<<"$it"
  if [ -s "$here/$name" ]; then
    echo "== $name: already here (not downloaded again)"
  else
    echo "== $name: $url"
    fetch "$url" "$here/$name.part"
    mv "$here/$name.part" "$here/$name"
  fi
  verify "$here/$name" "$kind" "$variant"
done
