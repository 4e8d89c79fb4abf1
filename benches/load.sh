#!/usr/bin/env bash
# credproxy's load benchmark: every path and its peers side by side in one run, on loopback.
#
#   benches/load.sh                 # the whole run (~25 min: 3 concurrencies, storm, 5 min soak)
#   DUR=3s CONNS="16" SOAK=20 benches/load.sh   # a quick look
#
# Installs what is missing on a fresh Debian machine (wrk, nginx-light, squid from Debian,
# mitmproxy from PyPI, oha from crates.io), builds credproxy, the bare pingora example and the
# origin example in release mode, and prints, for each concurrency, one table of requests/s,
# p50/p99 latency and ratios (HTTP rows against bare pingora and nginx; HTTPS rows against
# direct HTTPS and against bare pingora and nginx each terminating TLS and speaking TLS to the
# origin: the framework's ceiling for interception, and its peer's), then credproxy's RSS
# (idle, peak), a 1,000-request cold storm (token requests counted) and a bounded soak (RSS at
# start and end).
#
# Every proxy runs with the same number of worker threads (THREADS, default 1: on a 2-core
# machine the client and the origin need the other core). The origin answers 1 KiB bodies.
# Environment: DUR (per cell, default 8s), CONNS (default "1 16 128"), SOAK (seconds, default
# 300), THREADS (default 1), ROWS (a subset of the rows by key, e.g. "bare bearer"), ROUNDS (default 1: each cell measured that many times, the
# median kept; the rows of one round alternate so drift hits them all alike), PGO=1 (credproxy
# and bare pingora built profile-guided, by pgo/build.sh into target/pgo/use and by
# benches/pgo_bare.sh, so the two compare like for like; the other rows as before; PGO=keep
# measures what the last PGO=1 run built, without a new training run and rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-8s}
CONNS=${CONNS:-"1 16 128"}
SOAK=${SOAK:-300}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-1}

. benches/common.sh
# --- tools ---------------------------------------------------------------------------------
say() { echo "[$(date +%T)] $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need wrk || missing+=(wrk)
need nginx || missing+=(nginx-light)
need squid || missing+=(squid)
need curl || missing+=(curl)
need openssl || missing+=(openssl)
[ -x /usr/bin/time ] || missing+=(time) # benches/tls_ceiling.sh charges oha's CPU with it
if [ ${#missing[@]} -gt 0 ]; then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# mitmproxy pins its own cryptography (< 44.1 for 11.x), which the test suite's Python packages
# (moto's joserfc wants >= 45) must not get: it lives in a virtualenv of its own.
mitm_venv=${MITM_VENV:-$HOME/.cache/credproxy-bench/mitmproxy}
if [ ! -x "$mitm_venv/bin/mitmdump" ]; then
  python3 -m venv "$mitm_venv" 2>/dev/null || {
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$mitm_venv"
  }
  "$mitm_venv/bin/pip" install -q mitmproxy
fi
mitmdump=$mitm_venv/bin/mitmdump
export PATH="$HOME/.cargo/bin:$PATH"
need oha || cargo install -q --locked oha
say "building (release)"
cargo build --release --quiet --bin credproxy --example origin --example bare_pingora \
  --example bare_pingora_mimalloc
credproxy=target/release/credproxy
bare=target/release/examples/bare_pingora
if [ "${PGO:-}" = 1 ] || [ "${PGO:-}" = keep ]; then
  if [ "$PGO" = 1 ]; then
    say "building credproxy and bare pingora profile-guided (pgo/build.sh, benches/pgo_bare.sh)"
    CARGO_TARGET_DIR=target/pgo/use pgo/build.sh >&2
    benches/pgo_bare.sh >&2
  fi
  credproxy=target/pgo/use/release/credproxy
  bare=target/pgo/bare/use/release/examples/bare_pingora
fi

say "starting origins and proxies"
# --- processes -----------------------------------------------------------------------------
tmp=$(mktemp -d); chmod 755 "$tmp"
cleanup() {
  say "stopping"
  local pids; pids=$(jobs -p)
  kill $pids 2>/dev/null || true
  sleep 1
  kill -KILL $pids 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
bin=target/release

O=$(port); OO=$(port); OS=$(port); OT=$(port); T=$(port); TU=$(port)
$bin/examples/origin 127.0.0.1:$O --body 1024 >/dev/null &
$bin/examples/origin 127.0.0.1:$OO --body 1024 >/dev/null &
$bin/examples/origin 127.0.0.1:$OS --body 1024 >/dev/null &
$bin/examples/origin 127.0.0.1:$OT --body 1024 >/dev/null &
$bin/examples/origin 127.0.0.1:$T --body 1024 --tls "$tmp/origin-ca.pem" >/dev/null &
$bin/examples/origin 127.0.0.1:$TU --body 1024 --tls "$tmp/origin-ca-2.pem" >/dev/null &
for p in $O $OO $OS $OT $T $TU; do wait_port $p; done

BP=$(port)
$bare 127.0.0.1:$BP 127.0.0.1:$O "$THREADS" >/dev/null 2>"$tmp/bare.log" &
BM=$(port)
$bin/examples/bare_pingora_mimalloc 127.0.0.1:$BM 127.0.0.1:$O "$THREADS" >/dev/null 2>"$tmp/bare_mi.log" &
# Bare pingora terminating TLS and speaking TLS to the HTTPS origin: the framework's ceiling
# for an intercepted request (the same work without CONNECT and without a credential).
self_signed "$tmp/bare-tls.pem" "$tmp/bare-tls.key"
BT=$(port)
$bare 127.0.0.1:$BT 127.0.0.1:$T "$THREADS" --tls "$tmp/bare-tls.pem" "$tmp/bare-tls.key" \
  >/dev/null 2>"$tmp/bare_tls.log" &

NG=$(port); NT=$(port)
nginx_conf "$tmp/nginx" $NG $O "$THREADS" $NT $T "$tmp/bare-tls.pem" "$tmp/bare-tls.key"
nginx -c "$tmp/nginx/nginx.conf" &

SQ=$(port); mkdir -p "$tmp/squid"; chmod 777 "$tmp/squid"
cat > "$tmp/squid.conf" <<SQUID
http_port 127.0.0.1:$SQ
http_access allow all
cache deny all
access_log none
cache_log $tmp/squid/cache.log
pid_filename $tmp/squid.pid
coredump_dir $tmp/squid
shutdown_lifetime 1 seconds
workers $THREADS
SQUID
squid -N -f "$tmp/squid.conf" &

MP=$(port); mkdir -p "$tmp/mitm"
cat > "$tmp/mitm/addon.py" <<'PY'
def request(flow):
    flow.request.headers["Authorization"] = "Bearer bench"
PY
"$mitmdump" -q --listen-host 127.0.0.1 --listen-port $MP --set confdir="$tmp/mitm" \
  --set ssl_insecure=true -s "$tmp/mitm/addon.py" &

# credproxy: one process for the shared routes, one for a per-tenant connection (its clients
# authenticate, which the other rows do not pay for).
bench_secrets
export ADMIN_TOKEN=bench-admin-token-000001 WORKER_SECRET=bench-worker-secret-01
export CREDPROXY_STATE_KEY=$(printf '07%.0s' $(seq 32)) RUST_LOG=warn
P=$(port); A=$(port)
cat > "$tmp/credproxy.yaml" <<YAML
$(bench_proxy "$credproxy" "$tmp" $P $A)
  threads: $THREADS
  max_body: 1MiB
  limits: { max_connections_per_client: 2048 }
$(bench_credentials $O $OO $OS $T)
YAML
$credproxy run -c "$tmp/credproxy.yaml" 2>"$tmp/credproxy.log" &
cp_pid=$!
PT=$(port); AT=$(port)
cat > "$tmp/tenants.yaml" <<YAML
proxy:
  listen: 127.0.0.1:$PT
  admin: 127.0.0.1:$AT
  threads: $THREADS
  egress: { allow: [127.0.0.0/8] }
  admin_token: "\${ADMIN_TOKEN}"
  state_dir: $tmp/state
clients:
  - { name: worker, secret: "\${WORKER_SECRET}", tenants: ["*"], credentials: [byok] }
credentials:
  byok: { type: bearer, per_tenant: true }
routes:
  - { host: "127.0.0.1:$OT", credential: byok }
YAML
$credproxy run -c "$tmp/tenants.yaml" 2>"$tmp/tenants.log" &
for p in $BP $BM $BT $NG $NT $SQ $MP $P $PT; do wait_port $p; done
for a in $A $AT; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:$a/readyz" >/dev/null && break; sleep 0.1; done
done
curl -sf -X PUT -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
  -d '{"token":"sk-tenant-acme-0123456789abcdef"}' "127.0.0.1:$AT/connections/acme/byok" >/dev/null

rss() { awk -v k="$2" '$1 == k":" {print int($2/1024)}' "/proc/$1/status"; }
# Warm every path once (tokens fetched, leaf certificates minted, pools filled).
for o in $O $OO $OS; do curl -sf -o /dev/null -x "127.0.0.1:$P" "http://127.0.0.1:$o/warm"; done
curl -sf -o /dev/null -x "127.0.0.1:$P" --cacert "$tmp/ca/ca.pem" "https://127.0.0.1:$T/warm"
rss_idle=$(rss $cp_pid VmRSS)

# --- one cell ------------------------------------------------------------------------------
# wrk through a forward proxy needs an absolute-form request line: a Lua script sets it.
lua() { # name target-port [extra lua]
  local f="$tmp/$1.lua"
  {
    [ -n "${3:-}" ] && printf 'wrk.path = "http://127.0.0.1:%s/bench"\nwrk.headers["Host"] = "127.0.0.1:%s"\n' "$2" "$2"
    [ -z "${3:-}" ] && printf 'wrk.path = "/bench"\n'
    [ "${3:-}" = body ] && printf 'wrk.method = "PUT"\nwrk.body = string.rep("b", 65536)\n'
    [ "${3:-}" = tenant ] && printf 'wrk.headers["Proxy-Authorization"] = "Basic %s"\nwrk.headers["X-Credproxy-Tenant"] = "acme"\n' \
      "$(printf 'worker:%s' "$WORKER_SECRET" | base64 -w0)"
    cat <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.1f %.1f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
LUA
  } > "$f"
  echo "$f"
}
# wrk: "req/s p50_us p99_us errors"
wrk_cell() { # conns url lua
  wrk -t1 -c"$1" -d"$DUR" -s "$3" "$2" 2>&1 | awk '/^RESULT/ {print $2, $3, $4, $5 + $6}'
}
# oha's JSON summary: "req/s p50_us p99_us errors", or for the storm a sentence.
cat > "$tmp/oha.py" <<'PY'
import json, sys
d = json.load(sys.stdin)
s, p = d["summary"], d.get("latencyPercentiles", {})
codes = d.get("statusCodeDistribution", {})
errors = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
bad = sum(v for k, v in codes.items() if k != "200") + sum(errors.values())
if sys.argv[1:] == ["storm"]:
    print("%d ok, %d failed %s, %.0f ms in all" % (codes.get("200", 0), bad, errors or "", s["total"] * 1000))
else:
    print("%.1f %.1f %.1f %d" % (s["requestsPerSec"], (p.get("p50") or 0) * 1e6, (p.get("p99") or 0) * 1e6, bad))
PY
oha_cell() { # conns url [proxy]
  local px=(); [ -n "${3:-}" ] && px=(-x "$3")
  oha --no-tui --insecure --output-format json -z "$DUR" -c "$1" "${px[@]}" "$2" 2>/dev/null | python3 "$tmp/oha.py"
}

declare -A L
L[nginx]=$(lua nginx $O); L[bare]=$(lua bare $O x); L[bare_mi]=$(lua bare_mi $O x); L[bearer]=$(lua bearer $O x)
L[oauth]=$(lua oauth $OO x); L[sigv4]=$(lua sigv4 $OS x); L[sigv4b]=$(lua sigv4b $OS body)
L[tenant]=$(lua tenant $OT tenant); L[squid]=$(lua squid $O x); L[mitm]=$(lua mitm $O x)
L[direct]=$(lua direct $O)

http_rows=(direct nginx bare bare_mi bearer oauth sigv4 sigv4b tenant squid mitm)
https_rows=(https_direct nginx_tls bare_tls intercept tunnel squid_tunnel mitm_intercept)
if [ -n "${ROWS:-}" ]; then # a subset, e.g. ROWS="bare bearer"
  keep() { local out=() r; for r in "$@"; do [[ " $ROWS " == *" $r "* ]] && out+=("$r"); done; echo "${out[@]:-}"; }
  read -ra http_rows <<< "$(keep "${http_rows[@]}")"
  read -ra https_rows <<< "$(keep "${https_rows[@]}")"
fi
declare -A NAME=(
  [direct]="direct (no proxy)" [nginx]="nginx reverse+header" [bare]="bare pingora +header" [bare_mi]="bare pingora +header, mimalloc"
  [bearer]="credproxy static bearer" [oauth]="credproxy cached OAuth token"
  [sigv4]="credproxy SigV4, empty body" [sigv4b]="credproxy SigV4, 64 KiB PUT"
  [tenant]="credproxy per-tenant connection" [squid]="squid pass-through"
  [mitm]="mitmproxy + addon"
  [https_direct]="HTTPS direct" [nginx_tls]="nginx terminating TLS +header"
  [bare_tls]="bare pingora terminating TLS +header"
  [intercept]="credproxy intercept+inject"
  [tunnel]="credproxy tunnel (unmatched)" [squid_tunnel]="squid CONNECT tunnel"
  [mitm_intercept]="mitmproxy intercept+addon"
)
run_cell() { # row conns
  local c=$2
  case $1 in
    direct) wrk_cell "$c" "http://127.0.0.1:$O" "${L[direct]}" ;;
    nginx) wrk_cell "$c" "http://127.0.0.1:$NG" "${L[nginx]}" ;;
    bare) wrk_cell "$c" "http://127.0.0.1:$BP" "${L[bare]}" ;;
    bare_mi) wrk_cell "$c" "http://127.0.0.1:$BM" "${L[bare_mi]}" ;;
    bearer | oauth | sigv4 | sigv4b) wrk_cell "$c" "http://127.0.0.1:$P" "${L[$1]}" ;;
    tenant) wrk_cell "$c" "http://127.0.0.1:$PT" "${L[tenant]}" ;;
    squid) wrk_cell "$c" "http://127.0.0.1:$SQ" "${L[squid]}" ;;
    mitm) wrk_cell "$c" "http://127.0.0.1:$MP" "${L[mitm]}" ;;
    https_direct) oha_cell "$c" "https://127.0.0.1:$T/bench" ;;
    nginx_tls) oha_cell "$c" "https://127.0.0.1:$NT/bench" ;;
    bare_tls) oha_cell "$c" "https://127.0.0.1:$BT/bench" ;;
    intercept) oha_cell "$c" "https://127.0.0.1:$T/bench" "http://127.0.0.1:$P" ;;
    tunnel) oha_cell "$c" "https://127.0.0.1:$TU/bench" "http://127.0.0.1:$P" ;;
    squid_tunnel) oha_cell "$c" "https://127.0.0.1:$TU/bench" "http://127.0.0.1:$SQ" ;;
    mitm_intercept) oha_cell "$c" "https://127.0.0.1:$T/bench" "http://127.0.0.1:$MP" ;;
  esac
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : 0)}'; }

declare -A R
for c in $CONNS; do
  for r in $(seq "$ROUNDS"); do
    for row in "${http_rows[@]}" "${https_rows[@]}"; do
      say "$row, $c connection(s), round $r"
      R[$row,$c,$r]=$(run_cell "$row" "$c")
    done
  done
done
rss_peak=$(rss $cp_pid VmHWM)

# --- tables --------------------------------------------------------------------------------
field() { # row conns index -> median over rounds
  for r in $(seq "$ROUNDS"); do echo "${R[$1,$2,$r]:-0 0 0 0}" | awk -v i="$3" '{print $i}'; done | median
}
table() { # conns
  local c=$1
  echo
  echo "### $c connection(s), $DUR per cell, $THREADS worker thread(s), median of $ROUNDS round(s)"
  echo
  echo "(HTTPS rows: / bare pingora and / nginx are against each terminating TLS.)"
  echo
  echo "| path | req/s | p50 µs | p99 µs | errors | / bare pingora | / nginx | / HTTPS direct |"
  echo "|---|---|---|---|---|---|---|---|"
  local bare nginx hd bt nt
  bare=$(field bare "$c" 1); nginx=$(field nginx "$c" 1); hd=$(field https_direct "$c" 1)
  bt=$(field bare_tls "$c" 1); nt=$(field nginx_tls "$c" 1)
  local row https
  for row in "${http_rows[@]}" "${https_rows[@]}"; do
    https=0; [[ " ${https_rows[*]} " == *" $row "* ]] && https=1
    python3 - "${NAME[$row]}" "$(field "$row" "$c" 1)" "$(field "$row" "$c" 2)" \
      "$(field "$row" "$c" 3)" "$(field "$row" "$c" 4)" "$bare" "$nginx" "$hd" "$https" "$bt" "$nt" <<'PY'
import sys
name, rps, p50, p99, err, bare, nginx, hd, https, bt, nt = sys.argv[1:]
rps, bare, nginx, hd, bt, nt = (float(x) for x in (rps, bare, nginx, hd, bt, nt))
r = lambda d: f"{rps / d:.2f}" if d else "-"
https = https == "1"
print(f"| {name} | {rps:,.0f} | {float(p50):,.0f} | {float(p99):,.0f} | {int(float(err))} | "
      f"{r(bt) if https else r(bare)} | {r(nt) if https else r(nginx)} | {r(hd) if https else ''} |")
PY
  done
}
echo "# credproxy load benchmark, $(date -u +%F), $(nproc) cores, $(uname -r)"
for c in $CONNS; do table "$c"; done
echo
echo "credproxy RSS: idle ${rss_idle} MiB, peak ${rss_peak} MiB"

say "cold storm"
# --- cold storm ----------------------------------------------------------------------------
# A fresh credproxy, an OAuth route whose token is not cached yet, 1,000 requests at once.
SP=$(port); SA=$(port)
sed -e "s/127.0.0.1:$P\$/127.0.0.1:$SP/" -e "s/127.0.0.1:$A\$/127.0.0.1:$SA/" \
  "$tmp/credproxy.yaml" > "$tmp/storm.yaml"
before=$(curl -sf "127.0.0.1:$OO/token-count")
$credproxy run -c "$tmp/storm.yaml" 2>"$tmp/storm.log" &
storm_pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$SA/readyz" >/dev/null && break; sleep 0.1; done
storm=$(oha --no-tui --output-format json -n 1000 -c 1000 -x "http://127.0.0.1:$SP" \
  "http://127.0.0.1:$OO/storm" 2>/dev/null | python3 "$tmp/oha.py" storm)
after=$(curl -sf "127.0.0.1:$OO/token-count")
kill $storm_pid; wait $storm_pid 2>/dev/null || true
echo "cold storm (1,000 requests on 1,000 connections, OAuth token not cached): $storm; token requests: $((after - before))"

say "soak, ${SOAK} s"
# --- soak ----------------------------------------------------------------------------------
# Bearer, OAuth and SigV4 routes in turn, 16 connections, for SOAK seconds.
cat > "$tmp/soak.lua" <<LUA
local ports = { "$O", "$OO", "$OS" }
local i = 0
request = function()
  i = i + 1
  local p = ports[(i % 3) + 1]
  return wrk.format("GET", "http://127.0.0.1:" .. p .. "/soak", { Host = "127.0.0.1:" .. p })
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %.1f %d\n", summary.requests, summary.requests / (summary.duration / 1e6),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status))
end
LUA
soak_start=$(rss $cp_pid VmRSS)
soak=$(wrk -t1 -c16 -d"${SOAK}s" -s "$tmp/soak.lua" "http://127.0.0.1:$P" | awk '/^RESULT/ {printf "%d requests (%.0f/s), %d errors", $2, $3, $4}')
soak_end=$(rss $cp_pid VmRSS)
echo "soak (${SOAK} s, 16 connections, bearer/OAuth/SigV4 in turn): $soak; RSS ${soak_start} MiB at start, ${soak_end} MiB at end"
