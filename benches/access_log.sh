#!/usr/bin/env bash
# The access log's cost, side by side in one run: two proxies on one bearer route, one with
# the default log (info, access lines to a file) and one with credproxy::access=off,
# alternating rounds; also JSON vs text lines.
# Usage: benches/access_log.sh [duration=4s] [rounds=5]
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-4s}; rounds=${2:-5}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --bin credproxy --example origin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
. benches/common.sh
op=$(port)
target/release/examples/origin 127.0.0.1:$op >/dev/null &
start() { # name RUST_LOG log-format -> proxy port
  local pp ap; pp=$(port); ap=$(port)
  cat > "$tmp/$1.yaml" <<YAML
proxy: { listen: 127.0.0.1:$pp, admin: 127.0.0.1:$ap, threads: 1, egress: { allow: [127.0.0.0/8] } }
credentials:
  tok: { type: bearer, token: "\${BENCH_TOKEN}" }
routes:
  - { host: "127.0.0.1:$op", credential: tok }
YAML
  BENCH_TOKEN=bench RUST_LOG=$2 target/release/credproxy run --log-format "$3" -c "$tmp/$1.yaml" >/dev/null 2>"$tmp/$1.log" &
  for _ in $(seq 100); do curl -sf "127.0.0.1:$ap/readyz" >/dev/null && break; sleep 0.1; done
  echo "$pp"
}
off=$(start off "info,credproxy::access=off" text)
text=$(start text info text)
json=$(start json info json)
printf 'wrk.path = "http://127.0.0.1:%s/bench"\nwrk.headers["Host"] = "127.0.0.1:%s"\n' "$op" "$op" > "$tmp/p.lua"
rps() { wrk -t1 -c16 -d"$dur" -s "$tmp/p.lua" "http://127.0.0.1:$1" | awk '/Requests\/sec/ {print $2}'; }
rows=()
for r in $(seq "$rounds"); do
  a=$(rps "$off"); b=$(rps "$text"); c=$(rps "$json")
  rows+=("($a,$b,$c)")
  echo "  round $r: access log off $a, text $b, json $c req/s"
done
joined=$(IFS=,; echo "${rows[*]}")
python3 -c "
import statistics as s
rows=[$joined]
print(f'median ratio vs off: text {s.median(b/a for a,b,_ in rows):.3f}, json {s.median(c/a for a,_,c in rows):.3f}')"
