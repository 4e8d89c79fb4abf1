#!/usr/bin/env bash
# Before/after of one change, in time: credproxy's bearer route and bare pingora, each built
# at REV and at the working tree, with nginx beside them, measured in paired rounds.
#
#   benches/ab.sh f58a2a4                    # 10 rounds of wrk -c16 -d3s per cell
#   ROUNDS=16 C=16 DUR=3s benches/ab.sh HEAD~3
#   NO_BUILD=1 NEW_CREDPROXY=target/pgo/use/release/credproxy benches/ab.sh target/release
#       (REV may be a directory of binaries already built; NEW_CREDPROXY and NEW_BARE replace
#       the new credproxy and bare pingora binaries, NO_BUILD=1 uses target/release as it is:
#       here a profile-guided build against the plain one, with bare pingora measured against
#       itself as a control; benches/pgo_bare.sh builds a profile-guided bare pingora)
#
# The machines here are shared and noisy: one cell can swing 0.6-2.4x against its neighbour.
# So each round runs every cell once (the order rotated round to round), each ratio is taken
# within its round, and the medians are printed, for throughput and for CPU per request (the
# process's utime + stime over the cell). REV is built in a worktree with a target directory
# of its own (~/.cache/credproxy-bench/ab), so the first run takes a full release build.
# Needs wrk and nginx (benches/load.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
[ $# -eq 1 ] || { echo "usage: benches/ab.sh REV" >&2; exit 2; }
ROUNDS=${ROUNDS:-10}; DUR=${DUR:-3s}; C=${C:-16}
say() { echo "[$(date +%T)] $*" >&2; }

cache=$HOME/.cache/credproxy-bench/ab
old_src=$cache/src
build() { cargo build --release --quiet --bin credproxy --example origin --example bare_pingora "$@"; }
if [ -d "$1" ]; then
  OLD=$1   # binaries built already (credproxy, examples/origin, examples/bare_pingora)
else
  rev=$(git rev-parse --verify "$1^{commit}")
  say "building $rev (release)"
  git worktree remove --force "$old_src" 2>/dev/null || true
  git worktree add -q --detach "$old_src" "$rev"
  (cd "$old_src" && build --target-dir "$cache/target")
  OLD=$cache/target/release
fi
[ -n "${NO_BUILD:-}" ] || { say "building the working tree (release)"; build; }
NEW=target/release

tmp=$(mktemp -d); chmod 755 "$tmp"
pids=()
cleanup() {
  # nginx with its workers: a master killed alone leaves them running, holding this script's
  # stdout open (so `benches/ab.sh REV | tail` never ended).
  nginx_stop "$tmp/nginx"
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
  git worktree remove --force "$old_src" 2>/dev/null || true
}
trap cleanup EXIT
declare -A URL PID

O=$(port); $NEW/examples/origin 127.0.0.1:$O --body 1024 >/dev/null & pids+=($!)
wait_port $O
for v in new old; do
  bin=$NEW; [ $v = old ] && bin=$OLD
  bare=$bin/examples/bare_pingora; [ $v = new ] && bare=${NEW_BARE:-$bare}
  p=$(port); $bare 127.0.0.1:$p 127.0.0.1:$O 1 >/dev/null 2>&1 &
  pids+=($!); PID[bare_$v]=$!; URL[bare_$v]=http://127.0.0.1:$p
  p=$(port)
  cat > "$tmp/$v.yaml" <<YAML
proxy:
  listen: 127.0.0.1:$p
  admin: 127.0.0.1:$(port)
  threads: 1
  egress: { allow: [127.0.0.0/8] }
  limits: { max_connections_per_client: 2048 }
credentials:
  bearer: { type: bearer, token: "\${BENCH_TOKEN}" }
routes:
  - { host: "127.0.0.1:$O", credential: bearer }
YAML
  cp=$bin/credproxy; [ $v = new ] && cp=${NEW_CREDPROXY:-$cp}
  BENCH_TOKEN=bench-static-token-0001 RUST_LOG=warn $cp run -c "$tmp/$v.yaml" 2>"$tmp/$v.log" &
  pids+=($!); PID[$v]=$!; URL[$v]=http://127.0.0.1:$p
done
NG=$(port); nginx_conf "$tmp/nginx" $NG $O 1
nginx -c "$tmp/nginx/nginx.conf" & pids+=($!)
URL[nginx]=http://127.0.0.1:$NG
for u in "${URL[@]}"; do wait_port "${u##*:}"; done

# wrk through a forward proxy needs an absolute-form request line.
result='done = function(s, l, r) io.write(string.format("RESULT %.1f %.1f %d\n",
  s.requests / (s.duration / 1e6), l:percentile(50),
  s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout + s.errors.status)) end'
printf 'wrk.path = "http://127.0.0.1:%s/bench"\nwrk.headers["Host"] = "127.0.0.1:%s"\n%s\n' \
  "$O" "$O" "$result" > "$tmp/fwd.lua"
printf 'wrk.path = "/bench"\n%s\n' "$result" > "$tmp/rev.lua"
lua() { [ "$1" = nginx ] && echo "$tmp/rev.lua" || echo "$tmp/fwd.lua"; }
ticks() { # utime + stime of the cell's process (nginx: its worker)
  local p=${PID[$1]:-}
  [ -n "$p" ] || p=$(pgrep -f "nginx: worker" -P "$(cat "$tmp/nginx/nginx.pid")" | head -1)
  cpu_ticks "$p"
}
keys=(new old bare_new bare_old nginx)
hz=$(getconf CLK_TCK)
for k in "${keys[@]}"; do wrk -t1 -c"$C" -d1s -s "$(lua $k)" "${URL[$k]}" >/dev/null; done
for r in $(seq "$ROUNDS"); do
  line="round $r"
  for i in "${!keys[@]}"; do
    k=${keys[$(( (i + r) % ${#keys[@]} ))]}
    t0=$(ticks $k)
    res=$(wrk -t1 -c"$C" -d"$DUR" -s "$(lua $k)" "${URL[$k]}" 2>&1 | awk '/^RESULT/ {print $2, $3, $4}')
    t1=$(ticks $k)
    read -r rps p50 errs <<< "$res"
    cpu=$(python3 -c "print(round(($t1 - $t0) / $hz / ($rps * ${DUR%s}) * 1e6, 2))")
    line="$line $k=$rps,$p50,$errs,$cpu"
  done
  echo "$line"
done | tee "$tmp/rounds"

python3 - "$tmp/rounds" <<'PY'
import re, statistics as st, sys
rows = [dict((k, tuple(map(float, v.split(',')))) for k, v in re.findall(r'(\w+)=([\d.,]+)', l))
        for l in open(sys.argv[1]) if l.startswith('round')]
med = lambda f: st.median(f(r) for r in rows)
print("\n| cell | req/s | p50 µs | CPU µs/request | errors |\n|---|---|---|---|---|")
for k in rows[0]:
    print(f"| {k} | {med(lambda r: r[k][0]):,.0f} | {med(lambda r: r[k][1]):,.0f} | "
          f"{med(lambda r: r[k][3]):.2f} | {sum(r[k][2] for r in rows):.0f} |")
print("\n| ratio, median of per-round ratios | throughput | CPU per request |\n|---|---|---|")
for a, b in [('new', 'old'), ('bare_new', 'bare_old'), ('new', 'bare_new'), ('new', 'nginx'),
             ('bare_new', 'nginx')]:
    t = [r[a][0] / r[b][0] for r in rows]
    c = [r[a][3] / r[b][3] for r in rows]
    print(f"| {a} / {b} | {st.median(t):.3f} ({min(t):.2f}-{max(t):.2f}) | "
          f"{st.median(c):.3f} ({min(c):.2f}-{max(c):.2f}) |")
PY
