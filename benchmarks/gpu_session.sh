#!/usr/bin/env bash
# One time-boxed GPU session for issues 19 and 20, run from the repository root:
#   (a) He et al.'s ResNet-20 on the JPEG CIFAR-10, data on the device (timing.json),
#   (b) ResNet-50 224x224 batch 256 bf16 train step: jaxcnn next to PyTorch (AMP,
#       channels_last, torch.compile), MFU, compile time, peak memory,
#   (c) max pool (views vs reduce_window) and each convolution choice in the train step,
#   (d) a smoke train step of every registry model at its native input.
# Each stage runs under `timeout`, capped so that the later ones keep their share of
# GPU_SESSION_BUDGET_S (default 540 s); results land flat in $OUT (8 files at most).
#
#   bash benchmarks/gpu_session.sh                 # on the GPU machine ($OUT set there)
#   GPU_SESSION_TINY=1 OUT=/tmp/out bash benchmarks/gpu_session.sh   # CPU check, tiny sizes
#
# Wheels for packages the GPU image lacks travel in .whl/ (WHEEL_DIR), the CIFAR tarball
# in .gpu_data/ (CIFAR_DATA); CIFAR_STEPS shortens the ResNet-20 run (default: the
# paper's 64000 steps, decays at 50 % and 75 %); GPU_SESSION_STAGES picks stages (default
# abcde, e.g. bcd for a rerun without the CIFAR run); stages run in the order a e b c d.
set -u
START=$(date +%s)
OUT=${OUT:-/tmp/gpu_session_out}
mkdir -p "$OUT"
TINY=${GPU_SESSION_TINY:-0}
STAGES=${GPU_SESSION_STAGES:-abcde}
BUDGET=${GPU_SESSION_BUDGET_S:-585}
PY=${PYTHON:-python3}
WHEEL_DIR=${WHEEL_DIR:-.whl}
LOG=$OUT/session.log
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false

say() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }
# limit CAP_S RESERVE_S: the seconds a stage gets now (what stage() below will use).
limit() { local l=$(( $(remaining) - $2 )); (( l > $1 )) && l=$1; echo $l; }

# stage LETTER NAME CAP_S RESERVE_S CMD...: run CMD (if LETTER is in $STAGES) with at most CAP_S seconds, and never into the
# RESERVE_S seconds that the later stages keep; output to $OUT/NAME.log (appended).
stage() {
  local letter=$1 name=$2 cap=$3 reserve=$4 limit
  shift 4
  [[ $STAGES == *$letter* ]] || return 0
  limit=$(limit "$cap" "$reserve")
  if (( limit < 15 )); then
    say "SKIP $name: ${limit}s left for it"
    return 0
  fi
  say "START $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  say "END $name rc=$rc ($(( $(date +%s) - t0 ))s)$( (( rc == 124 || rc == 137 )) && echo ' TIMED OUT')"
}

if ls "$WHEEL_DIR"/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEEL_DIR"/*.whl >> "$LOG" 2>&1 || say "wheel install FAILED"
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
say "session start: tiny=$TINY budget=${BUDGET}s python=$($PY -V 2>&1)"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv >> "$LOG" 2>&1 || say "no nvidia-smi"
$PY -c "import jax, flax, optax, torch, ml_collections; print('jax', jax.__version__, \
jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', \
torch.__version__)" >> "$LOG" 2>&1 || say "imports FAILED"

if [[ $TINY == 1 ]]; then
  # Tiny sizes for a CPU check of every stage: a generated 10-class tarball, a few steps.
  CIFAR_DATA=${CIFAR_DATA:-/tmp/gpu_session_tiny.tar.gz}
  $PY - "$CIFAR_DATA" <<'EOF'
import io, sys, tarfile
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
with tarfile.open(sys.argv[1], "w:gz") as tar:
    for split, count in (("train", 16), ("test", 4)):
        for c in range(10):
            for i in range(count):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
                    buf, "JPEG", quality=75)
                info = tarfile.TarInfo(f"{split}/class{c}/{i:04d}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
EOF
  CIFAR_ARGS="steps=${CIFAR_STEPS:-4},batch_size=16,eval_batch_size=20"
  B_ARGS=(--model=resnet20_cifar --batch=8 --rounds=1 --block_seconds=0.2 --notorch_compile)
  C_ARGS=(--model=lenet5 --batch=8 --rounds=1 --block_seconds=0.2 --notorch --notorch_compile)
  C_VARIANTS=conv_impl=patches,max_pool=views
  D_ARGS=(--models=lenet5,resnet20_cifar --batch=4 --small_batch=16 --threads=2)
  E_ARGS="train_steps=4,batch_size=16,eval_batch_size=20"
  CAPS=(900 400 400 300 600)  # the CPU is slow: generous caps, BUDGET should be raised too
else
  CIFAR_DATA=${CIFAR_DATA:-.gpu_data/cifar10_jpeg.tar.gz}
  [[ -f $CIFAR_DATA ]] || CIFAR_DATA=../shared/data/cifar10_jpeg.tar.gz
  # 48k steps (decays at 24k / 36k) fit the stage's cap at up to ~3.5 ms a step; the
  # paper's 64k: CIFAR_STEPS=64000.
  CIFAR_ARGS="steps=${CIFAR_STEPS:-48000}"
  E_ARGS="train_epochs=20"
  B_ARGS=(--model=resnet50 --batch=256 --input=224,224,3 --num_classes=1000 --rounds=3
          --block_seconds=2.0 --parallel_start)
  C_ARGS=(--model=resnet50 --batch=64 --input=224,224,3 --num_classes=1000 --rounds=3
          --block_seconds=0.5 --notorch --notorch_compile)
  C_VARIANTS=max_pool=views,conv_impl=xla_cpu,conv_impl=patches,conv_impl=im2col_grad,conv_impl=taps
  D_ARGS=(--threads=6 --batch=16 --small_batch=64)
  CAPS=(190 120 55 90 110)
fi

# (a) ResNet-20 / CIFAR-10: the later stages keep 365 s.
WORK=/tmp/gpu_session_r20
[[ $STAGES == *a* ]] && rm -rf "$WORK"
stage a cifar "${CAPS[0]}" 365 $PY benchmarks/train_timed.py \
  --config="experiments/configs/resnet20_cifar10.py:$CIFAR_ARGS,data=$CIFAR_DATA" \
  --workdir="$WORK"
if [[ $STAGES == *a* ]]; then
  cp "$WORK/timing.json" "$OUT/cifar_timing.json" 2>/dev/null || say "no timing.json"
  cp "$WORK/metrics.jsonl" "$OUT/cifar_metrics.jsonl" 2>/dev/null
fi

# (e) issue 18: the five-conv AlexNet for 32x32 trained on the CIFAR-10 folders, then its
# top-9 patches per unit of layers 1-5 (experiments/inspect_layers.py); keeps 255 s.
INSPECT_CMD="mkdir -p /tmp/cifar10_folders && tar xzf $CIFAR_DATA -C /tmp/cifar10_folders &&
  $PY -m experiments.train --workdir=/tmp/gpu_inspect_run \
    --config=\"experiments/configs/alexnet_cifar10.py:dataset='folder:/tmp/cifar10_folders',$E_ARGS\" &&
  $PY -m experiments.inspect_layers --workdir=/tmp/gpu_inspect_run --output=/tmp/gpu_inspect &&
  cp /tmp/gpu_inspect_run/final_metrics.json /tmp/gpu_inspect_run/metrics.jsonl /tmp/gpu_inspect/"
[[ $STAGES == *e* ]] && rm -rf /tmp/gpu_inspect_run /tmp/gpu_inspect
stage e inspect "${CAPS[4]}" 255 bash -c "$INSPECT_CMD"
[[ -d /tmp/gpu_inspect ]] && tar czf "$OUT/inspect.tar.gz" -C /tmp gpu_inspect

# (b) ResNet-50 jaxcnn vs PyTorch, bf16: the later stages keep 100 s; a framework not
# compiled 40 s before the limit is dropped so that the others are still timed.
stage b throughput "${CAPS[1]}" 100 $PY benchmarks/throughput.py "${B_ARGS[@]}" \
  --dtype=bfloat16 --noinference --json="$OUT/throughput.jsonl" \
  --ready_timeout_s=$(( $(limit "${CAPS[1]}" 100) - 40 ))

# (c) pool and convolution choices in the jaxcnn train step (same log and json): keeps 45 s.
stage c throughput "${CAPS[2]}" 45 $PY benchmarks/throughput.py "${C_ARGS[@]}" \
  --dtype=bfloat16 --noinference --parallel_start --jax_variants="$C_VARIANTS" \
  --json="$OUT/throughput.jsonl" --ready_timeout_s=$(( $(limit "${CAPS[2]}" 45) - 25 ))

# (d) smoke step of every registry model; it stops starting models 30 s before its limit.
SMOKE_LIMIT=$(limit "${CAPS[3]}" 5)
stage d smoke "${CAPS[3]}" 5 $PY benchmarks/smoke.py "${D_ARGS[@]}" --dtype=bfloat16 \
  --budget_s=$(( SMOKE_LIMIT > 45 ? SMOKE_LIMIT - 30 : 15 )) --json="$OUT/smoke.jsonl"

grep -h "^timing\|MFU\|default/variant\|^smoke:\|final eval\|class purity" "$OUT"/*.log \
  2>/dev/null | cut -c1-400
# At most 8 files come back: the stage logs travel in one tarball.
(cd "$OUT" && tar czf logs.tar.gz --remove-files $(ls *.log | grep -v '^session.log$'))
say "session end; files: $(ls "$OUT" | tr '\n' ' ')"
