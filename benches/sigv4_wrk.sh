#!/usr/bin/env bash
# Throughput through credproxy: a SigV4 route vs a static-header route, in one run (one proxy,
# two local origins, wrk 32 connections each, bodiless GETs).
# Usage: benches/sigv4_wrk.sh [duration=8s]
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-8s}
cargo build --release --quiet --bin credproxy --example origin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
. benches/common.sh
o1=$(port); o2=$(port); pp=$(port); ap=$(port)
cat > "$tmp/c.yaml" <<YAML
proxy: { listen: 127.0.0.1:$pp, admin: 127.0.0.1:$ap, threads: 1, egress: { allow: [127.0.0.0/8] } }
credentials:
  key: { type: headers, headers: { X-Api-Key: "\${BENCH_KEY}" } }
  aws: { type: aws_sigv4, access_key_id: "\${BENCH_KEY}", secret_access_key: "\${BENCH_KEY}", service: execute-api, region: us-east-1 }
routes:
  - { host: "127.0.0.1:$o1", credential: key }
  - { host: "127.0.0.1:$o2", credential: aws }
YAML
target/release/examples/origin 127.0.0.1:$o1 >/dev/null &
target/release/examples/origin 127.0.0.1:$o2 >/dev/null &
BENCH_KEY=bench RUST_LOG=warn target/release/credproxy run -c "$tmp/c.yaml" 2>"$tmp/log" &
for _ in $(seq 100); do curl -sf "127.0.0.1:$ap/readyz" >/dev/null && break; sleep 0.1; done
lua() { printf 'wrk.path = "http://127.0.0.1:%s/b?x=1"\nwrk.headers["Host"] = "127.0.0.1:%s"\n' "$1" "$1" > "$tmp/$1.lua"; echo "$tmp/$1.lua"; }
rps() { awk '/Requests\/sec/ {print $2}'; }
static=$(wrk -t1 -c32 -d"$dur" -s "$(lua "$o1")" "http://127.0.0.1:$pp" | rps)
sigv4=$(wrk -t1 -c32 -d"$dur" -s "$(lua "$o2")" "http://127.0.0.1:$pp" | rps)
echo "static header route: $static req/s"
echo "SigV4 route:         $sigv4 req/s"
python3 -c "print(f'ratio SigV4 / static: {float($sigv4)/float($static):.2f}')"
