#!/usr/bin/env bash
# Every CUDA path of the engine on one lent GPU, in stages of under 10 minutes each.
#
#   .ci/gpu-check.sh STAGE DIR
#
# writes everything under DIR (on the lent machine: "$OUT", which comes back): STAGE.log and
# what the stage makes (gpu-figures.jsonl, stats.json, PNGs). Stages, in order (estimates,
# not measurements; a stage whose checkpoint is gone rebuilds it):
#
#   install  pip-installs the carried wheels (.whl, from .ci/gpu-wheels.sh) and prints the
#            versions; every other stage does this first                          (~1 min)
#   build    builds the synthetic checkpoints into $SPOT_CACHE_DIR: the quarter-width
#            FLUX.1-dev (2.3 GB) and the full one (34 GB)                         (~3 min)
#   paths    tests/test_gpu.py but the app: resident, model and group placement, the
#            LLM.int8 move-off check, a real OOM and the next call, seed determinism;
#            and the engine's own GPU test on the tiny model                        (~5 min)
#   cap24    the full synthetic FLUX.1-dev at 1024x1024, 4 steps, under
#            --max-gpu-memory 24 (plan: BF16 group offload, int8 / NF4 model offload),
#            then its plan and memory checked from stats.json                      (~6 min)
#   app      app.py served on the GPU (quarter model), one round through gradio_client (~3 min)
#
# Environment: PYTHON (default python3), SPOT_CACHE_DIR (default /tmp/spot-models).
# On the lent machine, from this repository's root, each stage is one call carrying .whl:
#   run(command=".ci/gpu-check.sh build \"$OUT\"", carry=[".whl"], timeout_s=600)
# and the same with paths, cap24 and app, one call after the other (the machine keeps the
# installed wheels and built checkpoints only while it stays warm).
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=${1:-}
DIR=${2:-}
if [ -z "$STAGE" ] || [ -z "$DIR" ]; then
  echo "usage: $0 install|build|paths|cap24|app DIR" >&2
  exit 2
fi
PYTHON=${PYTHON:-python3}
export SPOT_CACHE_DIR=${SPOT_CACHE_DIR:-/tmp/spot-models}
export SPOT_GPU_CHECK_OUT=$DIR PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$DIR" "$SPOT_CACHE_DIR"
exec > >(tee -a "$DIR/$STAGE.log") 2>&1

install() {
  if [ -d .whl ] && ! [ -f /tmp/site/.spot-installed ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    touch /tmp/site/.spot-installed
  fi
  if [ -d /tmp/site ]; then
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  "$PYTHON" - <<'PY'
import importlib.metadata as m
import torch

names = ("torch", "diffusers", "transformers", "bitsandbytes", "accelerate", "gradio",
         "sqlite-utils")
print({n: m.version(n) for n in names})
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
}

build() {
  for model in synthetic-flux-dev-quarter synthetic-flux-dev; do
    local started=$SECONDS
    "$PYTHON" -m core.checkpoints.synthetic --model "$model"
    echo "$model ready in $((SECONDS - started)) s"
  done
  du -sh "$SPOT_CACHE_DIR"/*
}

paths() {
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu.py -k "not app" \
    "tests/test_engine.py::test_gpu_trio_is_measured_with_cuda_peaks"
}

cap24() {
  "$PYTHON" -m core.engine --plan --model synthetic-flux-dev --max-gpu-memory 24
  "$PYTHON" -m core.engine --model synthetic-flux-dev --max-gpu-memory 24 --steps 4 \
    --width 1024 --height 1024 --prompt "a red fox sitting in fresh snow at sunrise" \
    --out "$DIR/cap24"
  "$PYTHON" - "$DIR/cap24/stats.json" <<'PY'
import json
import sys

stats = json.load(open(sys.argv[1]))
modes = {name: v["mode"] for name, v in stats["plan"]["variants"].items()}
print("plan", modes)
assert modes == {"bf16": "group", "int8": "model", "nf4": "model"}, modes
for name, figures in stats["variants"].items():
    print(name, {k: v for k, v in figures.items() if k.endswith(("_bytes", "seconds"))})
    assert figures["peak_reserved_bytes"] <= 24e9, (name, figures["peak_reserved_bytes"])
print("cap24: every variant ran under 24 GB")
PY
}

app() {
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu.py -k app
}

install
case "$STAGE" in
  install) ;;
  build) build ;;
  paths) paths ;;
  cap24) cap24 ;;
  app) app ;;
  *) echo "unknown stage $STAGE: install|build|paths|cap24|app" >&2; exit 2 ;;
esac
echo "stage $STAGE done"
