#!/usr/bin/env bash
# The GPU check: one prepared command for a lent GPU machine (one H200 or H100, no network, at
# most 600 s a command, 15 minutes of device time a task, at most 8 files back from $OUT, none in
# folders). It runs, in this order, each step under its own `timeout` inside one budget (full:
# 450 s; --quick: 200 s; or --budget S), so the whole ends inside 8 minutes:
#   1. the CUDA-only tests (pytest -m cuda)        what checks the CUDA fixes, first
#   2. fp16 and bf16, --compile, --grad-accum 2    (compile mode default: reduce-overhead with
#                                                   --grad-accum > 1 is refused by validation)
#   3. resume on another device: train on cuda:0, SIGTERM once a mid-epoch last.pt exists,
#      resume with --device cuda, then (full) continue that CUDA checkpoint on the CPU
#   4. throughput rows (benchmarks/throughput.py, one process per model)
#   5. MNIST 99% time to accuracy (benchmarks/time_to_accuracy.py configs/mnist-fast.toml)
#   6. configs/cifar10-fast.toml compiled, beside airbench's published seconds
#   7. own images: CIFAR-10 PNGs in a folder; train (--workers, resized-crop), eval --errors
#      --plot-errors --heatmap (Grad-CAM), predict --csv; predict must miss exactly the images
#      eval lists (benchmarks/own_images.py); then a fine-tuning run on that folder
#      (torchvision:resnet18 from a weights file, --freeze backbone --unfreeze-at 1, 64 px)
#   8. the 1-GPU torchrun path (DDP, nccl)          where time allows
#   9. airbench scripts that were carried           where time allows
# A step that would not fit in what is left is reported "skipped: out of budget"; --only runs
# chosen steps (e.g. a second call: --only cifar,airbench).
#
#   bash benchmarks/gpu_check.sh [--quick] [--device cuda|cpu] [--out DIR] [--budget S]
#        [--only tests,precision,resume,throughput,mnist,cifar,own,torchrun,airbench]
#        [--mnist-dir DIR] [--cifar-dir DIR] [--airbench FILE[,FILE]]
#
# Output, directly in --out (default $OUT, else a new temporary folder), 3 files: summary.md
# (appended as each step finishes, so a cut-short check still returns the figures so far),
# log.txt (every step's output, as it comes) and results.jsonl (one JSON object per step or
# row). Run directories and data go to a scratch folder outside it, deleted at the end
# (KEEP_SCRATCH=1 keeps it). Exit 0 if no step failed or timed out, else 1; 2 for bad usage.
#
# Data: what travels with the checkout, git-ignored under gpu_data/ and named in `carry`;
# benchmarks/gpu_data.sh prepares it here (README, "Performance"):
#   gpu_data/mnist/                 the 4 MNIST .gz files (11 MB)
#   gpu_data/cifar10/cifar-10-batches-bin/   all six .bin files (176 MB: too much for one call,
#       64 MiB at most): carried two files a call in successive calls while the machine stays
#       warm (already-copied ignored files stay there), then used as the full CIFAR-10
#   gpu_data/cifar10-subset/cifar-10-batches-bin/   data_batch_1.bin + the first 5000 test
#       images (44 MiB, fits beside MNIST in one call): used when the full set is not there.
#       ptrain's reader needs all five training batches, so the one present is linked under the
#       five names in the scratch folder: the same 50000 images an epoch, so the same steps and
#       seconds, but 10000 distinct images, so accuracy is not CIFAR-10's (said so).
#   gpu_data/airbench*.py           airbench scripts (e.g. airbench94.py from the public
#       KellerJordan/cifar10-airbench), run from the scratch folder with their cifar10/train.pt
#       and test.pt written from the same batches (they would ask torchvision to download
#       otherwise) and their 25 or 200 runs cut to 5 (--quick: 2), each under a timeout.
#
# On the lent machine (the `run` tool), one call does it all:
#   command   pip install --no-deps --no-build-isolation -e . -q && bash benchmarks/gpu_check.sh
#   carry     gpu_data/mnist, gpu_data/cifar10-subset (+ gpu_data/airbench94.py): ~56 MiB
#   timeout_s 540 (the check stops itself by 450 s; pip and the start take the rest)
# For the full CIFAR-10, three calls first, back to back (a machine idle for 30 s is given back
# and its files go), each with command `ls -l gpu_data/cifar10/cifar-10-batches-bin` and carry
# two files of gpu_data/cifar10/cifar-10-batches-bin/: data_batch_1.bin + data_batch_2.bin, then
# data_batch_3.bin + data_batch_4.bin, then data_batch_5.bin + test_batch.bin + batches.meta.txt;
# the check's call, naming only the paths above, leaves them in place. Never carry gpu_data or
# gpu_data/cifar10 whole (over 64 MiB: refused). A second, shorter call: --quick or --only.
#
# --device cpu is a dry run (CI runs it): every step tiny on tests/conftest.py's small files,
# the CUDA-only ones (tests, compile, torchrun, airbench's runs) "skipped: cpu dry run".
# benchmarks/check_gpu_out.py OUT checks what a run left in OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # works without `pip install -e .` too
export PYTHONUNBUFFERED=1 LC_NUMERIC=C                 # output as it comes; '.' in $EPOCHREALTIME

QUICK=0 DEVICE=cuda OUTDIR=${OUT:-} BUDGET="" BUDGET_SET="" ONLY=all PREC_CPU=""
MNIST=gpu_data/mnist CIFAR_DIRS="gpu_data/cifar10 gpu_data/cifar10-subset" AIRBENCH=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --device) DEVICE=${2:?}; shift ;;
        --out) OUTDIR=${2:?}; shift ;;
        --budget) BUDGET=${2:?} BUDGET_SET=$2; shift ;;
        --only) ONLY=${2:?}; shift ;;
        --mnist-dir) MNIST=${2:?}; shift ;;
        --cifar-dir) CIFAR_DIRS=${2:?}; shift ;;
        --airbench) AIRBENCH=${2//,/ }; shift ;;
        -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
    shift
done
case $DEVICE in cuda|cpu) ;; *) echo "gpu_check: --device cuda or cpu" >&2; exit 2 ;; esac
OUTDIR=${OUTDIR:-$(mktemp -d -t ptrain-gpu-check-XXXX)}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/log.txt
: > "$OUTDIR/summary.md"; : > "$LOG"; : > "$OUTDIR/results.jsonl"
SCR=$(mktemp -d -t ptrain-gpu-scratch-XXXX)  # run directories, data: never under $OUT
[ "${KEEP_SCRATCH:-0}" = 1 ] || trap 'rm -rf "$SCR"' EXIT

# Per-step caps (seconds) and sizes. The caps add up to more than the budget on purpose: most
# steps end well inside theirs, and the later ones get what is left.
if [ $QUICK = 1 ]; then
    BUDGET=${BUDGET:-200} PRECISIONS="16" PREC_STEPS=40 TP_MODELS="lenet cifar-net"
    TP_ARGS="--rounds 1 --steps 50 --classic-workers 4" REPEATS=1 AB_RUNS=2
    CAP_TESTS=90 CAP_PREC=45 CAP_RESUME=35 CAP_TP=30 CAP_MNIST=30 CAP_CIFAR=90 CAP_DDP=30
    CAP_AB=60 CAP_OWN=45 OWN_ARGS="--train 2000 --test 500 --epochs 1"
else
    BUDGET=${BUDGET:-450} PRECISIONS="16 bf16" PREC_STEPS=100
    TP_MODELS="lenet mnist-cnn cifar-net resnet18" TP_ARGS="--rounds 2" REPEATS=3 AB_RUNS=5
    CAP_TESTS=150 CAP_PREC=55 CAP_RESUME=50 CAP_TP=45 CAP_MNIST=60 CAP_CIFAR=120 CAP_DDP=40
    CAP_AB=120 CAP_OWN=60 OWN_ARGS="--train 5000 --test 1000 --epochs 2"
fi
RESERVE=10 MIN_STEP=10  # kept back: the kill's 5 s grace and the last lines; not worth starting
COMPILE=--compile SAVE_EVERY=50 TARGET=() CIFAR_EXTRA=()
SECONDS=0
FAILED=""

say() { echo "[+${SECONDS}s] $*"; }  # progress on stdout (the run tool returns its tail)
report() {  # append to summary.md / results.jsonl (gpu_report.py); its own errors go to log.txt
    "$PY" benchmarks/gpu_report.py --out "$OUTDIR" "$@" >> "$LOG" 2>&1 \
        || echo "gpu_check: gpu_report.py $1 failed (log.txt)" | tee -a "$LOG" >&2
}
want() { [ "$ONLY" = all ] || [[ ",$ONLY," == *",$1,"* ]]; }
skip() {  # skip STEP REASON [COLUMNS]
    report skip --name "$1" --reason "$2" ${3:+--row "$3"}
    say "$1: skipped: $2"
}

# gate STEP CAP [COLUMNS]: may STEP start? Sets T, its timeout: CAP or what the budget has left,
# whichever is less. Else reports why not (as a table row of COLUMNS empty cells if given).
gate() {
    local left=$(( BUDGET - SECONDS - RESERVE )) why=""
    want "${1%%-*}" || why="not in --only $ONLY"
    [ -n "$why" ] || [ $left -ge $MIN_STEP ] || why="out of budget ($(( BUDGET - SECONDS )) s left)"
    [ -z "$why" ] || { skip "$1" "$why" "${3:-}"; return 1; }
    T=$(( $2 < left ? $2 : left ))
}

# run NAME TIMEOUT CMD...: CMD's output goes to log.txt as it comes (a check cut short keeps it)
# and to $SCR/NAME.out for the report. Sets RC (124/137: timed out) and SECS.
run() {
    local name=$1 t=$2 t0=$EPOCHREALTIME
    shift 2
    printf '\n===== %s (timeout %s s, at +%s s): %s\n' "$name" "$t" "$SECONDS" "$*" >> "$LOG"
    timeout -k 5 "$t" "$@" 2>&1 | tee "$SCR/$name.out" >> "$LOG"
    RC=${PIPESTATUS[0]}
    SECS=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    echo "===== $name: exit $RC after $SECS s" >> "$LOG"
    say "$name: exit $RC, $SECS s (timeout $t s)"
}
failed() { FAILED+="$1 "; }
timing() { echo --rc "$RC" --seconds "$SECS" --timeout "$T"; }  # for report
blank() { echo >> "$OUTDIR/summary.md"; }  # ends a section's table

# ---------------------------------------------------------------- the machine and the data
if [ "$DEVICE" = cuda ]; then
    if ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" >> "$LOG" 2>&1; then
        echo "gpu_check: torch sees no CUDA device here (--device cpu for a dry run)" \
            | tee -a "$OUTDIR/summary.md" >&2
        exit 2
    fi
    GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))" 2>> "$LOG")
    [ -n "$(ls "$MNIST"/*-ubyte* 2>/dev/null)" ] && MNIST=$(cd "$MNIST" && pwd) || MNIST=""
    AIRBENCH=${AIRBENCH:-$(ls gpu_data/airbench*.py 2>/dev/null | tr '\n' ' ')}
else
    # The dry run's data: small learnable files (tests/conftest.py), CIFAR as a one-batch subset.
    # Its own budget (it is not on the lease) and --precision 32 (fp16 is slow on a CPU).
    # Caps 3x the quick ones: a loaded CI machine must not time a dry run out (seen: resume).
    CAP_TESTS=270 CAP_PREC=135 CAP_RESUME=105 CAP_TP=90 CAP_MNIST=90 CAP_CIFAR=270 CAP_DDP=90
    CAP_OWN=180 OWN_ARGS="--train 200 --test 100 --epochs 1"
    BUDGET=${BUDGET_SET:-900} GPU="CPU (dry run)" COMPILE="" SAVE_EVERY=2 PREC_STEPS=2
    TARGET=(--target 0.01) PREC_CPU=32
    CIFAR_EXTRA=(--max-steps 2 --batch-size 100 --test-batch-size 100)
    TP_ARGS="--rounds 1 --steps 3" AB_RUNS=1
    "$PY" benchmarks/gpu_data.py tiny-data --dest "$SCR/data" >> "$LOG" 2>&1 \
        || { echo "gpu_check: could not write the dry run's data (log.txt)" >&2; exit 1; }
    MNIST=$SCR/data/mnist CIFAR_DIRS=$SCR/data/cifar10-subset MNIST_TINY=1
fi
# CIFAR-10: the full set if every file travelled, else a subset assembled in the scratch folder.
# shellcheck disable=SC2086
IFS='|' read -r CIFAR_MODE CIFAR_DIR CIFAR < <("$PY" benchmarks/gpu_data.py cifar-data \
    --src $CIFAR_DIRS --dest "$SCR/cifar10" 2>> "$LOG")
CIFAR_NOTE=$([ "$CIFAR_MODE" = subset ] && echo "subset: not all of CIFAR-10")
report env --device "$DEVICE" --mode "$([ $QUICK = 1 ] && echo quick || echo full)" \
    --budget "$BUDGET" --mnist "${MNIST:-missing (gpu_data/mnist: benchmarks/gpu_data.sh)}" \
    --cifar "$CIFAR" --airbench "${AIRBENCH:-none carried}" \
    --git "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + local changes')"
# MNIST for the training steps, or ptrain's built-in fake set when none travelled.
if [ -n "$MNIST" ]; then MNIST_ARGS=(--dataset mnist --data-dir "$MNIST")
    MNIST_DESC=$([ -n "${MNIST_TINY:-}" ] && echo "tiny MNIST files (tests/conftest.py)" || echo MNIST)
else MNIST_ARGS=(--dataset fake) MNIST_DESC="the fake set (no MNIST travelled)"; fi
CPU_DRY="cpu dry run"

# ---------------------------------------------------------------- 1. the CUDA-only tests
report heading --title "1. CUDA-only tests"
TESTS_CMD="$PY -m pytest -v -m cuda -p no:cacheprovider"  # -v: a line per test, as each ends
if [ "$DEVICE" = cpu ]; then skip tests "$CPU_DRY"
elif ! "$PY" -c "import pytest" 2>/dev/null; then skip tests "pytest is not installed for $PY"; failed tests
elif gate tests $CAP_TESTS; then
    # shellcheck disable=SC2086
    run tests $T env PTRAIN_TEST_MNIST_DIR="$MNIST" $TESTS_CMD
    report tests --log "$SCR/tests.out" --cmd "$TESTS_CMD" $(timing)
    [ $RC = 0 ] || failed tests
fi

# ---------------------------------------------------------------- 2. mixed precision, compiled
report heading --title "2. Mixed precision, compiled, grad-accum 2" --table train --text \
    "configs/mnist-fast.toml (fast-cnn with BatchNorm, Adam, onecycle) on $MNIST_DESC, $PREC_STEPS optimizer steps of 2 micro-batches each, $([ -n "$COMPILE" ] && echo "--compile (mode default)" || echo "$CPU_DRY: --precision 32, no --compile")."
for p in 16 bf16; do
    label=$([ $p = 16 ] && echo fp16 || echo bf16)
    if [[ " $PRECISIONS " != *" $p "* ]]; then skip "precision-$label" "not in --quick" 5; continue; fi
    gate "precision-$label" $CAP_PREC 5 || continue
    run "precision-$label" $T "$PY" -m pytorch_cli train --config configs/mnist-fast.toml \
        "${MNIST_ARGS[@]}" --device "$DEVICE" --precision ${PREC_CPU:-$p} $COMPILE --grad-accum 2 \
        --max-steps $PREC_STEPS --log-interval 10 --run-dir "$SCR/precision-$p" --quiet
    report train-row --step precision --label "$label" --run-dir "$SCR/precision-$p" $(timing)
    [ $RC = 0 ] || failed "precision-$label"
done
blank

# ---------------------------------------------------------------- 3. resume on another device
report heading --title "3. Resume on another device"
if gate resume $CAP_RESUME; then
    rd=$SCR/resume t0=$SECONDS step_t=$T
    if [ "$DEVICE" = cuda ]; then first=cuda:0 second=cuda prec=16
    else first=cpu second=cpu prec=32; fi  # tiny MNIST: 8 batches an epoch
    # Leg 1 in the background, stopped with SIGTERM as soon as a mid-epoch last.pt exists: ptrain
    # finishes the step, saves at that exact position and exits 143. (With one GPU the only
    # other name for cuda:0 is cuda; cuda:1 would need a second GPU.)
    echo "===== resume leg 1: train on $first, SIGTERM after the first mid-epoch last.pt" >> "$LOG"
    timeout -k 5 $step_t "$PY" -m pytorch_cli train --model lenet "${MNIST_ARGS[@]}" --epochs 2 \
        --batch-size 64 --save-interval $SAVE_EVERY --log-interval $SAVE_EVERY \
        --precision $prec --device $first --run-dir "$rd" --quiet >> "$LOG" 2>&1 &
    pid=$!
    while kill -0 $pid 2>/dev/null && [ ! -f "$rd/last.pt" ]; do sleep 0.2; done
    kill -TERM $pid 2>/dev/null  # `timeout` passes it on to ptrain
    wait $pid
    rc1=$?
    RC=$rc1 legs="$first=$rc1" extend=() finished=()
    say "resume leg 1: exit $rc1"
    # it beat the signal: its records say so (a SIGTERM landing after the run ended, while the
    # process exits, still makes the exit code 143)
    if "$PY" -c 'import json, sys
ends = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] in ("end", "stop")]
sys.exit(not (ends and ends[-1]["kind"] == "end" and not ends[-1].get("stopped")))' \
        "$rd/metrics.jsonl" 2>/dev/null; then
        extend=(--epochs 3) finished=(--finished-first)
    fi
    leg_t() { T=$(( step_t - (SECONDS - t0) )); [ $T -ge 5 ]; }  # what the step has left
    if { [ $rc1 = 0 ] || [ $rc1 = 143 ]; } && ! leg_t; then RC=124  # no time left for leg 2
    elif [ $rc1 = 0 ] || [ $rc1 = 143 ]; then
        run resume-2 $T "$PY" -m pytorch_cli resume "$rd" --device $second "${extend[@]}" --quiet
        legs+=",$second=$RC"
        if [ $RC = 0 ] && [ "$DEVICE" = cuda ] && [ $QUICK = 0 ] && leg_t; then
            # the CUDA checkpoint (GradScaler, CUDA RNG state) continued on the CPU, 0.05 epoch
            run resume-3 $T "$PY" -m pytorch_cli resume "$rd" --device cpu \
                --epochs "$([ $rc1 = 0 ] && echo 3.05 || echo 2.05)" --quiet
            legs+=",cpu=$RC"
        fi
    fi
    SECS=$(( SECONDS - t0 )) T=$step_t
    [[ $RC = 124 || $RC = 137 ]] || RC=0  # a timed-out leg times out the step; else the legs tell
    report resume --run-dir "$rd" --legs "$legs" "${finished[@]}" $(timing) --what \
        "lenet on $MNIST_DESC, precision $prec, --save-interval $SAVE_EVERY; legs as device=exit"
    [[ ,$legs, =~ ^,[^=]+=(0|143),[^=]+=0(,cpu=0)?,$ ]] || failed resume
fi

# ---------------------------------------------------------------- 4. throughput
report heading --title "4. Throughput" --table throughput --text \
    "benchmarks/throughput.py --device $DEVICE $TP_ARGS, one process per model (classic loop, ptrain, ceiling; ptrain with precision auto and, on CUDA, --compile-mode reduce-overhead). CIFAR-10: ${CIFAR}."
for m in lenet mnist-cnn cifar-net resnet18; do
    if [[ " $TP_MODELS " != *" $m "* ]]; then skip "throughput-$m" "not in --quick" 7; continue; fi
    if [ "$DEVICE" = cpu ] && [ $m = resnet18 ]; then skip "throughput-$m" "$CPU_DRY" 7; continue; fi
    gate "throughput-$m" $CAP_TP 7 || continue
    # shellcheck disable=SC2086
    run "throughput-$m" $T "$PY" benchmarks/throughput.py --device "$DEVICE" --models $m $TP_ARGS \
        --mnist-dir "${MNIST:-none}" --cifar-dir "${CIFAR_DIR:-none}" --json "$SCR/tp-$m.json"
    report throughput-row --model $m --json "$SCR/tp-$m.json" --data-note "$CIFAR_NOTE" $(timing)
    [ $RC = 0 ] || failed "throughput-$m"
done
blank

# ---------------------------------------------------------------- 5. MNIST time to accuracy
report heading --title "5. MNIST time to accuracy"
if [ -z "$MNIST" ]; then skip mnist "no MNIST in gpu_data/mnist (benchmarks/gpu_data.sh, carry it)"
elif gate mnist $CAP_MNIST; then
    TTA_CMD=$(echo benchmarks/time_to_accuracy.py configs/mnist-fast.toml --repeats $REPEATS "${TARGET[@]}" -- --device $DEVICE)
    run mnist $T "$PY" benchmarks/time_to_accuracy.py configs/mnist-fast.toml --data-dir "$MNIST" \
        --repeats $REPEATS "${TARGET[@]}" --json "$SCR/tta.json" -- --device "$DEVICE"
    report tta --json "$SCR/tta.json" --log "$SCR/mnist.out" --cmd "$TTA_CMD" $(timing)
    [ $RC = 0 ] || failed mnist
fi

# ---------------------------------------------------------------- 6. CIFAR-10 vs airbench
report heading --title "6. CIFAR-10: cifar10-fast vs airbench"
if [ -z "$CIFAR_DIR" ]; then skip cifar "$CIFAR (gpu_data/cifar10 or gpu_data/cifar10-subset)"
elif gate cifar $CAP_CIFAR; then
    CIFAR_CMD=$(echo ptrain train --config configs/cifar10-fast.toml --device $DEVICE $COMPILE "${CIFAR_EXTRA[@]}")
    run cifar $T "$PY" -m pytorch_cli train --config configs/cifar10-fast.toml --data-dir "$CIFAR_DIR" \
        --device "$DEVICE" $COMPILE "${CIFAR_EXTRA[@]}" --run-dir "$SCR/cifar" --quiet
    report cifar --run-dir "$SCR/cifar" --cmd "$CIFAR_CMD" --data "$CIFAR" --gpu "$GPU" \
        ${CIFAR_NOTE:+--subset} $(timing)
    [ $RC = 0 ] || failed cifar
fi

# ---------------------------------------------------------------- 7. own images
report heading --title "7. Own images (a folder of PNGs): train, eval, predict"
if [ -z "$CIFAR_DIR" ]; then skip own "no CIFAR-10 to write PNGs from"
elif gate own $CAP_OWN; then
    # shellcheck disable=SC2086
    run own $T "$PY" benchmarks/own_images.py --cifar-dir "$CIFAR_DIR" --dest "$SCR/own" \
        --device "$DEVICE" $OWN_ARGS --json "$SCR/own.json"
    report own-images --json "$SCR/own.json" $(timing) --what \
        "cifar-net, own_images.py $OWN_ARGS, --device $DEVICE, each command a fresh process"
    [ $RC = 0 ] || failed own
fi

# ---------------------------------------------------------------- 8. torchrun, one GPU
report heading --title "8. torchrun, 1 GPU (DDP, nccl)" --table train
if [ "$DEVICE" = cpu ]; then skip torchrun "$CPU_DRY" 5
elif gate torchrun $CAP_DDP 5; then
    run torchrun $T "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m pytorch_cli \
        train --model lenet "${MNIST_ARGS[@]}" --epochs 1 --run-dir "$SCR/torchrun" --quiet
    report train-row --step torchrun --label "lenet, 1 epoch, torchrun --nproc-per-node 1" \
        --run-dir "$SCR/torchrun" $(timing)
    [ $RC = 0 ] || failed torchrun
fi
blank

# ---------------------------------------------------------------- 9. airbench, if carried
report heading --title "9. airbench scripts" --table airbench --text \
    "Each carried gpu_data/airbench*.py, its runs cut to $AB_RUNS, on the CIFAR-10 above (${CIFAR}); seconds as the script times them (training + whitening init + final TTA evaluation, compile excluded)."
# Their CifarLoader reads cifar10/{train,test}.pt from the working directory: written once from
# the batches above, inside the first script's timeout (the dry run writes them too, as a check).
ab_data() {
    [ -f "$SCR/airbench/cifar10/test.pt" ] && return
    run airbench-data $T "$PY" benchmarks/gpu_data.py airbench-data --cifar-dir "$CIFAR_DIR" \
        --dest "$SCR/airbench"
    [ $RC = 0 ]
}
if ! want airbench; then skip airbench "not in --only $ONLY" 5
elif [ "$DEVICE" = cpu ]; then
    T=60; ab_data && ab="written" || { ab="FAILED"; failed airbench-data; }
    skip airbench "$CPU_DRY (its cifar10/train.pt and test.pt: $ab)" 5
elif [ -z "$AIRBENCH" ]; then skip airbench "no gpu_data/airbench*.py carried" 5
elif [ -z "$CIFAR_DIR" ]; then skip airbench "no CIFAR-10" 5
else
    for s in $AIRBENCH; do
        name=$(basename "$s" .py)
        gate "airbench-$name" $CAP_AB 5 || continue
        t0=$SECONDS step_t=$T
        if ! ab_data; then skip "airbench-$name" "its data could not be written (log.txt)" 5
            failed airbench-data; break; fi
        T=$(( step_t - (SECONDS - t0) ))
        [ $T -ge $MIN_STEP ] || { skip "airbench-$name" "out of budget after its data" 5; break; }
        # a copy with its number of runs cut (the published scripts loop 25 or 200 times)
        sed -E "s/for run in range\([0-9]+\)/for run in range($AB_RUNS)/" "$s" > "$SCR/airbench/$name.py"
        run "airbench-$name" $T env -C "$SCR/airbench" "$PY" "$name.py"
        report airbench --script "$name.py" --log "$SCR/airbench-$name.out" --data "$CIFAR" $(timing)
        [ $RC = 0 ] || failed "airbench-$name"
    done
fi
blank

report done --seconds $SECONDS --budget "$BUDGET" --failed "${FAILED% }"
cat "$OUTDIR/summary.md"
[ -z "$FAILED" ]
