#!/usr/bin/env bash
# A rank that dies or hangs mid-step stops the whole job with an error, no hang, and leaves the last checkpoint
# whole. usage: fault.sh kill|hang PROGRAM DIR EXPECT_REGEX MPIEXEC [MPIEXEC FLAGS...]
set -u
mode=$1 program=$2 dir=$3 expect=$4
shift 4
rm -rf "$dir"
start=$(date +%s)
out=$(timeout 120 "$@" -np 2 "$program" "fault-$mode" "$dir" 2>&1)
rc=$?
elapsed=$(($(date +%s) - start))
echo "$out" | tail -n 25
echo "mpiexec exited $rc after ${elapsed}s"
if [ "$rc" -eq 0 ]; then echo "FAILED: the job exited 0 although rank 1 ${mode}ed"; exit 1; fi
if [ "$rc" -eq 124 ]; then echo "FAILED: the job hung (killed after 120 s)"; exit 1; fi
if ! grep -Eq "$expect" <<<"$out"; then echo "FAILED: no error matching '$expect'"; exit 1; fi
if ! "$program" check-checkpoint "$dir" 3; then echo "FAILED: the last checkpoint is not the whole step-3 one"; exit 1; fi
rm -rf "$dir"
echo "passed: the job stopped with the error and the step-3 checkpoint intact"
