#!/usr/bin/env bash
# Per-tenant credentials at scale, side by side in one run of one process:
#  1. requests/s of a per-tenant route (10,000 tenants' connections loaded, each request
#     naming a random tenant with X-Credproxy-Tenant) against a plain bearer route, same
#     client authentication, alternating, several rounds;
#  2. resident memory before the connections, after storing them, and after every one has
#     been used (each tenant's credential built and cached);
#  3. the time to store one connection through the admin API (median).
# Usage: benches/tenants.sh [tenants=10000] [duration=6s] [rounds=3] [active=tenants]
# (`active`: requests pick from the first that many tenants, to tell the cost of a large
# working set from the cost of the per-tenant path)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
dur=${2:-6s}
rounds=${3:-3}
active=${4:-$n}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --bin credproxy --example origin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
. benches/common.sh
o1=$(port); o2=$(port); p=$(port); a=$(port)
cat > "$tmp/c.yaml" <<YAML
proxy: { listen: 127.0.0.1:$p, admin: 127.0.0.1:$a, threads: 1, egress: { allow: [127.0.0.0/8] }, admin_token: "\${ADMIN_TOKEN}", state_dir: $tmp/state }
clients:
  - { name: worker, secret: "\${WORKER_SECRET}", tenants: ["*"], credentials: [plain, byok] }
credentials:
  plain: { type: bearer, token: "\${PLAIN_TOKEN}" }
  byok: { type: bearer, per_tenant: true }
routes:
  - { host: "127.0.0.1:$o1", credential: plain }
  - { host: "127.0.0.1:$o2", credential: byok }
YAML
export ADMIN_TOKEN=bench-admin-token-000001 WORKER_SECRET=bench-worker-secret-01 PLAIN_TOKEN=bench-plain-token-000001
export CREDPROXY_STATE_KEY=$(printf '06%.0s' $(seq 32)) RUST_LOG=warn
target/release/examples/origin "127.0.0.1:$o1" >/dev/null &
target/release/examples/origin "127.0.0.1:$o2" >/dev/null &
target/release/credproxy run -c "$tmp/c.yaml" 2>"$tmp/proxy.log" &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$a/readyz" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
curl -sf -x "http://127.0.0.1:$p" -U "worker:$WORKER_SECRET" "http://127.0.0.1:$o1/warm" >/dev/null
rss0=$(rss)

# Store n connections over keep-alive; the median time of one PUT.
put_ms=$(python3 - "$a" "$n" <<'PY'
import http.client, json, os, statistics, sys, time
admin, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", admin)
h = {"Authorization": "Bearer " + os.environ["ADMIN_TOKEN"], "Content-Type": "application/json"}
t = []
for i in range(n):
    body = json.dumps({"token": f"sk-tenant-{i:05d}-0123456789abcdef"})
    s = time.perf_counter()
    for attempt in range(2):
        try:
            c.request("PUT", f"/connections/t{i}/byok", body, h)
            r = c.getresponse(); r.read()
            break
        except (http.client.HTTPException, ConnectionError):
            c = http.client.HTTPConnection("127.0.0.1", admin)
    assert r.status in (200, 201), (r.status, i)
    t.append((time.perf_counter() - s) * 1000)
print(f"{statistics.median(t):.2f}")
PY
)
rss1=$(rss)

# Both routes do the same per-request work in wrk (a random header), so only the proxy's
# side differs: the per-tenant route's header names the tenant, the plain route's is ignored.
lua() { # origin-port header-name
cat <<LUA
wrk.path = "http://127.0.0.1:$1/b"
wrk.headers["Host"] = "127.0.0.1:$1"
wrk.headers["Proxy-Authorization"] = "Basic $(printf 'worker:%s' "$WORKER_SECRET" | base64 -w0)"
request = function()
  wrk.headers["$2"] = "t" .. math.random(0, $active - 1)
  return wrk.format()
end
LUA
}
lua "$o2" X-Credproxy-Tenant > "$tmp/tenant.lua"
lua "$o1" X-Bench-Tenant > "$tmp/plain.lua"
# Touch every tenant once so each credential is built (what a busy fleet holds).
python3 - "$p" "$o2" "$n" <<'PY'
import http.client, base64, os, sys
p, o, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
auth = "Basic " + base64.b64encode(("worker:" + os.environ["WORKER_SECRET"]).encode()).decode()
c = http.client.HTTPConnection("127.0.0.1", p)
for i in range(n):
    c.request("GET", f"http://127.0.0.1:{o}/warm", headers={"Proxy-Authorization": auth, "X-Credproxy-Tenant": f"t{i}"})
    r = c.getresponse(); r.read()
    assert r.status == 200, (r.status, i)
PY
rss2=$(rss)

# req/s, and the proxy's own CPU time per request (utime+stime from /proc, µs): the CPU
# figure is steadier than req/s on a shared machine, since it does not count waiting.
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
run() {
  local t0 t1 out
  t0=$(ticks)
  out=$(wrk -t1 -c16 -d"$dur" -s "$1" "http://127.0.0.1:$p")
  t1=$(ticks)
  python3 - "$t0" "$t1" "$hz" <<PY
import re, sys
out = """$out"""
n = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
t0, t1, hz = map(int, sys.argv[1:])
print(f"{rps:.0f} {(t1 - t0) / hz * 1e6 / n:.2f}")
PY
}
if [ -n "${PERF:-}" ]; then # PERF=1: where the per-tenant route's time goes, then stop
  for route in plain tenant; do
    wrk -t1 -c16 -d5s -s "$tmp/$route.lua" "http://127.0.0.1:$p" >/dev/null &
    perf record -F 2000 -g -o "$tmp/$route.data" -p "$pid" -- sleep 4 >/dev/null 2>&1 || true
    wait $!
    perf report -i "$tmp/$route.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -40 > "/tmp/perf-$route.txt" || true; perf report -i "$tmp/$route.data" --children --sort symbol --stdio -g none 2>/dev/null | grep -E "^ +[0-9]" | grep -E "credproxy|dashmap|pingora_proxy" | head -60 > "/tmp/perf-$route-children.txt" || true
  done
  exit 0
fi
echo "$n tenants' connections; wrk -c16 -d$dur, $rounds alternating rounds:"
rows=()
for r in $(seq "$rounds"); do
  read -r prps pcpu < <(run "$tmp/plain.lua")
  read -r trps tcpu < <(run "$tmp/tenant.lua")
  rows+=("($prps,$pcpu,$trps,$tcpu)")
  echo "  round $r: plain route $prps req/s, $pcpu µs CPU/req; per-tenant route (random of $active of $n tenants) $trps req/s, $tcpu µs CPU/req"
done
joined=$(IFS=,; echo "${rows[*]}")
python3 - <<PY
import statistics as s
rows = [$joined]
print(f"  median ratio per-tenant/plain: throughput {s.median(t/p for p,_,t,_ in rows):.3f}, CPU per request {s.median(tc/pc for _,pc,_,tc in rows):.3f}")
PY
echo "resident memory: ${rss0} KiB before, ${rss1} KiB with $n connections stored, ${rss2} KiB with each used once"
python3 -c "print(f'  per connection: {($rss1-$rss0)*1024/$n:.0f} B stored, {($rss2-$rss0)*1024/$n:.0f} B stored and built; per 10,000: {($rss2-$rss0)*10000/$n/1024:.1f} MiB')"
echo "PUT /connections (sealed to state_dir), median: ${put_ms} ms"
grep -E "WARN|ERROR" "$tmp/proxy.log" | head -5 || true
