#!/usr/bin/env bash
# The four-plugin chain (auth → router → redact → cost, fresh instance per request) against the same gateway without
# plugins, in one run, with the plugin-cost budgets of ../shared/DESIGN.md and the plugin-cost issue: CPU per request
# at c=8 ≤ 2× no plugins, added latency at c=1 ≤ +100 µs p50 and ≤ +150 µs p99 over no plugins, throughput at
# saturation (c=32) ≥ 50% of no plugins. `make bench` runs it as its `chain` section.
#
#   bench/chain.sh                       the release build of this tree, with verdicts
#   bench/chain.sh A=BIN[:GUESTS] B=...  an A/B: each variant's binary (and plugin directory, default target/guests)
#                                        measured in the same rounds, alternating; one table per variant
#
# Knobs: SECS (seconds per wrk run, default 5), ROUNDS (alternating rounds, default 3), STREAM=N (streamed answers
# of N text deltas instead of non-streamed ones; the budgets are for non-streamed), ONLY="router ..." (only these
# plugins of the chain: what one plugin costs through the gateway, against `weir plugin bench` in process). Every gateway uses `[kv]
# backend = "memory"` so the store's disk writes are not in the figures (bench/state.sh measures the backends).
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

bench_setup 18301 18300
"$bin" mock-upstream --listen "$mock" >"$tmp/mock.log" 2>&1 &
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
  bench_gateway "$name-none" "127.0.0.1:$port" $'[kv]\nbackend = "memory"' ""
  echo "127.0.0.1:$port" >"$tmp/$name-none.addr"; port=$((port + 1))
  bench_gateway "$name-chain" "127.0.0.1:$port" $'[kv]\nbackend = "memory"' "$(chain "" | only | sed "s#$guests/#$vguests/#")"
  echo "127.0.0.1:$port" >"$tmp/$name-chain.addr"; port=$((port + 1))
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
ticks() { awk '{print $14 + $15}' "/proc/$(pgrep -f "serve --config $tmp/$1.toml")/stat"; }
# run GATEWAY CONNS: one wrk run; appends p50, p99, requests/s and CPU µs per request to $tmp/GATEWAY.cCONNS.
run() {
  local o t0 t1 reqs bad
  t0=$(ticks "$1")
  o=$(wrk -t"$([ "$2" -ge 2 ] && echo 2 || echo 1)" -c"$2" -d"${SECS}s" --latency -s "$tmp/plain.lua" \
    "http://$(cat "$tmp/$1.addr")/v1/chat/completions")
  t1=$(ticks "$1")
  reqs=$(echo "$o" | awk '/requests in/ {print $1}')
  bad=$(echo "$o" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
  [ "$bad" = 0 ] || { echo "chain: $1 c=$2 had $bad failed requests" >&2; cat "$tmp/$1.log" >&2; exit 1; }
  echo "$(echo "$o" | pct 50) $(echo "$o" | pct 99) $(echo "$o" | awk '/Requests\/sec/ {printf "%.0f", $2}') \
$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')" >>"$tmp/$1.c$2"
}
for _ in $(seq "$ROUNDS"); do
  for c in 1 8 32; do
    for n in "${names[@]}"; do run "$n-none" $c; run "$n-chain" $c; done
  done
done
col() { awk -v k="$2" '{print $k}' "$tmp/$1" | median; } # col FILE FIELD: the median over rounds
verdict() { awk -v v="$1" -v b="$2" -v up="${3:-}" 'BEGIN { ok = up ? v >= b : v <= b; print ok ? "met" : "missed" }'; }

plugins=${ONLY:-auth router redact cost}
say "## ${ONLY:+Only }$(echo "$plugins" | sed 's/ / → /g') through the gateway vs no plugins, ${STREAM:+streamed ($STREAM deltas)}${STREAM:-non-streamed} (median of $ROUNDS alternating rounds of ${SECS}s, wrk)"
say ""
say "Chain: $(echo "$plugins" | sed 's/ / → /g'), a fresh instance of each per request, \`[kv] backend = \"memory\"\`${ONLY:+ (the budgets are for the four)}."
say "Added latency is the chain's percentile minus the no-plugin gateway's at c=1; CPU is the gateway's user+system"
say "time per request at c=8; saturation is requests/s at c=32."
say ""
for n in "${names[@]}"; do
  [ ${#names[@]} -eq 1 ] || { say "### $n"; say ""; }
  n50=$(col "$n-none.c1" 1); n99=$(col "$n-none.c1" 2); c50=$(col "$n-chain.c1" 1); c99=$(col "$n-chain.c1" 2)
  ncpu=$(col "$n-none.c8" 4); ccpu=$(col "$n-chain.c8" 4); nrps=$(col "$n-none.c32" 3); crps=$(col "$n-chain.c32" 3)
  a50=$(awk -v a="$c50" -v b="$n50" 'BEGIN {printf "%+.0f", a - b}'); a99=$(awk -v a="$c99" -v b="$n99" 'BEGIN {printf "%+.0f", a - b}')
  rcpu=$(awk -v a="$ccpu" -v b="$ncpu" 'BEGIN {printf "%.2f", a / b}'); rrps=$(awk -v a="$crps" -v b="$nrps" 'BEGIN {printf "%.2f", a / b}')
  say "| measure | no plugins | ${ONLY:+only }$(echo "$plugins" | sed 's/ / → /g') | chain vs none | budget | verdict |"
  say "|---|---|---|---|---|---|"
  say "| c=1 p50 µs | $n50 | $c50 | $a50 | ≤ +100 | $(verdict "$a50" 100) |"
  say "| c=1 p99 µs | $n99 | $c99 | $a99 | ≤ +150 | $(verdict "$a99" 150) |"
  say "| CPU µs per request, c=8 | $ncpu | $ccpu | ${rcpu}× | ≤ 2× | $(verdict "$rcpu" 2) |"
  say "| requests/s, c=8 | $(col "$n-none.c8" 3) | $(col "$n-chain.c8" 3) | – | – | – |"
  say "| requests/s at saturation, c=32 | $nrps | $crps | $rrps | ≥ 0.50 | $(verdict "$rrps" 0.5 up) |"
  say ""
done
