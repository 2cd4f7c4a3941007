#!/bin/sh
# Two simulated hosts on one machine: network namespaces kiln-h0 (10.77.0.1) and kiln-h1
# (10.77.0.2) joined by a veth pair, each running one node of `kiln-train mnist`; node 0 is the
# master. Prints both nodes' output and the bytes that crossed the veth. Needs root and
# iproute2. Usage: train/scripts/netns-two-hosts.sh [extra kiln-train mnist flags]
set -eu
BIN="${KILN_TRAIN:-${CARGO_TARGET_DIR:-target}/release/kiln-train}"
DATA="${KILN_MNIST:-$(dirname "$0")/../../data/mnist}"
OUT="$(mktemp -d)"
PORT=29500

cleanup() {
  ip netns del kiln-h0 2>/dev/null || true
  ip netns del kiln-h1 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add kiln-h0
ip netns add kiln-h1
ip link add kiln-v0 type veth peer name kiln-v1
ip link set kiln-v0 netns kiln-h0
ip link set kiln-v1 netns kiln-h1
ip -n kiln-h0 addr add 10.77.0.1/24 dev kiln-v0
ip -n kiln-h1 addr add 10.77.0.2/24 dev kiln-v1
for h in 0 1; do
  ip -n kiln-h$h link set lo up
  ip -n kiln-h$h link set kiln-v$h up
done

run_node() {
  node=$1; shift
  ip netns exec "kiln-h$node" "$BIN" mnist --data_url "$DATA" --train_url "$OUT/node$node" \
    --world-size 2 --rank "$node" --dist-url "tcp://10.77.0.1:$PORT" --device cpu "$@"
}
EXTRA="$*"
# shellcheck disable=SC2086
run_node 1 $EXTRA >"$OUT/node1.log" 2>&1 &
NODE1=$!
# shellcheck disable=SC2086
run_node 0 $EXTRA >"$OUT/node0.log" 2>&1 || { echo "node 0 failed"; cat "$OUT/node0.log"; exit 1; }
wait "$NODE1" || { echo "node 1 failed"; cat "$OUT/node1.log"; exit 1; }

echo "== node 0 (10.77.0.1, master)"; cat "$OUT/node0.log"
echo "== node 1 (10.77.0.2)"; cat "$OUT/node1.log"
echo "== veth kiln-v0 counters"; ip -n kiln-h0 -s link show kiln-v0 | sed -n '3,6p'
echo "== files: node 0"; ls "$OUT/node0"; echo "== files: node 1"; ls "$OUT/node1" 2>/dev/null || echo "(none)"
