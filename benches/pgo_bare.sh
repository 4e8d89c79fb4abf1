#!/usr/bin/env bash
# The bare pingora example built profile-guided like credproxy's image (pgo/build.sh), so that
# issue 17's "within 5% of bare pingora" can be read on the same kind of build for both:
# an instrumented build, a training run (curl through it to the bench origin), then the
# optimised build. Output: target/pgo/bare/use/release/examples/bare_pingora.
#
#   benches/pgo_bare.sh
#   NO_BUILD=1 NEW_CREDPROXY=target/pgo/use/release/credproxy \
#     NEW_BARE=target/pgo/bare/use/release/examples/bare_pingora benches/ab.sh target/release
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
. pgo/common.sh
say() { echo "benches/pgo_bare.sh: $*" >&2; }
pgo_profdata >/dev/null

work=$PWD/target/pgo/bare
say "1/3 instrumented build"
RUSTFLAGS="-Cprofile-generate=$work/data" \
  cargo build --release --locked --example bare_pingora --example origin --target-dir "$work/gen"
pgo_clear "$work/data"
say "2/3 training run"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
# Plain HTTP, and TLS on both sides (load.sh's bare_tls row), as credproxy's training has both.
O=$(port); T=$(port); B=$(port); BT=$(port)
origin=$work/gen/release/examples/origin bare=$work/gen/release/examples/bare_pingora
LLVM_PROFILE_FILE="$tmp/origin-%p.profraw" $origin 127.0.0.1:$O --body 1024 >/dev/null &
LLVM_PROFILE_FILE="$tmp/origin-%p.profraw" $origin 127.0.0.1:$T --body 1024 --tls "$tmp/o.pem" >/dev/null &
self_signed "$tmp/b.pem" "$tmp/b.key"
wait_port $O; wait_port $T
$bare 127.0.0.1:$B 127.0.0.1:$O 1 >/dev/null 2>&1 & bp=$!
$bare 127.0.0.1:$BT 127.0.0.1:$T 1 --tls "$tmp/b.pem" "$tmp/b.key" >/dev/null 2>&1 & bt=$!
wait_port $B; wait_port $BT
# The same count per client as pgo/train.sh gives each of credproxy's paths.
pids=()
for _ in 1 2 3 4; do
  curl -s --max-time 120 -o /dev/null "http://127.0.0.1:$B/bench[1-${PGO_REQUESTS:-3000}]" & pids+=($!)
  curl -sk --max-time 120 -o /dev/null "https://127.0.0.1:$BT/bench[1-${PGO_REQUESTS:-3000}]" & pids+=($!)
done
wait "${pids[@]}"
# SIGINT is pingora's quick shutdown: the process exits, which writes the profile.
kill -INT $bp $bt; wait $bp $bt || true
profile=$(pgo_merge "$work/data" "$work" bare)
say "3/3 optimised build"
RUSTFLAGS=$(pgo_use_flags "$profile") cargo build --release --locked --example bare_pingora --target-dir "$work/use"
say "built $work/use/release/examples/bare_pingora"
