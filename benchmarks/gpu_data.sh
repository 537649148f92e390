#!/usr/bin/env bash
# Put the data the GPU check (benchmarks/gpu_check.sh) reads into gpu_data/ at the top of the
# checkout: git-ignored, so it travels to the lent machine only where a call names it in `carry`
# (64 MiB a call in all, the checkout included).
#
#   bash benchmarks/gpu_data.sh [--mnist DIR] [--cifar DIR] [--cifar-git GIT_DIR] [--airbench FILE]
#
#   gpu_data/mnist/                 the 4 MNIST .gz files (11 MB) from --mnist DIR
#                                   (default ../shared/data/mnist)
#   gpu_data/cifar10/cifar-10-batches-bin/   with --cifar DIR (a folder holding
#       cifar-10-batches-bin, or that folder): its six .bin files and batches.meta.txt (176 MB,
#       md5-checked against ../shared/tools/MD5SUMS.txt when it is there). Too much for one
#       call: carried two .bin files a call (README, "Performance")
#   gpu_data/cifar10-subset/cifar-10-batches-bin/   data_batch_1.bin and the first 5000 records
#       of test_batch.bin (44 MiB): fits beside MNIST in one call
#   --cifar-git GIT_DIR             rebuild CIFAR-10 first, into /tmp/cifar10 (outside the
#       project), from a git directory of onigirichai/darknet (what `fetch github:onigirichai/
#       darknet` brings) with ../shared/tools/rebuild_cifar10_bin.py (~20 s), then as --cifar
#   gpu_data/airbench94.py etc.     with --airbench FILE (repeatable): a copy of the script
#   --no-md5                        skip the CIFAR md5 check (for files other than the originals)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MNIST_SRC=../shared/data/mnist CIFAR_SRC="" GIT_DIR="" AIRBENCH=() MD5=1
while [ $# -gt 0 ]; do
    case $1 in
        --mnist) MNIST_SRC=${2:?}; shift ;;
        --cifar) CIFAR_SRC=${2:?}; shift ;;
        --cifar-git) GIT_DIR=${2:?}; shift ;;
        --airbench) AIRBENCH+=("${2:?}"); shift ;;
        --no-md5) MD5=0 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "gpu_data: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
    shift
done
git check-ignore -q gpu_data/ || { echo "gpu_data: gpu_data/ is not git-ignored here" >&2; exit 1; }

mkdir -p gpu_data/mnist
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    install -m 644 "$MNIST_SRC/$f.gz" gpu_data/mnist/  # the originals are read-only
done
echo "gpu_data/mnist: $(du -sh gpu_data/mnist | cut -f1)"

if [ -n "$GIT_DIR" ]; then
    "$PY" ../shared/tools/rebuild_cifar10_bin.py "$GIT_DIR" 88c8a4e5 /tmp/cifar10/cifar-10-batches-bin
    CIFAR_SRC=/tmp/cifar10
fi
if [ -n "$CIFAR_SRC" ]; then
    src=$CIFAR_SRC
    [ -d "$src/cifar-10-batches-bin" ] && src=$src/cifar-10-batches-bin
    full=gpu_data/cifar10/cifar-10-batches-bin sub=gpu_data/cifar10-subset/cifar-10-batches-bin
    mkdir -p "$full" "$sub"
    for f in data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin \
             data_batch_5.bin test_batch.bin batches.meta.txt; do
        install -m 644 "$src/$f" "$full/"
    done
    if [ $MD5 = 1 ] && [ -f ../shared/tools/MD5SUMS.txt ]; then  # its paths are ./cifar-10-batches-bin/NAME
        (cd gpu_data/cifar10 && md5sum --quiet -c ../../../shared/tools/MD5SUMS.txt)
    fi
    install -m 644 "$full/data_batch_1.bin" "$full/batches.meta.txt" "$sub/"
    head -c $(( 5000 * 3073 )) "$full/test_batch.bin" > "$sub/test_batch.bin"  # 5000 records
    echo "gpu_data/cifar10: $(du -sh gpu_data/cifar10 | cut -f1); gpu_data/cifar10-subset: $(du -sh gpu_data/cifar10-subset | cut -f1)"
fi
for f in "${AIRBENCH[@]}"; do
    install -m 644 "$f" gpu_data/
    echo "gpu_data/$(basename "$f")"
done
du -sh gpu_data
