# shellcheck shell=bash
# The profile-guided build's shared steps, sourced by pgo/build.sh (the image's build),
# benches/pgo_bare.sh (bare pingora built the same way) and .ci/setup.

# Prints the path of rustup's llvm-profdata, installing the llvm-tools component if missing.
pgo_profdata() {
  local path; path=$(_pgo_find_profdata)
  if [ -z "$path" ]; then
    echo "pgo: installing rustup's llvm-tools (llvm-profdata)" >&2
    rustup component add llvm-tools >&2
    path=$(_pgo_find_profdata)
  fi
  [ -n "$path" ] || { echo "pgo: llvm-profdata not found in $(rustc --print sysroot)" >&2; return 1; }
  echo "$path"
}
_pgo_find_profdata() {
  find "$(rustc --print sysroot)" -name llvm-profdata -type f 2>/dev/null | head -1
}

# Empties the profile directory DIR between the instrumented builds and the training run.
# Without --target, RUSTFLAGS instrument build scripts and proc macros too, and each run of
# them during the instrumented builds leaves a profile in DIR (30 files in one build). Merged
# in, their counts made library code they share with credproxy look hot, and the optimised
# build's compile time exploded (over 26 minutes in register allocation once, in the SLP
# vectoriser another time): only the training run's profile may be kept.
pgo_clear() {
  rm -rf "$1"; mkdir -p "$1"
}

# Merges the profiles in DIR into WORK/NAME-<hash>.profdata and prints that path. The name
# carries the content's hash: cargo tracks RUSTFLAGS, not the file they point to, so a new
# profile at an old path would leave already built crates optimised for the old one.
pgo_merge() { # DIR WORK NAME
  local merged="$2/merged.profdata" profdata profile
  profdata=$(pgo_profdata) || return 1
  "$profdata" merge -o "$merged" "$1" >&2 || return 1
  profile="$2/$3-$(sha256sum "$merged" | cut -c1-16).profdata"
  mv "$merged" "$profile" || return 1
  echo "$profile"
}

# RUSTFLAGS for the optimised build with PROFILE. Function specialisation off: even with a
# clean profile, register allocation on one specialised clone of brotli's decoder (linked
# through pingora-core, never run here) took 2.5 minutes; without the clones credproxy's last
# step takes ~4 minutes.
pgo_use_flags() {
  echo "-Cprofile-use=$1 -Cllvm-args=-funcspec-max-iters=0"
}
