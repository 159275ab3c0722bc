#!/usr/bin/env bash
# Download Meta's SAM2 (072824) and SAM2.1 (092824) checkpoints into this folder, resuming partial
# downloads, then verify each file by loading it strictly into its variant and print its sha256.
# Usage: checkpoints/download_ckpts.sh [sam2|sam2.1|all] [--medsam2]
#        checkpoints/download_ckpts.sh sam|medsam|resnet50
#   sam: Meta's SAM (v1) sam_vit_{b_01ec64,l_0b3195,h_4b8939}.pth; medsam: MedSAM's medsam_vit_b.pth
#   (bowang-lab's Zenodo record 10689643); resnet50: torchvision's ImageNet resnet50-0676ba61.pth
#   (the frozen-encoder fallback). `all` means SAM2 + SAM2.1.
# No checksum is stored in this repository: the printed sha256 is computed from the file you have.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"; [ -x "$py" ] || py=python3
which_set="${1:-all}"; medsam2=0
for a in "$@"; do [ "$a" = "--medsam2" ] && medsam2=1; done
base="https://dl.fbaipublicfiles.com/segment_anything_2"
declare -a items=()
if [ "$which_set" = "sam2" ] || [ "$which_set" = "all" ]; then
  items+=("072824/sam2_hiera_tiny.pt sam2_hiera_t" "072824/sam2_hiera_small.pt sam2_hiera_s"
          "072824/sam2_hiera_base_plus.pt sam2_hiera_b+" "072824/sam2_hiera_large.pt sam2_hiera_l")
fi
if [ "$which_set" = "sam2.1" ] || [ "$which_set" = "all" ]; then
  items+=("092824/sam2.1_hiera_tiny.pt sam2.1_hiera_t" "092824/sam2.1_hiera_small.pt sam2.1_hiera_s"
          "092824/sam2.1_hiera_base_plus.pt sam2.1_hiera_b+" "092824/sam2.1_hiera_large.pt sam2.1_hiera_l")
fi
if command -v curl >/dev/null; then
  fetch() { curl -fL --retry 3 -C - -o "$2" "$1"; }
  probe() { curl -fsI --max-time 15 "$1" >/dev/null; }
elif command -v wget >/dev/null; then
  fetch() { wget -c -O "$2" "$1"; }
  probe() { wget -q --spider --timeout=15 "$1"; }
else
  echo "error: neither curl nor wget is installed" >&2; exit 1
fi
case "$which_set" in
  sam2|sam2.1|all|--medsam2) ;;
  sam|medsam|resnet50)
    # name URL verify-kind (variant)
    declare -a extra=()
    sam_base="https://dl.fbaipublicfiles.com/segment_anything"
    [ "$which_set" = sam ] && extra=("sam_vit_b_01ec64.pth $sam_base/sam_vit_b_01ec64.pth vit_b"
      "sam_vit_l_0b3195.pth $sam_base/sam_vit_l_0b3195.pth vit_l" "sam_vit_h_4b8939.pth $sam_base/sam_vit_h_4b8939.pth vit_h")
    [ "$which_set" = medsam ] && extra=("medsam_vit_b.pth https://zenodo.org/records/10689643/files/medsam_vit_b.pth?download=1 vit_b")
    [ "$which_set" = resnet50 ] && extra=("resnet50-0676ba61.pth https://download.pytorch.org/models/resnet50-0676ba61.pth resnet50")
    url0="$(echo "${extra[0]}" | cut -d' ' -f2)"
    if ! probe "$url0"; then
      echo "error: cannot reach $url0 (no network?). Download the file elsewhere and copy it into $here" >&2
      exit 2
    fi
    for it in "${extra[@]}"; do
      read -r name url kind <<<"$it"
      echo "== $name: $url"
      fetch "$url" "$here/$name.part" && mv "$here/$name.part" "$here/$name"
      PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$py" - "$here/$name" "$kind" <<'PY'
import hashlib, sys
path, kind = sys.argv[1], sys.argv[2]
if kind == "resnet50":
    import torchvision
    from traditional_models.resnet50_frozen_decoder import load_resnet_weights
    load_resnet_weights(torchvision.models.resnet50(weights=None), path)  # strict; one-line error
else:
    from sam_family.build import build_sam_model
    build_sam_model(kind, image_size=1024, checkpoint=path)  # strict, weights_only; one-line error
h = hashlib.sha256(open(path, "rb").read()).hexdigest()
print(f"OK {kind}: {path}  sha256={h}")
PY
    done
    exit 0 ;;
  *) echo "error: unknown set '$which_set' (sam2, sam2.1, all, sam, medsam, resnet50)" >&2; exit 2 ;;
esac
first="${items[0]%% *}"
if ! probe "$base/$first"; then
  echo "error: cannot reach $base (no network?). Download the .pt files elsewhere and copy them into $here" >&2
  exit 2
fi
for it in "${items[@]}"; do
  rel="${it%% *}"; variant="${it##* }"; file="$here/$(basename "$rel")"
  echo "== $variant: $base/$rel"
  fetch "$base/$rel" "$file.part" && mv "$file.part" "$file"
  "$py" - "$file" "$variant" <<'PY'
import hashlib, sys
from sam2_train import build_sam2_model
path, variant = sys.argv[1], sys.argv[2]
build_sam2_model(variant, image_size=1024, checkpoint=path)   # strict load; raises with one line
h = hashlib.sha256(open(path, "rb").read()).hexdigest()
print(f"OK {variant}: {path}  sha256={h}")
PY
done
if [ "$medsam2" = 1 ]; then
  url="https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt"
  echo "== medsam2: $url"
  fetch "$url" "$here/MedSAM2_latest.pt.part" && mv "$here/MedSAM2_latest.pt.part" "$here/MedSAM2_latest.pt"
  "$py" - "$here/MedSAM2_latest.pt" <<'PY'
import hashlib, sys
from sam2_train import build_sam2_model
build_sam2_model("sam2.1_hiera_t", image_size=512, checkpoint=sys.argv[1])
print("OK medsam2:", sys.argv[1], "sha256=" + hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
PY
fi
