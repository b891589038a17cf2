#!/usr/bin/env bash
# The four-plugin chain (auth → router → redact → cost) against the same gateway without plugins, in one run, with
# the plugin-cost budgets of ../shared/DESIGN.md and the isolation issue: CPU per request at c=8 ≤ 2× no plugins,
# added latency at c=1 ≤ +100 µs p50 and ≤ +150 µs p99 over no plugins, throughput at saturation (c=32) ≥ 50% of no
# plugins — for the chain in its shipped isolation modes (examples/weir.toml: auth and router `shared`, redact and
# cost `tenant`); the same chain with a fresh instance per request (`request`) is reported beside it. The gateways
# run pinned to CPU 0 and the mock and wrk to CPU 1 (PIN=0 to not pin), so the CPU figures are the gateway's own.
# `make bench` runs it as its `chain` section.
#
#   bench/chain.sh                       the release build of this tree, with verdicts
#   bench/chain.sh A=BIN[:GUESTS] B=...  an A/B: each variant's binary (and plugin directory, default target/guests)
#                                        measured in the same rounds, alternating; one table per variant
#
# Besides the closed-loop runs (wrk keeps c requests in flight), CPU per request is also measured at one offered rate
# for every gateway (8 connections each pausing DELAY_MS between requests, ~2,000 requests/s by default): at
# saturation the no-plugin gateway's client side is never idle, at a fixed rate both sides idle alike, so the ratio is
# not skewed by who pays for waking whom.
#
# Knobs: SECS (seconds per wrk run, default 5), ROUNDS (alternating rounds, default 3), DELAY_MS (default 4), MODES (isolation of the
# chain, each a column: default "shipped request"; see `chain` in lib.sh), PIN (default 1), STREAM=N (streamed answers
# of N text deltas instead of non-streamed ones; the budgets are for non-streamed), ONLY="router ..." (only these
# plugins of the chain: what one plugin costs through the gateway, against `weir plugin bench` in process). Every gateway uses `[kv]
# backend = "memory"` so the store's disk writes are not in the figures (bench/state.sh measures the backends); KV=file
# gives each gateway a file store of its own (the default backend), KV=redis a `redis-server` on loopback (each
# gateway with its own journal): what the chain's kv writes and round trips add.
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
# only: the chain's [[plugins]] blocks named in $ONLY (all of them when it is empty).
only() {
  awk -v keep=" ${ONLY:-} " 'function out() { if (blk != "" && (keep == "  " || index(keep, " " name " "))) printf "%s", blk }
    /^\[\[plugins\]\]/ { out(); blk = ""; name = "" }
    /^name = / { name = $3; gsub(/"/, "", name) }
    { blk = blk $0 "\n" } END { out() }'
}

MODES=${MODES:-shipped request}
pin_gw=""; pin_load=""
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_gw="taskset -c 0"; pin_load="taskset -c 1"
fi
bench_setup 18301 18300
kv_backend=${KV:-memory}
if [ "$kv_backend" = redis ]; then
  command -v redis-server >/dev/null || make -s need-redis
  redis_port=18308
  redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no >"$tmp/redis.log" 2>&1 &
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$redis_port) 2>/dev/null && break; sleep 0.05; done
fi
# kv_toml NAME: the [kv] section of gateway NAME.
kv_toml() {
  if [ "$kv_backend" = redis ]; then
    printf '[kv]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s/0"\njournal = "%s"\n' "$redis_port" "$tmp/journal-$1"
  elif [ "$kv_backend" = file ]; then
    printf '[kv]\npath = "%s"\n' "$tmp/kv-$1"
  else
    printf '[kv]\nbackend = "memory"\n'
  fi
}
$pin_load "$bin" mock-upstream --listen "$mock" >"$tmp/mock.log" 2>&1 &
bench_wait "http://$mock/v1/models"
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=("this=$PWD/$bin:$guests")
names=()
port=18310
for v in "${variants[@]}"; do
  name=${v%%=*}; spec=${v#*=}
  vbin=${spec%%:*}; vguests=${spec#*:}; [ "$vguests" != "$spec" ] || vguests=$guests
  names+=("$name")
  bin=$vbin
  WEIR_ENV=$pin_gw bench_gateway "$name-none" "127.0.0.1:$port" "$(kv_toml "$name-none")" ""
  echo "127.0.0.1:$port" >"$tmp/$name-none.addr"; port=$((port + 1))
  for m in $MODES; do
    WEIR_ENV=$pin_gw bench_gateway "$name-$m" "127.0.0.1:$port" "$(kv_toml "$name-$m")" \
      "$(chain "$m" | only | sed "s#$guests/#$vguests/#")"
    echo "127.0.0.1:$port" >"$tmp/$name-$m.addr"; port=$((port + 1))
  done
done
STREAM=${STREAM:-}
chunks_line=""; stream=false
[ -z "$STREAM" ] || { chunks_line="wrk.headers[\"x-mock-chunks\"] = \"$STREAM\""; stream=true; }
cat >"$tmp/plain.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-weir-demo"
$chunks_line
wrk.body = '{"model":"gpt-4o-mini","max_tokens":64,"stream":$stream,"messages":[{"role":"user","content":"Say hello to jane@example.com"}]}'
LUA
cp "$tmp/plain.lua" "$tmp/rate.lua"
echo "function delay() return ${DELAY_MS:-4} end" >>"$tmp/rate.lua"
ticks() { awk '{print $14 + $15}' "/proc/$(pgrep -f "serve --config $tmp/$1.toml")/stat"; }
# run GATEWAY CONNS [rate]: one wrk run; appends p50, p99, requests/s and CPU µs per request to $tmp/GATEWAY.cCONNS
# (with `rate`: at the fixed offered rate, to $tmp/GATEWAY.rate).
run() {
  local o t0 t1 reqs bad script=plain dest="$tmp/$1.c$2"
  [ -z "${3:-}" ] || { script=rate; dest="$tmp/$1.rate"; }
  t0=$(ticks "$1")
  o=$($pin_load wrk -t"$([ "$2" -ge 2 ] && echo 2 || echo 1)" -c"$2" -d"${SECS}s" --latency -s "$tmp/$script.lua" \
    "http://$(cat "$tmp/$1.addr")/v1/chat/completions")
  t1=$(ticks "$1")
  reqs=$(echo "$o" | awk '/requests in/ {print $1}')
  bad=$(echo "$o" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
  [ "$bad" = 0 ] || { echo "chain: $1 c=$2 had $bad failed requests" >&2; cat "$tmp/$1.log" >&2; exit 1; }
  echo "$(echo "$o" | pct 50) $(echo "$o" | pct 99) $(echo "$o" | awk '/Requests\/sec/ {printf "%.0f", $2}') \
$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')" >>"$dest"
}
for _ in $(seq "$ROUNDS"); do
  for c in 1 8 32; do
    for n in "${names[@]}"; do run "$n-none" $c; for m in $MODES; do run "$n-$m" $c; done; done
  done
  for n in "${names[@]}"; do run "$n-none" 8 rate; for m in $MODES; do run "$n-$m" 8 rate; done; done
done
col() { awk -v k="$2" '{print $k}' "$tmp/$1" | median; } # col FILE FIELD: the median over rounds
verdict() { awk -v v="$1" -v b="$2" -v up="${3:-}" 'BEGIN { ok = up ? v >= b : v <= b; print ok ? "met" : "missed" }'; }

plugins=${ONLY:-auth router redact cost}
say "## ${ONLY:+Only }$(echo "$plugins" | sed 's/ / → /g') through the gateway vs no plugins, ${STREAM:+streamed ($STREAM deltas)}${STREAM:-non-streamed} (median of $ROUNDS alternating rounds of ${SECS}s, wrk)"
say ""
say "Chain: $(echo "$plugins" | sed 's/ / → /g'), \`[kv] backend = \"$kv_backend\"\`$([ "$kv_backend" != redis ] || echo " (a redis-server on loopback)"), one column per isolation: $MODES"
say "(\`shipped\`: auth and router \`shared\`, redact and cost \`tenant\`, as in examples/weir.toml; \`request\`: a fresh"
say "instance of each per request). ${pin_gw:+Gateways pinned to CPU 0, the mock and wrk to CPU 1. }Added latency is"
say "the chain's percentile minus the no-plugin gateway's at c=1; CPU is the gateway's user+system time per request at"
say "c=8; saturation is requests/s at c=32. Budgets${ONLY:+ (for the four)} apply to every column."
say ""
for n in "${names[@]}"; do
  [ ${#names[@]} -eq 1 ] || { say "### $n"; say ""; }
  n50=$(col "$n-none.c1" 1); n99=$(col "$n-none.c1" 2); ncpu=$(col "$n-none.c8" 4); nrps=$(col "$n-none.c32" 3)
  head="| measure | no plugins |"; rule="|---|---|"
  r50="| c=1 p50 µs (added) | $n50 |"; r99="| c=1 p99 µs (added) | $n99 |"; rcpu="| CPU µs per request, c=8 (× none) | $ncpu |"
  r8="| requests/s, c=8 | $(col "$n-none.c8" 3) |"; r32="| requests/s at saturation, c=32 (× none) | $nrps |"
  nrate=$(col "$n-none.rate" 4)
  rrate="| CPU µs per request at a fixed rate of ~$(col "$n-none.rate" 3)/s (× none) | $nrate |"
  for m in $MODES; do
    c50=$(col "$n-$m.c1" 1); c99=$(col "$n-$m.c1" 2); ccpu=$(col "$n-$m.c8" 4); crps=$(col "$n-$m.c32" 3)
    a50=$(awk -v a="$c50" -v b="$n50" 'BEGIN {printf "%+.0f", a - b}'); a99=$(awk -v a="$c99" -v b="$n99" 'BEGIN {printf "%+.0f", a - b}')
    xcpu=$(awk -v a="$ccpu" -v b="$ncpu" 'BEGIN {printf "%.2f", a / b}'); xrps=$(awk -v a="$crps" -v b="$nrps" 'BEGIN {printf "%.2f", a / b}')
    head="$head $m |"; rule="$rule---|"
    r50="$r50 $c50 ($a50, $(verdict "$a50" 100)) |"; r99="$r99 $c99 ($a99, $(verdict "$a99" 150)) |"
    rcpu="$rcpu $ccpu (${xcpu}×, $(verdict "$xcpu" 2)) |"; r8="$r8 $(col "$n-$m.c8" 3) |"
    r32="$r32 $crps (${xrps}, $(verdict "$xrps" 0.5 up)) |"
    crate=$(col "$n-$m.rate" 4); xrate=$(awk -v a="$crate" -v b="$nrate" 'BEGIN {printf "%.2f", a / b}')
    rrate="$rrate $crate (${xrate}×, $(verdict "$xrate" 2)) |"
  done
  say "$head budget |"; say "$rule---|"
  say "$r50 ≤ +100 |"; say "$r99 ≤ +150 |"; say "$rcpu ≤ 2× |"; say "$rrate ≤ 2× |"; say "$r8 – |"
  say "$r32 ≥ 0.50 |"
  say ""
done
