#!/usr/bin/env bash
# Where an intercepted HTTPS request's CPU goes, against its ceilings: oha at C keep-alive
# connections (default 16) to the HTTPS origin directly, through nginx terminating TLS and
# speaking TLS to the origin, through bare pingora doing the same, and through credproxy
# intercepting (CONNECT, minted leaf, bearer injected). For each cell: requests/s, and the CPU
# (utime + stime) per request of the proxy, the origin and oha, in interleaved rounds.
#
#   benches/tls_ceiling.sh                       # 3 rounds of 4 s cells, release builds
#   CP=target/pgo/use/release/credproxy BARE=target/pgo/bare/use/release/examples/bare_pingora \
#     ROUNDS=5 benches/tls_ceiling.sh            # the profile-guided builds
#
# Read it as a budget: everything runs on the same cores, so a proxy's ratio to direct HTTPS
# is bounded by (direct's CPU per request) / (the proxied request's CPU in all three).
# Needs oha, nginx, openssl and /usr/bin/time (benches/load.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-4s}; C=${C:-16}
for t in oha nginx openssl /usr/bin/time; do
  command -v $t >/dev/null || { echo "benches/tls_ceiling.sh needs $t: run benches/load.sh once" >&2; exit 2; }
done
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin credproxy --example origin --example bare_pingora
CP=${CP:-target/release/credproxy}; BARE=${BARE:-target/release/examples/bare_pingora}

tmp=$(mktemp -d); chmod 755 "$tmp"
cleanup() {
  exec 2>/dev/null # not bash's "Killed" line per job
  nginx_stop "$tmp/nginx"
  kill -KILL $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
declare -A PID URL PX

T=$(port)
target/release/examples/origin 127.0.0.1:$T --body 1024 --tls "$tmp/origin-ca.pem" >/dev/null &
PID[origin]=$!
wait_port $T
self_signed "$tmp/leaf.pem" "$tmp/leaf.key"
BT=$(port)
$BARE 127.0.0.1:$BT 127.0.0.1:$T 1 --tls "$tmp/leaf.pem" "$tmp/leaf.key" >/dev/null 2>&1 &
PID[bare]=$!
NG=$(port); NT=$(port)
# (nginx_conf writes a plain-HTTP server too; unused here)
nginx_conf "$tmp/nginx" $NG $T 1 $NT $T "$tmp/leaf.pem" "$tmp/leaf.key"
nginx -c "$tmp/nginx/nginx.conf" &
bench_secrets
export RUST_LOG=warn CREDPROXY_STATE_KEY=$(printf '07%.0s' $(seq 32))
P=$(port); A=$(port)
cat > "$tmp/credproxy.yaml" <<YAML
$(bench_proxy "$CP" "$tmp" $P $A)
  threads: 1
$(bench_credentials 1 2 3 $T)
YAML
$CP run -c "$tmp/credproxy.yaml" 2>"$tmp/credproxy.log" &
PID[credproxy]=$!
for p in $BT $NT $P; do wait_port $p; done
for _ in $(seq 50); do [ -f "$tmp/nginx/nginx.pid" ] && break; sleep 0.1; done
PID[nginx]=$(pgrep -P "$(cat "$tmp/nginx/nginx.pid")" | tr '\n' ' ')
PID[direct]=""
URL[direct]=https://127.0.0.1:$T/bench; URL[nginx]=https://127.0.0.1:$NT/bench
URL[bare]=https://127.0.0.1:$BT/bench; URL[credproxy]=https://127.0.0.1:$T/bench
PX[credproxy]=http://127.0.0.1:$P

cell() { # name
  local px=() o0 p0 out
  [ -n "${PX[$1]:-}" ] && px=(-x "${PX[$1]}")
  o0=$(cpu_ticks ${PID[origin]}); p0=$(cpu_ticks ${PID[$1]})
  out=$({ /usr/bin/time -f "OHA %U %S" oha --no-tui --insecure --output-format json -z "$DUR" \
    -c "$C" "${px[@]}" "${URL[$1]}"; } 2>&1)
  python3 - "$1" "$out" "$o0" "$(cpu_ticks ${PID[origin]})" "$p0" "$(cpu_ticks ${PID[$1]})" \
    "$(getconf CLK_TCK)" <<'PY'
import json, re, sys
name, out, o0, o1, p0, p1, hz = sys.argv[1:]
m = re.search(r"OHA ([\d.]+) ([\d.]+)", out)
s = json.loads(out[: m.start()])["summary"]
n = s["requestsPerSec"] * s["total"]
us = lambda seconds: seconds / n * 1e6
proxy, origin = us((int(p1) - int(p0)) / int(hz)), us((int(o1) - int(o0)) / int(hz))
oha = us(float(m.group(1)) + float(m.group(2)))
print(f"| {name} | {s['requestsPerSec']:,.0f} | {proxy:.1f} | {origin:.1f} | {oha:.1f} | {proxy + origin + oha:.1f} |")
PY
}

echo "### oha -c $C, $DUR per cell, $ROUNDS interleaved round(s); CPU in µs per request"
echo
echo "| path | req/s | proxy | origin | oha | all |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
  for name in direct nginx bare credproxy; do cell $name; done
done | tee "$tmp/cells"
echo
echo "Medians; all / direct's all is the CPU budget: the ratio to direct's requests/s cannot"
echo "exceed its inverse while the cores are saturated."
echo
python3 - "$tmp/cells" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = [c.strip() for c in line.strip().strip("|").split("|")]
    rows.setdefault(f[0], []).append([float(x.replace(",", "")) for x in f[1:]])
med = {k: [statistics.median(c) for c in zip(*v)] for k, v in rows.items()}
d = med["direct"]
print("| path | req/s | / direct | proxy µs | origin µs | oha µs | all µs | all / direct's |")
print("|---|---|---|---|---|---|---|---|")
for k, m in med.items():
    print(f"| {k} | {m[0]:,.0f} | {m[0] / d[0]:.2f} | {m[1]:.1f} | {m[2]:.1f} | {m[3]:.1f} | "
          f"{m[4]:.1f} | {m[4] / d[4]:.2f} |")
PY
