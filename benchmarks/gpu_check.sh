#!/usr/bin/env bash
# One command for a GPU machine: the CUDA-only tests, the throughput benchmark, the
# time-to-accuracy runs and the 1-GPU torchrun path, then one summary (also written to $OUT/summary.md).
#
#   bash benchmarks/gpu_check.sh [MNIST_DIR] [FASHION_MNIST_DIR] [CIFAR10_DIR]
#
# Defaults: ../shared/data/mnist, /usr/share/datasets/fashion-mnist and ~/data (a folder with
# cifar-10-batches-bin); a missing folder skips its run. CIFAR-10: configs/cifar10-fast.toml
# once, compiled, its accuracy (with TTA) and training time. Needs torch with CUDA; pytest for the tests (skipped, said so, without
# it). Works from a checkout without installing: it puts the checkout on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d -t ptrain-gpu-check-XXXX)}
MNIST=${1:-../shared/data/mnist}
FASHION=${2:-/usr/share/datasets/fashion-mnist}
CIFAR=${3:-$HOME/data}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

gpu=$($PY -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null) \
    || { echo "gpu_check: torch sees no CUDA device here"; exit 2; }

if $PY -c "import pytest" 2>/dev/null; then
    PTRAIN_TEST_MNIST_DIR=$MNIST $PY -m pytest -q -m cuda -p no:cacheprovider > "$OUT/tests.txt" 2>&1
    rc=$?
    tests="$(tail -n 1 "$OUT/tests.txt") (exit $rc)"
else
    tests="not run: pytest is not installed for $PY"
fi

$PY benchmarks/throughput.py --device cuda --rounds 5 --mnist-dir "$MNIST" \
    --json "$OUT/throughput.json" > "$OUT/throughput.txt" 2> "$OUT/throughput.log"
throughput_rc=$?

tta() {  # name, preset, data dir
    if [ ! -d "$3" ]; then echo "$1: skipped, no data in $3"; return; fi
    $PY benchmarks/time_to_accuracy.py "$2" --data-dir "$3" --repeats 3 \
        --json "$OUT/tta-$1.json" -- --device cuda > "$OUT/tta-$1.txt" 2>&1
    local rc=$?
    echo "$1 (exit $rc): $(tail -n 1 "$OUT/tta-$1.txt")"
}
mnist_line=$(tta mnist configs/mnist-fast.toml "$MNIST")
fashion_line=$(tta fashion-mnist configs/fashion-mnist-fast.toml "$FASHION")
if [ -d "$CIFAR/cifar-10-batches-bin" ] || [ -d "$CIFAR/cifar-10-batches-py" ]; then
    $PY -m pytorch_cli train --config configs/cifar10-fast.toml --data-dir "$CIFAR" --device cuda \
        --compile --run-dir "$OUT/cifar10-fast" --quiet > "$OUT/cifar10-fast.txt" 2>&1
    cifar_line="cifar10-fast (exit $?, compiled): $(grep -E '^(compiled|done)' "$OUT/cifar10-fast.txt" | tr '\n' ' ')"
else
    cifar_line="cifar10-fast: skipped, no CIFAR-10 in $CIFAR"
fi

# the 1-GPU torchrun path: DDP with nccl, one process
if [ -d "$MNIST" ]; then
    $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m pytorch_cli train \
        --data-dir "$MNIST" --epochs 1 --run-dir "$OUT/torchrun-1gpu" --quiet > "$OUT/torchrun.txt" 2>&1
    torchrun_line="torchrun, 1 GPU, lenet 1 epoch (exit $?): $(grep -E '^done' "$OUT/torchrun.txt")"
else
    torchrun_line="torchrun: skipped, no MNIST in $MNIST"
fi

{
    echo "# ptrain GPU check: $gpu, $($PY -c 'import torch; print("torch", torch.__version__)')"
    echo
    echo "CUDA-only tests: $tests"
    echo
    echo "## Throughput (benchmarks/throughput.py --device cuda, exit $throughput_rc)"
    tail -n 7 "$OUT/throughput.txt"
    echo
    echo "## Time to accuracy (benchmarks/time_to_accuracy.py, 3 seeds)"
    echo "- $mnist_line"
    echo "- $fashion_line"
    echo "- $cifar_line"
    echo
    echo "$torchrun_line"
    echo
    echo "Logs and JSON: $OUT"
} | tee "$OUT/summary.md"
