#!/usr/bin/env bash
# Builds target/release/credproxy with profile-guided optimisation: an instrumented build,
# a training run (pgo/train.sh), then the release build optimised with what it recorded.
# The Docker image ships this build: the optimised binary serves ~1.2x the requests of the
# plain release build (BENCHMARKS.md, "Ninth session").
#
#   pgo/build.sh            (needs curl and python3; installs rustup's llvm-tools if missing)
#   CARGO_TARGET_DIR=target/pgo/use pgo/build.sh     (the optimised build elsewhere)
#
# The profile is named by its content: cargo tracks RUSTFLAGS, not the file they point to, so
# a new profile at an old path would leave already built crates optimised for the old one.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "pgo/build.sh: $*" >&2; }

profdata() { find "$(rustc --print sysroot)" -name llvm-profdata -type f 2>/dev/null | head -1; }
if [ -z "$(profdata)" ]; then
  say "installing rustup's llvm-tools (llvm-profdata)"
  rustup component add llvm-tools >&2
fi
merge=$(profdata)
[ -n "$merge" ] || { say "llvm-profdata not found in $(rustc --print sysroot)"; exit 1; }

work=$PWD/target/pgo
say "1/3 instrumented build"
# Two builds: an example turns on the dev-dependencies' features (tokio's test-util among
# them), so built together the trained binary would not be the code the profile is used on.
export RUSTFLAGS="-Cprofile-generate=$work/data"
cargo build --release --locked --bin credproxy --target-dir "$work/gen"
cargo build --release --locked --example origin --target-dir "$work/gen"
unset RUSTFLAGS
# Without --target, RUSTFLAGS instrument build scripts and proc macros too, and each run of
# them during the builds above left a profile here (30 files in one build). Merged in, their
# counts made library code they share with credproxy look hot, and the optimised build's
# compile time exploded (over 26 minutes in register allocation once, in the SLP vectoriser
# another time): only the training run's profile is kept.
rm -rf "$work/data"; mkdir -p "$work/data"
say "2/3 training run"
pgo/train.sh "$work/gen/release/credproxy" "$work/gen/release/examples/origin"
"$merge" merge -o "$work/merged.profdata" "$work/data"
sum=$(sha256sum "$work/merged.profdata" | cut -c1-16)
profile=$work/credproxy-$sum.profdata
mv "$work/merged.profdata" "$profile"
say "3/3 optimised build"
# Function specialisation off: even with a clean profile, register allocation on one
# specialised clone of brotli's decoder (linked through pingora-core, never run here) took
# 2.5 minutes; without the clones credproxy's last step takes ~4 minutes.
RUSTFLAGS="-Cprofile-use=$profile -Cllvm-args=-funcspec-max-iters=0" \
  cargo build --release --locked --bin credproxy
say "built ${CARGO_TARGET_DIR:-target}/release/credproxy with $profile"
