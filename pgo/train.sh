#!/usr/bin/env bash
# The training run of a profile-guided build (pgo/build.sh): drives an instrumented credproxy
# through the paths it spends its time on in production, with curl and the bench origin only
# (no load generator needed): a static bearer, a cached OAuth token, SigV4 with and
# without a body, HTTPS intercepted and tunnelled, a sidecar route, refusals, the admin API.
#
#   pgo/train.sh CREDPROXY ORIGIN      (CREDPROXY built with -Cprofile-generate)
#
# Counts are what matters to the compiler, not time: every path runs a few thousand times, over
# keep-alive connections, a few at once. Bounded: each curl has a deadline.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: pgo/train.sh CREDPROXY ORIGIN" >&2; exit 2; }
bin=$(realpath "$1"); origin=$(realpath "$2")
N=${PGO_REQUESTS:-3000}
tmp=$(mktemp -d); chmod 755 "$tmp"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
cd "$(dirname "$0")/.."
. benches/common.sh   # port, wait_port, bench_proxy

# The origin's own profile is not credproxy's: it goes elsewhere, unmerged.
O=$(port); OO=$(port); OS=$(port); T=$(port); TU=$(port)
export LLVM_PROFILE_FILE="$tmp/origin-%p.profraw"
"$origin" 127.0.0.1:$O --body 1024 >/dev/null &
"$origin" 127.0.0.1:$OO --body 1024 >/dev/null &
"$origin" 127.0.0.1:$OS --body 1024 >/dev/null &
"$origin" 127.0.0.1:$T --body 1024 --tls "$tmp/origin-ca.pem" >/dev/null &
"$origin" 127.0.0.1:$TU --body 1024 --tls "$tmp/origin-ca-2.pem" >/dev/null &
for p in $O $OO $OS $T $TU; do wait_port $p; done
unset LLVM_PROFILE_FILE

bench_secrets; export RUST_LOG=warn
P=$(port); A=$(port)
cat > "$tmp/credproxy.yaml" <<YAML
$(bench_proxy "$bin" "$tmp" $P $A)
  max_body: 1MiB
$(bench_credentials $O $OO $OS $T)
  - { path: /side/*, upstream: "http://127.0.0.1:$O", strip_prefix: /side, credential: bearer }
YAML
"$bin" run -c "$tmp/credproxy.yaml" 2>"$tmp/credproxy.log" & cp=$!
wait_port $P
for _ in $(seq 100); do curl -sf "127.0.0.1:$A/readyz" >/dev/null && break; sleep 0.1; done

# One request first: a path that fails would train its error branch instead.
expect() { # status, then curl arguments
  local want=$1 got; shift
  got=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$@" || true)
  [ "$got" = "$want" ] || { echo "pgo/train.sh: $* answered $got, not $want" >&2; cat "$tmp/credproxy.log" >&2; exit 1; }
}
# Four clients at once per path, each over one kept-alive connection (curl's URL ranges).
drive() { # what, then curl arguments; the URL's last part is a range, $want the status
  local what=$1 pids=() t0=$SECONDS; shift
  local first=("${@:1:$#-1}") url=${!#}
  expect "$want" "${first[@]}" "${url%%[*}1"
  for _ in 1 2 3 4; do
    curl -s --max-time 300 -o /dev/null "$@" >/dev/null 2>&1 & pids+=($!)
  done
  wait "${pids[@]}" || true
  echo "pgo/train.sh: $what ($((SECONDS - t0)) s)" >&2
}
r="[1-$N]"; want=200
head -c 65536 /dev/zero > "$tmp/body"
drive "static bearer" -x "127.0.0.1:$P" "http://127.0.0.1:$O/b$r"
drive "cached OAuth token" -x "127.0.0.1:$P" "http://127.0.0.1:$OO/b$r"
drive "SigV4" -x "127.0.0.1:$P" "http://127.0.0.1:$OS/b$r"
drive "SigV4, 64 KiB bodies" -x "127.0.0.1:$P" -T "$tmp/body" "http://127.0.0.1:$OS/b[1-$((N / 10))]"
drive "HTTPS intercepted" -x "127.0.0.1:$P" --cacert "$tmp/ca/ca.pem" "https://127.0.0.1:$T/b$r"
drive "HTTPS tunnelled" -x "127.0.0.1:$P" --cacert "$tmp/origin-ca-2.pem" "https://127.0.0.1:$TU/b$r"
drive "sidecar route" "http://127.0.0.1:$P/side/b$r"
want=502; drive "refusals" -x "127.0.0.1:$P" "http://127.0.0.1:9/b[1-$((N / 10))]"
want=200; drive "admin" "http://127.0.0.1:$A/metrics?[1-$((N / 30))]"
# The profile is written when the process exits, which SIGTERM lets it do (graceful shutdown).
kill -TERM $cp
wait $cp || true
