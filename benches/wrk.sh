#!/usr/bin/env bash
# wrk through credproxy (bearer route) vs direct to the same local origin, in one run.
# Usage: benches/wrk.sh [duration=10s] [connections=32]
# Needs wrk (apt-get install wrk). Prints requests/s of each and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}; conns=${2:-32}
cargo build --release --quiet --bin credproxy --example origin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
. benches/common.sh
op=$(port); pp=$(port); ap=$(port)
cat > "$tmp/c.yaml" <<YAML
proxy: { listen: 127.0.0.1:$pp, admin: 127.0.0.1:$ap, threads: 1, egress: { allow: [127.0.0.0/8] } }
credentials:
  tok: { type: bearer, token: "\${BENCH_TOKEN}" }
routes:
  - { host: "127.0.0.1:$op", credential: tok }
YAML
target/release/examples/origin 127.0.0.1:$op >/dev/null &
BENCH_TOKEN=bench RUST_LOG=warn target/release/credproxy run -c "$tmp/c.yaml" 2>"$tmp/log" &
for _ in $(seq 100); do curl -sf "127.0.0.1:$ap/readyz" >/dev/null && break; sleep 0.1; done
# wrk has no proxy option: an absolute-form request line goes through a Lua path.
cat > "$tmp/proxy.lua" <<LUA
wrk.path = "http://127.0.0.1:$op/bench"
wrk.headers["Host"] = "127.0.0.1:$op"
LUA
rps() { awk '/Requests\/sec/ {print $2}'; }
direct=$(wrk -t1 -c"$conns" -d"$dur" "http://127.0.0.1:$op/bench" | rps)
proxied=$(wrk -t1 -c"$conns" -d"$dur" -s "$tmp/proxy.lua" "http://127.0.0.1:$pp" | rps)
echo "direct:  $direct req/s"
echo "proxied: $proxied req/s (bearer injected)"
python3 -c "print(f'ratio proxied/direct: {float($proxied)/float($direct):.2f}')"
