#!/usr/bin/env bash
# train_captioner under mpiexec on 12 generated clips: two ranks train (progress and reports from rank 0 only),
# stop after 2 steps as Ctrl-C does; one rank with the doubled batch resumes that checkpoint and finishes; a
# resume whose clips per step differ is refused on every rank and ends the job.
#   mpi.sh BIN_DIR SOURCE_DIR WORK_DIR MPIEXEC [MPIEXEC FLAGS...]
# With KIND=TCP and tests/mpi/tcp_run.sh as MPIEXEC, the same without MPI (the ranks meet over TCP, as under
# torchrun).
set -uo pipefail
bin=$1 root=$2 work=$3
shift 3
mpiexec=("$@")
RUN_TIMEOUT=300
. "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$work"
"$root/tools/make_demo_data.sh" data 12 1 2 64 >/dev/null || { echo "FAILED: demo data"; exit 1; }
run 0 stage0 "$bin/train_captioner" --stage0 --data data --model model --stage0-epochs 1 --image-size 32
train=("$bin/train_captioner" --data data --model model --out out --epochs1 1 --epochs2 1 --val-fraction 0.25 --log-lines)

run 130 two_ranks "${mpiexec[@]}" -np 2 "${train[@]}" --batch 1 --accum 2 --max-steps 2
kind=${KIND:-MPI}
check "two ranks say so ($kind)" grep -Eq "data parallel: 2 ranks \\($kind[,)].* 2 clips per rank per step" two_ranks.out
check "one progress line per step (rank 0's)" test "$(grep -c '| step 2/' two_ranks.err)" -eq 1
check "the configuration is printed once" test "$(grep -c '^preset Cpu' two_ranks.out)" -eq 1
check "rank 0 wrote the checkpoint" test -f out/checkpoints/last.safetensors

run 0 one_rank "${train[@]}" --batch 2 --accum 2 --resume
check "one rank with the doubled batch resumes the two ranks' checkpoint" grep -q "resumed from .* at step 2" one_rank.err
check "and writes the adapter" test -f out/adapter/adapter_config.json

"${mpiexec[@]}" -np 2 "${train[@]}" --batch 2 --accum 2 --resume >refused.out 2>refused.err
rc=$?
check "another number of clips per step is refused (exit $rc)" test "$rc" -ne 0
check "with the reason" grep -q "clips per step (ranks × batch_size × gradient_accumulation_steps) is 4 (1 × 2 × 2) there but 8 (2 × 2 × 2) now" refused.err

echo "$failures failed"
exit $((failures > 0))
