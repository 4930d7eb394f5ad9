#!/bin/bash
# Threads or epoll for the gateway? Cost of N idle TLS keep-alive connections (server RSS,
# threads, kernel stack/slab) and request latency with and without them, for:
#   thread : one blocking thread per connection (examples/gateway_bench.rs thread-proxy)
#   epoll  : the gateway as built (flower-init gateway: epoll reactor + per-request workers)
# Both are static musl release builds forwarding GET /health to the same stand-in upstream.
# Usage: bench/gateway-models.sh [N_IDLE=2000] [ROUNDS=3]   (loopback 127.0.0.1/127.0.0.2 only)
set -euo pipefail
N=${1:-2000}
ROUNDS=${2:-3}
cd "$(dirname "$0")/.."
T=x86_64-unknown-linux-musl
cargo build --release --locked --target $T --bin flower-init --example gateway_bench >&2
EX=target/$T/release/examples/gateway_bench
GW=target/$T/release/flower-init
D=$(mktemp -d /tmp/fi-gateway-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

# Start "$@" with stdout in $D/$name.out; wait for its "listening [kind] ADDR" line; echo ADDR.
start() {
  local name=$1; shift
  "$@" > "$D/$name.out" 2> "$D/$name.err" &
  PIDS+=($!); echo $! > "$D/$name.pid"
  for _ in $(seq 1 600); do
    if grep -q '^listening' "$D/$name.out" 2>/dev/null; then awk '/^listening/ {print $NF; exit}' "$D/$name.out"; return; fi
    sleep 0.1
  done
  echo "$name did not start: $(cat "$D/$name.err")" >&2; exit 1
}

$EX certs "$D" >&2
UP=$(start upstream $EX upstream 127.0.0.1:0)
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq 1 "$ROUNDS"); do
  A=$(start thread$r $EX thread-proxy 127.0.0.2:0 "$UP" "$D/run/server.pem" "$D/run/server.key")
  echo "{\"model\":\"thread\",\"round\":$r,\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"result\":$($EX idle-client "$A" "$D/run/ca.crt" "$N" "$(cat "$D/thread$r.pid")")}"
  kill "$(cat "$D/thread$r.pid")"
  B=$(start epoll$r $GW gateway --listen 127.0.0.2:0 --upstream "$UP" --cert "$D/run/server.pem" --key "$D/run/server.key" --idle-timeout 600 --log-level warn)
  echo "{\"model\":\"epoll\",\"round\":$r,\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"result\":$($EX idle-client "$B" "$D/run/ca.crt" "$N" "$(cat "$D/epoll$r.pid")")}"
  kill "$(cat "$D/epoll$r.pid")"
  sleep 1
done
