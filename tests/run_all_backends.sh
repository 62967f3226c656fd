#!/usr/bin/env bash
# Run the whole test suite once per Keras backend: tensorflow, jax, torch.
# Exits non-zero if any backend fails or collects no test. Extra arguments go
# to pytest (e.g. `-x -k router`). Tests run in KSM_WORKERS parallel pytest
# processes (pytest-xdist; default 2, one per core: most tests compile or
# run single-threaded; 3 on JAX, whose leg also waits on subprocesses: its
# 8-device and two-process workers, the TensorFlow child of each export; on
# 2 cores 577 s and 752 s in two runs, 631-718 s in four runs with 2 workers);
# a test file stays on one worker so that its
# module-scoped fixtures are built once. KSM_WORKERS=0 runs in one process.
# Each backend's report ends with its 15 slowest tests (to keep the suite in
# CI's budget).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
summary=""
for backend in ${KSM_BACKENDS:-tensorflow jax torch}; do
  echo "===================== KERAS_BACKEND=$backend ====================="
  t0=$(date +%s)
  default_workers=2
  [ "$backend" = "jax" ] && default_workers=3
  workers=${KSM_WORKERS:-$default_workers}
  parallel=()
  [ "$workers" != "0" ] && parallel=(-n "$workers" --dist loadfile)
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --durations=15 ${parallel[@]+"${parallel[@]}"} "$@"
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 5 ]; then
    echo "KERAS_BACKEND=$backend: no test ran" >&2
    rc=1
  fi
  summary+="$backend: exit $rc in ${dt}s"$'\n'
  [ "$rc" -ne 0 ] && status=1
done
printf '%s' "$summary"
exit $status
