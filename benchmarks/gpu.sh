#!/usr/bin/env bash
# The accelerator benchmarks in one run (run from the repository root):
#
#   1. step_overhead: C-SAM vs SGD vs optax SAM steps, full-width ResNet-18,
#      batch 128, float32 and bfloat16 (passes/step ratios, saved as JSON);
#   2. train_throughput: every method's stages, full-width ResNet-18, batch
#      128, float32 and bfloat16: images/s, ratio to dense, and the projected
#      time of one full CIFAR-10 epoch (50,000 images) per method, measured
#      and from the step_overhead ratios of the same dtype;
#   3. certify_throughput: cc_cert (identity, semantic, corruptions) vs the
#      plain forward on ResNet-18 width 0.25 (the corruption target: >= 0.5x)
#      and width 1.0.
#
#   benchmarks/gpu.sh                 # full sizes, on a GPU/TPU
#   QUICK=1 benchmarks/gpu.sh         # tiny sizes: checks the script on CPU
#
# Environment: OUT (output folder, default ./workdir/gpu_bench; each step's
# log and JSON land there), PYTHON (default python), QUICK (1 = tiny sizes),
# BUCKET (corruption_sampler bucket size, default 64 on an accelerator,
# 16 in QUICK mode). Prints everything; the logs are kept in $OUT.
set -euo pipefail

OUT="${OUT:-workdir/gpu_bench}"
PYTHON="${PYTHON:-python}"
QUICK="${QUICK:-0}"
mkdir -p "$OUT"

if [[ "$QUICK" == "1" ]]; then
  WIDTH=0.125 BATCH=8 REPEATS=2 STEPS=1 CERT_WIDTHS="0.125"
  CERT_ARGS=(--images 1 --num_samples 8 --num_bounds 2 --batch_size 16
    --rounds 2)
  BUCKET="${BUCKET:-16}"
else
  WIDTH=1.0 BATCH=128 REPEATS=10 STEPS=5 CERT_WIDTHS="0.25 1.0"
  CERT_ARGS=(--images 8 --num_samples 100 --num_bounds 10 --batch_size 2000
    --rounds 7)
  BUCKET="${BUCKET:-64}"
fi

run() {  # run NAME CMD...: prints and logs the command's output
  local name="$1"
  shift
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$OUT/$name.log"
}

"$PYTHON" -c "import jax; print('devices:', jax.devices())"
for dtype in float32 bfloat16; do
  run "step_overhead_$dtype" "$PYTHON" -m benchmarks.step_overhead \
    --width="$WIDTH" --batch="$BATCH" --dtype="$dtype" \
    --repeats="$REPEATS" --json_out="$OUT/step_overhead_$dtype.json"
done
for dtype in float32 bfloat16; do
  run "train_throughput_$dtype" "$PYTHON" -m benchmarks.train_throughput \
    --width="$WIDTH" --batch="$BATCH" --dtype="$dtype" \
    --steps="$STEPS" --repeats="$REPEATS" \
    --overhead_json="$OUT/step_overhead_$dtype.json" \
    --json_out="$OUT/train_throughput_$dtype.json"
done
for width in $CERT_WIDTHS; do
  run "certify_throughput_w$width" "$PYTHON" -m benchmarks.certify_throughput \
    --model resnet18 --width "$width" --bucket_size "$BUCKET" \
    "${CERT_ARGS[@]}"
done

echo "=== summary"
for dtype in float32 bfloat16; do
  grep -h "ratio" "$OUT/step_overhead_$dtype.log" | sed "s/^/[$dtype] /"
  sed -n '/^method /,$p' "$OUT/train_throughput_$dtype.log" |
    sed "s/^/[$dtype] /"
done
for width in $CERT_WIDTHS; do
  grep -h "^ratio" "$OUT/certify_throughput_w$width.log" |
    sed "s/^/[certify width $width] /"
done
