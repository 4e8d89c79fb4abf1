#!/usr/bin/env bash
# p50 latency added by the proxy for a cached OAuth2 token vs a static bearer, in one run:
# one proxy, two routes to one local origin, wrk with 1 connection for each, plus direct.
# Usage: benches/token_latency.sh [duration=8s]
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-8s}
cargo build --release --quiet --bin credproxy --example origin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
. benches/common.sh
o1=$(port); o2=$(port); tp=$(port); pp=$(port); ap=$(port)
python3 - "$tp" <<'PY' &
import sys, http.server
class T(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        b = b'{"access_token":"bench-token","expires_in":3600}'
        self.send_response(200); self.send_header("Content-Type","application/json"); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), T).serve_forever()
PY
cat > "$tmp/c.yaml" <<YAML
proxy: { listen: 127.0.0.1:$pp, admin: 127.0.0.1:$ap, threads: 1, egress: { allow: [127.0.0.0/8] } }
credentials:
  static: { type: bearer, token: "\${BENCH_TOKEN}" }
  oauth:
    type: oauth2_client_credentials
    token_url: http://127.0.0.1:$tp/token
    client_id: id
    client_secret: "\${BENCH_TOKEN}"
routes:
  - { host: "127.0.0.1:$o1", credential: static }
  - { host: "127.0.0.1:$o2", credential: oauth }
YAML
target/release/examples/origin 127.0.0.1:$o1 >/dev/null &
target/release/examples/origin 127.0.0.1:$o2 >/dev/null &
BENCH_TOKEN=bench RUST_LOG=warn target/release/credproxy run -c "$tmp/c.yaml" 2>"$tmp/log" &
for _ in $(seq 100); do curl -sf "127.0.0.1:$ap/readyz" >/dev/null && break; sleep 0.1; done
curl -sf -x "http://127.0.0.1:$pp" "http://127.0.0.1:$o2/warm" >/dev/null   # fetch the token once
lua() { printf 'wrk.path = "http://127.0.0.1:%s/b"\nwrk.headers["Host"] = "127.0.0.1:%s"\n' "$1" "$1" > "$tmp/$1.lua"; echo "$tmp/$1.lua"; }
p50() { awk '$1 == "50%" { v=$2; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else { sub(/s$/,"",v); print v*1e6 } }'; }
direct=$(wrk -t1 -c1 -d"$dur" --latency "http://127.0.0.1:$o1/b" | p50)
static=$(wrk -t1 -c1 -d"$dur" --latency -s "$(lua "$o1")" "http://127.0.0.1:$pp" | p50)
oauth=$(wrk -t1 -c1 -d"$dur" --latency -s "$(lua "$o2")" "http://127.0.0.1:$pp" | p50)
fetches=$(curl -s "127.0.0.1:$ap/metrics" | awk -F' ' '/credproxy_token_fetches_total\{credential="oauth",result="ok"\}/ {print $2}')
echo "p50 direct:               ${direct} us"
echo "p50 via proxy, bearer:    ${static} us (added $(python3 -c "print(round($static-$direct,1))") us)"
echo "p50 via proxy, oauth2 cc: ${oauth} us (added $(python3 -c "print(round($oauth-$direct,1))") us)"
echo "token fetches during the run: ${fetches}"
python3 -c "print(f'ratio of added latency, cached token / static bearer: {($oauth-$direct)/($static-$direct):.2f}')"
