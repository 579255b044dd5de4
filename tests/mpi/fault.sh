#!/usr/bin/env bash
# A rank that dies or hangs mid-step stops the whole job with an error, no hang, and leaves the last checkpoint
# whole. usage: fault.sh kill|hang PROGRAM DIR EXPECT_REGEX LAUNCHER [LAUNCHER FLAGS...] (mpiexec, or tcp_run.sh)
set -u
mode=$1 program=$2 dir=$3 expect=$4
shift 4
rm -rf "$dir"
start=$(date +%s)
out=$(timeout 120 "$@" -np 2 "$program" "fault-$mode" "$dir" 2>&1)
rc=$?
elapsed=$(($(date +%s) - start))
echo "$out" | tail -n 25
echo "the launcher exited $rc after ${elapsed}s"
if [ "$rc" -eq 0 ]; then echo "FAILED: the job exited 0 although rank 1 ${mode}ed"; exit 1; fi
if [ "$rc" -eq 124 ]; then echo "FAILED: the job hung (killed after 120 s)"; exit 1; fi
if ! grep -Eq "$expect" <<<"$out"; then echo "FAILED: no error matching '$expect'"; exit 1; fi
# Steps 1-3 were checkpointed before rank 1 failed; a killed rank may take rank 0 down while it writes step 3's
# (the launcher ends the job), so that one or step 2's is left, whole. A hung rank: rank 0 wrote step 3's.
first=3
if [ "$mode" = kill ]; then first=2; fi
if ! "$program" check-checkpoint "$dir" "$first" 3; then echo "FAILED: the last checkpoint is not a whole one of step $first-3"; exit 1; fi
rm -rf "$dir"
echo "passed: the job stopped with the error and the last checkpoint intact"
