#!/usr/bin/env bash
# Builds target/release/credproxy with profile-guided optimisation: an instrumented build,
# a training run (pgo/train.sh), then the release build optimised with what it recorded.
# The Docker image ships this build: the optimised binary serves ~1.2x the requests of the
# plain release build (BENCHMARKS.md, "Ninth session").
#
#   pgo/build.sh            (needs curl and python3; installs rustup's llvm-tools if missing)
#   CARGO_TARGET_DIR=target/pgo/use pgo/build.sh     (the optimised build elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
. pgo/common.sh
say() { echo "pgo/build.sh: $*" >&2; }
pgo_profdata >/dev/null

work=$PWD/target/pgo
say "1/3 instrumented build"
# Two builds: an example turns on the dev-dependencies' features (tokio's test-util among
# them), so built together the trained binary would not be the code the profile is used on.
export RUSTFLAGS="-Cprofile-generate=$work/data"
cargo build --release --locked --bin credproxy --target-dir "$work/gen"
cargo build --release --locked --example origin --target-dir "$work/gen"
unset RUSTFLAGS
pgo_clear "$work/data"
say "2/3 training run"
pgo/train.sh "$work/gen/release/credproxy" "$work/gen/release/examples/origin"
profile=$(pgo_merge "$work/data" "$work" credproxy)
say "3/3 optimised build"
RUSTFLAGS=$(pgo_use_flags "$profile") cargo build --release --locked --bin credproxy
say "built ${CARGO_TARGET_DIR:-target}/release/credproxy with $profile"
