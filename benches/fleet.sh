#!/usr/bin/env bash
# A fleet's cost, side by side in one run:
#  1. requests/s of a cached-token route on a replica with shared state (Redis) and on one
#     without, alternating, several rounds (the hot path must not touch Redis);
#  2. the time an admin refresh takes (one token fetch), alone and through the fleet lease;
#  3. Redis commands per token refresh, read from Redis's own INFO.
# Usage: benches/fleet.sh [duration=6s] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-6s}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
cargo build --release --quiet --bin credproxy --example origin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
. benches/common.sh
o=$(port); tp=$(port); rp=$(port)
p1=$(port); a1=$(port); p2=$(port); a2=$(port)
redis-server --port "$rp" --save "" --appendonly no >/dev/null 2>&1 &
python3 - "$tp" <<'PY' &
import sys, http.server, itertools
n = itertools.count(1)
class T(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        b = ('{"access_token":"bench-token-%d","expires_in":3600}' % next(n)).encode()
        self.send_response(200); self.send_header("Content-Type","application/json"); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), T).serve_forever()
PY
config() { # listen admin extra
cat <<YAML
proxy: { listen: 127.0.0.1:$1, admin: 127.0.0.1:$2, threads: 1, egress: { allow: [127.0.0.0/8] }$3 }
credentials:
  oauth:
    type: oauth2_client_credentials
    token_url: http://127.0.0.1:$tp/token
    client_id: bench-client
    client_secret: "\${BENCH_SECRET}"
routes:
  - { host: "127.0.0.1:$o", credential: oauth }
YAML
}
config "$p1" "$a1" "" > "$tmp/alone.yaml"
config "$p2" "$a2" ", shared_state: { redis: \"redis://127.0.0.1:$rp\", prefix: bench }" > "$tmp/fleet.yaml"
export BENCH_SECRET=bench-secret-value CREDPROXY_STATE_KEY=$(printf '05%.0s' $(seq 32)) RUST_LOG=warn
target/release/examples/origin "127.0.0.1:$o" >/dev/null &
target/release/credproxy run -c "$tmp/alone.yaml" 2>"$tmp/alone.log" &
target/release/credproxy run -c "$tmp/fleet.yaml" 2>"$tmp/fleet.log" &
for a in $a1 $a2; do for _ in $(seq 100); do curl -sf "127.0.0.1:$a/readyz" >/dev/null && break; sleep 0.1; done; done
for _ in $(seq 50); do curl -s "127.0.0.1:$a2/metrics" | grep -q 'credproxy_shared_state_up 1' && break; sleep 0.1; done
for p in $p1 $p2; do curl -sf -x "http://127.0.0.1:$p" "http://127.0.0.1:$o/warm" >/dev/null; done

lua() { printf 'wrk.path = "http://127.0.0.1:%s/b"\nwrk.headers["Host"] = "127.0.0.1:%s"\n' "$o" "$o" > "$tmp/r.lua"; echo "$tmp/r.lua"; }
rps() { wrk -t1 -c16 -d"$dur" -s "$(lua)" "http://127.0.0.1:$1" | awk '/Requests\/sec/ {print $2}'; }
echo "cached-token route, wrk -c16 -d$dur, $rounds alternating rounds (req/s):"
ratios=()
for r in $(seq "$rounds"); do
  alone=$(rps "$p1"); fleet=$(rps "$p2")
  ratio=$(python3 -c "print(f'{$fleet/$alone:.3f}')")
  ratios+=("$ratio")
  echo "  round $r: without Redis $alone, with Redis $fleet, ratio $ratio"
done
joined=$(IFS=,; echo "${ratios[*]}")
python3 -c "import statistics; print('  median ratio (with/without):', statistics.median([$joined]))"

# Cold fetches: an admin refresh is one token fetch (alone), or invalidate + lease + fetch +
# publish (fleet). Median of 30 each.
cold() { python3 - "$1" <<'PY'
import sys, time, urllib.request, statistics
t = []
for _ in range(30):
    s = time.perf_counter()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/credentials/oauth/refresh", method="POST")).read()
    t.append((time.perf_counter() - s) * 1000)
print(f"{statistics.median(t):.2f}")
PY
}
before=$(redis-cli -p "$rp" INFO commandstats | awk -F'[=,:]' '/^cmdstat_/ {s+=$3} END {print s}')
alone_ms=$(cold "$a1"); fleet_ms=$(cold "$a2")
after=$(redis-cli -p "$rp" INFO commandstats | awk -F'[=,:]' '/^cmdstat_/ {s+=$3} END {print s}')
echo "token fetch by admin refresh, median of 30: without Redis ${alone_ms} ms, with Redis ${fleet_ms} ms (+$(python3 -c "print(f'{$fleet_ms-$alone_ms:.2f}')") ms)"
echo "Redis commands per refresh (30 refreshes, pings over the same time included): $(python3 -c "print(f'{($after-$before)/30:.1f}')")"
