#!/usr/bin/env bash
# A launcher without MPI, as torchrun starts the ranks of a job on one node: N processes of PROGRAM with RANK,
# LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in their environment (comm::Tcp::from_environment). When one
# exits with an error the others get TCP_RUN_GRACE seconds (default 5) to stop on their own — their collectives name
# the failed rank — and are then stopped (torchrun stops them too), so a job whose rank died or hangs ends.
# usage: tcp_run.sh -np N PROGRAM [ARGS...]   (exit status: the first failing rank's, else 0)
set -u
if [ "${1:-}" != "-np" ] || [ -z "${2:-}" ] || [ -z "${3:-}" ]; then
  echo "usage: tcp_run.sh -np N PROGRAM [ARGS...]" >&2
  exit 2
fi
n=$2
shift 2
export WORLD_SIZE=$n MASTER_ADDR=127.0.0.1
# below Linux's ephemeral ports (32768 and up), which outgoing connections take
export MASTER_PORT=${MASTER_PORT:-$((20000 + ($$ * 7 + RANDOM) % 12000))}
export VIDLORA_TCP_JOB=${VIDLORA_TCP_JOB:-tcp_run-$$}  # this job's token: another job on the port is turned away
pids=() running=()
trap 'kill -KILL "${running[@]}" 2>/dev/null' EXIT  # a launcher that stops (an error, a signal) leaves no rank behind
trap 'exit 143' TERM INT
for ((r = 0; r < n; r++)); do
  RANK=$r LOCAL_RANK=$r "$@" &
  pids+=($!)
  running+=($!)
done
status=0
watcher=
left=$n
while [ "$left" -gt 0 ] && [ "${#running[@]}" -gt 0 ]; do
  done_pid=
  wait -n -p done_pid "${running[@]}"
  rc=$?
  left=$((left - 1))
  rank=
  still=()
  for ((r = 0; r < n; r++)); do
    if [ "${pids[$r]}" = "$done_pid" ]; then rank=$r; fi
  done
  for p in "${running[@]}"; do [ "$p" != "$done_pid" ] && still+=("$p"); done
  running=("${still[@]}")
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
    if [ "$rc" -gt 128 ]; then why="killed by signal $((rc - 128))"; else why="exit status $rc"; fi
    echo "tcp_run: rank ${rank:-?} failed ($why); the others stop within ${TCP_RUN_GRACE:-5} s" >&2
    (sleep "${TCP_RUN_GRACE:-5}"; kill "${running[@]}"; sleep 2; kill -KILL "${running[@]}") >/dev/null 2>&1 &
    watcher=$!
  fi
done
if [ -n "$watcher" ]; then kill "$watcher" 2>/dev/null; fi
exit "$status"
