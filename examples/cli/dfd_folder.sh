#!/usr/bin/env bash
# 1-shot DFD (offline lite profile) on a folder of good images, with the stock anomalib CLI:
# train -> test -> export OpenVINO -> run the OpenVINO inferencer on one image and save the heat-map.
#
#   bash examples/cli/dfd_folder.sh [GOOD_IMAGES_DIR] [OUTPUT_DIR] [extra anomalib train arguments...]
#
# e.g. a quick smoke run: bash examples/cli/dfd_folder.sh "" run --model.epochs 2 --model.samples_per_shot 8
#
# Without GOOD_IMAGES_DIR a generated demo part is used. Thresholds come from synthetic anomalies
# (val_split_mode=synthetic), so only good images are needed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
good_arg=${1:-}
out=${2:-dfd_folder_run}
shift $(( $# < 2 ? $# : 2 ))
mkdir -p "$out"
if [ -n "$good_arg" ]; then
  good=$(cd "$good_arg" && pwd)
else
  python -m anomalib_fewshot.data.demo "$out/data" >/dev/null
  good=$(cd "$out/data/plate/train/good" && pwd)
fi
config=$(python -c "from anomalib_fewshot.config import model_config_path; print(model_config_path('dfd_lite'))")

anomalib train --config "$config" --model.k_shot 1 \
  --data Folder --data.name part --data.root "$good" --data.normal_dir . \
  --data.test_split_mode synthetic --data.val_split_mode synthetic --data.num_workers 0 \
  --default_root_dir "$out/results" "$@"

ckpt=$(find "$out/results" -name model.ckpt -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
anomalib export --model Dfd --export_type openvino --ckpt_path "$ckpt" \
  --export_root "$out/export" --onnx_kwargs '{"opset_version": 18}'

image=$(ls "$good" | head -1)
python "$here/../edge/run_openvino.py" "$out/export/weights/openvino/model.xml" "$good/$image" \
  --heatmap "$out/heatmap.png"
