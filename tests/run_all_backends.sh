#!/usr/bin/env bash
# Run the whole test suite once per Keras backend: tensorflow, jax, torch.
# Exits non-zero if any backend fails or collects no test. Extra arguments go
# to pytest (e.g. `-x -k router`).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
summary=""
for backend in ${KSM_BACKENDS:-tensorflow jax torch}; do
  echo "===================== KERAS_BACKEND=$backend ====================="
  t0=$(date +%s)
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@"
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
