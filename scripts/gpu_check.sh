#!/usr/bin/env bash
# Issue 10's checks on a machine with a CUDA GPU, in one command (about 5-7 minutes):
#   OUT=/some/dir bash scripts/gpu_check.sh
# Needs python3 with torch for CUDA, numpy, scipy, pandas, matplotlib, scikit-learn, pyyaml, pillow,
# pytest (+ pytest-timeout, pytest-xdist where present); pydantic and its dependencies come from the
# wheels in gpu_wheels/ (no network needed). ablab is imported from src/ (no install).
# Steps (each runs whatever happened before; a summary comes last):
#   1 setup   versions, nvidia-smi, the wheels into a temporary folder on PYTHONPATH
#   2 tests   the gpu-marked tests (make gpu-tests), then the executor's start-method tests
#   3 bench   benchmarks/bench_gpu.py --write-results (ablab vs a hand-written loop; RESULTS.md), then
#             benchmarks/bench_replicas.py on cuda (packed replicas' GPU targets, issue 24)
#   4 study   the seed-001 CPU study on cuda (make gpu-study) and its report
#   5 suite   the whole fast test suite, with whatever time is left
# Writes into $OUT (at most 8 files): setup.log, tests.log, bench.log, study.log, suite.log,
# RESULTS.md, study_report.tar.gz, summary.txt.
# Knobs (environment): DEADLINE_S (default 400: later steps are cut to end by then), WORKERS
# (study worker processes, default 4), STUDY_SET (extra --set options for the study),
# SUITE=0 (skip step 5), STUDY_DEVICE=cpu with SKIP_CUDA_CHECK=1 (to try the script on a CPU).
set -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.." || exit 2
: "${OUT:?set OUT to a folder for the logs}"
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
PY=${PY:-python3}
WORKERS=${WORKERS:-4}
DEADLINE_S=${DEADLINE_S:-400}
STUDY_DEVICE=${STUDY_DEVICE:-cuda}
STUDY_SET=${STUDY_SET:-}
START=$SECONDS
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

left() { echo $((DEADLINE_S - (SECONDS - START))); }

# run_step NAME LOG CAP_S CMD...: run CMD with a time limit of min(CAP_S, time left), append to LOG
run_step() {
  local name=$1 log=$2 cap=$3
  shift 3
  local limit rc t0=$SECONDS
  limit=$(left)
  ((limit > cap)) && limit=$cap
  if ((limit < 20)); then
    echo "== $name: skipped, $(left) s left before the deadline" | tee -a "$log"
    printf '%-28s skipped (no time left)\n' "$name" >>"$SUMMARY"
    return
  fi
  echo "== $name (limit ${limit} s): $*" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local note=""
  ((rc == 124 || rc == 137)) && note=" (timed out)"
  echo "== $name: exit $rc$note after $((SECONDS - t0)) s" | tee -a "$log"
  printf '%-28s exit %3d%s  %4d s\n' "$name" "$rc" "$note" "$((SECONDS - t0))" >>"$SUMMARY"
}

# ---- 1 setup
SETUP="$OUT/setup.log"
{
  date -u
  nvidia-smi || echo "nvidia-smi: not available"
  "$PY" --version
  "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
  "$PY" -c "import numpy, scipy, pandas, matplotlib, sklearn, yaml, PIL, pytest; print('numpy', numpy.__version__, 'pandas', pandas.__version__, 'pytest', pytest.__version__)"
} >"$SETUP" 2>&1
DEPS=$(mktemp -d -t ablab-deps-XXXX)
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  if ! "$PY" -m pip install --no-index --find-links gpu_wheels --target "$DEPS" pydantic >>"$SETUP" 2>&1; then
    echo "pip install failed: unpacking the wheels instead" >>"$SETUP"
    for wheel in gpu_wheels/*.whl; do "$PY" -m zipfile -e "$wheel" "$DEPS" >>"$SETUP" 2>&1; done
  fi
fi
export PYTHONPATH="$PWD/src:$DEPS${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import pydantic, ablab.components; print('pydantic', pydantic.VERSION, '; ablab imports from', ablab.__file__)" >>"$SETUP" 2>&1
printf '%-28s exit %3d\n' "setup (ablab imports)" "$?" >>"$SUMMARY"
TIMEOUT_ARGS=""
"$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_ARGS="--timeout 120"
HAVE_MAKE=0
command -v make >/dev/null && HAVE_MAKE=1
echo "make: $HAVE_MAKE; pytest-timeout args: '${TIMEOUT_ARGS}'; deps in $DEPS" >>"$SETUP"
cat "$SETUP"

# ---- 2 tests: the gpu-marked ones (make gpu-tests), then the start-method tests (issue 10, item 2:
# on a GPU machine the first backward starts autograd's device threads, so these take the forkserver path)
TESTS="$OUT/tests.log"
if ((HAVE_MAKE)); then
  run_step "gpu-marked tests" "$TESTS" 150 make gpu-tests PY="$PY" STAMP= PYTEST_ARGS="$TIMEOUT_ARGS"
else
  run_step "gpu-marked tests" "$TESTS" 150 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider $TIMEOUT_ARGS
fi
run_step "start-method tests" "$TESTS" 90 "$PY" -m pytest tests/execute/test_local_executor.py -q -rs \
  -p no:cacheprovider $TIMEOUT_ARGS -k "forked_only or autograd_device_thread or trained_then"

# ---- 3 bench: ablab vs the hand-written loop; writes the GPU section of benchmarks/RESULTS.md
BENCH="$OUT/bench.log"
(cd benchmarks && run_step "bench_gpu --write-results" "$BENCH" 210 "$PY" bench_gpu.py --write-results)
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
# packed replicas on the GPU (issue 24: >= 10x for the MLP, >= 3x for resnet6 at batch 128)
(cd benchmarks && run_step "bench_replicas on cuda" "$BENCH" 150 "$PY" bench_replicas.py)

# ---- 4 study: seed 001's CPU study with device: cuda (every BN variant, BN_beta included)
STUDY="$OUT/study.log"
RESULTS_DIR=$(mktemp -d -t ablab-gpu-study-XXXX)
if [ "$STUDY_DEVICE" = cuda ] && ((HAVE_MAKE)); then
  run_step "seed-001 study on cuda" "$STUDY" 180 make gpu-study PY="$PY" STAMP= WORKERS="$WORKERS" \
    GPU_RESULTS="$RESULTS_DIR" GPU_STUDY_SET="$STUDY_SET"
else
  # shellcheck disable=SC2086  # STUDY_SET holds several --set options
  run_step "seed-001 study on $STUDY_DEVICE" "$STUDY" 180 "$PY" -m ablab run studies/bn_dissect/cpu.yaml \
    --set device="$STUDY_DEVICE" $STUDY_SET --workers "$WORKERS" --out "$RESULTS_DIR" --report
fi
timeout 60 "$PY" -m ablab status "$RESULTS_DIR" >>"$STUDY" 2>&1
"$PY" - "$RESULTS_DIR" >>"$STUDY" 2>&1 <<'EOF'
import sys
from ablab.store import Store
store = Store.open(sys.argv[1])
runs = store.runs()
print("runs per label and status:")
print(runs.groupby(["label", "status"]).size().to_string())
print("devices:", sorted(set(runs.device.dropna())))
for _, r in runs[runs.status == "failed"].head(3).iterrows():
    print(f"--- failed {r.label}:\n{str(r.error)[-1500:]}")
EOF
[ -d "$RESULTS_DIR/report" ] && tar -czf "$OUT/study_report.tar.gz" -C "$RESULTS_DIR" report

# ---- 5 suite: every test not marked slow, in parallel where pytest-xdist is present
SUITE_LOG="$OUT/suite.log"
if [ "${SUITE:-1}" != 0 ]; then
  XDIST=""
  "$PY" -c "import xdist" 2>/dev/null && XDIST="-n 12"
  # -v: a line per test, so a run cut by the deadline still says what passed and what failed
  run_step "fast suite (not slow)" "$SUITE_LOG" 600 "$PY" -m pytest -m "not slow" -v -rfE -p no:cacheprovider \
    $XDIST $TIMEOUT_ARGS
fi

# ---- summary
{
  echo
  echo "== key lines"
  grep -hE "^(FAILED|ERROR) |^[0-9]+ [a-z]+.* in [0-9.]+s" "$TESTS" "$SUITE_LOG" 2>/dev/null | head -40
  if [ -f "$SUITE_LOG" ]; then
    echo "suite, per-test lines: $(grep -c ' PASSED' "$SUITE_LOG") passed, $(grep -c ' FAILED' "$SUITE_LOG") failed"
    grep -h ' FAILED ' "$SUITE_LOG" | head -20
  fi
  grep -hE "ablab / hand-written|aug / |speed-up|MISS|PASS: " "$BENCH" 2>/dev/null
  grep -hE "^bn_dissect_cpu: |^devices:" "$STUDY" 2>/dev/null
  echo "total $((SECONDS - START)) s"
} >>"$SUMMARY"
echo
echo "== summary ($SUMMARY)"
cat "$SUMMARY"
rm -rf "$DEPS"
