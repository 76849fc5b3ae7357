#!/usr/bin/env bash
# One short GPU check, for a machine with a CUDA GPU: training in fp32, bf16 and compiled, for torch.nn and for
# Keras (on JAX and PyTorch; on TensorFlow too where tensorflow[and-cuda] is installed), measured by perf at
# Flickr8k's shapes, then every plugin's runner contract (train, decode, save/load) on the device.
# Writes OUT (default results/gpu_check): gpu_check.log, perf_all.md (each perf table as it finishes) and
# perf_json.tgz. Each step has its own time limit, so that a slow one costs only itself.
#   bash benchmarks/perf/gpu_check.sh            # STEPS=10 WARMUP=3 PY=python3 OUT=... to change
set -u
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
OUT=${OUT:-results/gpu_check}; mkdir -p "$OUT"
S=${STEPS:-10}; W=${WARMUP:-3}; PY=${PY:-python3}
keras=keras_merge@jax,keras_merge@torch,keras_show_attend_tell@jax,keras_show_attend_tell@torch,keras_transformer@jax
$PY -c "import tensorflow" 2>/dev/null && keras=$keras,keras_merge@tensorflow,keras_show_attend_tell@tensorflow
log=$OUT/gpu_check.log
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc
  KERAS_BACKEND=jax $PY -c "import torch, jax, keras; print('torch', torch.__version__, torch.cuda.is_available(),
'jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
  git log -1 --format='commit %h %s' 2>/dev/null
} > "$log" 2>&1
step() {  # name, time limit in s, perf arguments...
  local name=$1 limit=$2; shift 2
  echo "=== $name: perf $* ($(date -u +%T))" >> "$log"
  timeout "$limit" $PY -m benchmarks perf --shapes flickr8k --steps "$S" --warmup "$W" --out "/tmp/perf_$name" "$@" \
    >> "$log" 2>&1
  echo "=== $name: exit $? ($(date -u +%T))" >> "$log"
  # perf rewrites its tables after every plugin: a step cut short keeps what it measured
  [ -f "/tmp/perf_$name/perf.md" ] && { echo "## $name: perf $*"; cat "/tmp/perf_$name/perf.md"; } >> "$OUT/perf_all.md"
  tar czf "$OUT/perf_json.tgz" -C /tmp $(cd /tmp && ls -d perf_*/ 2>/dev/null) 2>/dev/null
}
step fp32 "${T1:-250}" --plugins torch_merge,torch_show_attend_tell,torch_transformer,$keras
step bf16 "${T2:-120}" --precision bf16 --plugins torch_merge,keras_merge@jax,torch_show_attend_tell,keras_show_attend_tell@jax,torch_transformer
step compile "${T3:-100}" --compile --plugins torch_merge,torch_show_attend_tell,torch_transformer
echo "=== pytest: the runner contract on this device ($(date -u +%T))" >> "$log"
KERAS_BACKEND=jax timeout "${T4:-60}" $PY -m pytest -q -x -p no:cacheprovider tests/test_every_plugin.py \
  -k "torch_concat or torch_show or torch_transformer or keras_merge or keras_show" >> "$log" 2>&1
echo "=== pytest: exit $? ($(date -u +%T))" >> "$log"
