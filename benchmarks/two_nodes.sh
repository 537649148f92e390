#!/usr/bin/env bash
# Two "machines" on one box: network namespaces ptrain-a and ptrain-b joined by a veth pair
# (10.77.0.1 <-> 10.77.0.2), one torchrun node in each (1 process per node), c10d rendezvous at
# 10.77.0.1:29400 over that link; gloo talks over it too. Real multi-node, minus the cables.
# Needs root (ip netns). Usage: bash benchmarks/two_nodes.sh OUT_DIR [extra ptrain train flags]
set -euo pipefail
OUT=$(realpath -m "${1:?usage: two_nodes.sh OUT_DIR [ptrain train flags]}"); shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
A=ptrain-a B=ptrain-b
cleanup() { ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true; }
trap cleanup EXIT
cleanup
ip netns add $A && ip netns add $B
ip link add veth-a type veth peer name veth-b
ip link set veth-a netns $A && ip link set veth-b netns $B
ip -n $A addr add 10.77.0.1/24 dev veth-a && ip -n $B addr add 10.77.0.2/24 dev veth-b
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set veth-a up && ip -n $B link set veth-b up
mkdir -p "$OUT"
# is_host: node A serves the rendezvous store (c10d would pick the host by matching the
# endpoint against the machine's hostname, which resolves outside the namespaces here)
node() {  # node NAME NETNS IS_HOST ADDRESS IFACE: one torchrun agent with one worker
    ip netns exec "$2" env GLOO_SOCKET_IFNAME="$5" PYTHONPATH="$ROOT" timeout 240 "$PY" -m torch.distributed.run \
        --nnodes 2 --nproc-per-node 1 --local-addr "$4" --rdzv-conf "is_host=$3" \
        --rdzv-backend c10d --rdzv-endpoint 10.77.0.1:29400 --rdzv-id ptrain-two-nodes \
        -m pytorch_cli train --dataset fake --model cifar-net --epochs 1 --batch-size 32 --lr 0.05 \
        --run-dir "$OUT/run" --quiet "${@:6}" 2>&1 | sed "s/^/[node $1] /"
}
echo "node A: 10.77.0.1 in netns $A (rendezvous host); node B: 10.77.0.2 in netns $B"
start=$(date +%s.%N)
node A $A 1 10.77.0.1 veth-a "$@" &
node B $B 0 10.77.0.2 veth-b "$@" &
status=0
wait %1 || status=$?
wait %2 || status=$?
echo "both nodes done in $(echo "$(date +%s.%N) - $start" | bc)s, exit $status"
# the namespaces have no other way out: every byte between the nodes crossed this link
echo "veth-a: $(ip netns exec $A cat /sys/class/net/veth-a/statistics/tx_bytes) bytes sent, $(ip netns exec $A cat /sys/class/net/veth-a/statistics/rx_bytes) received"
exit $status
