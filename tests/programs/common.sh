# Sourced by the programs tests (end_to_end.sh, hf_model.sh, mpi.sh): starts a fresh work directory and
# defines check and run, counting failures in $failures. RUN_TIMEOUT (seconds), when set, bounds each run.
#   . common.sh WORK_DIR
rm -rf "$1" && mkdir -p "$1" && cd "$1" || exit 1
failures=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then echo "ok: $name"; else echo "FAILED: $name"; failures=$((failures + 1)); return 1; fi
}
run() {  # run EXPECTED_EXIT LOG COMMAND...: runs COMMAND with stdout in LOG.out and stderr in LOG.err
  local want=$1 log=$2; shift 2
  ${RUN_TIMEOUT:+timeout "$RUN_TIMEOUT"} "$@" >"$log.out" 2>"$log.err"
  local rc=$?
  check "$log exits $want (got $rc)" test "$rc" -eq "$want" || { tail -n 20 "$log.out" "$log.err"; }
}
