#!/usr/bin/env bash
# Quick added-latency measurement (issue 2): wrk at one connection against the mock upstream directly and through the
# gateway, in alternating rounds of the same run, non-streamed and streamed (8 chunks, no delay). Prints p50/p99 of
# each and the difference. This is a quick check, not the benchmark harness: no CPU pinning, noisy on a shared machine.
#
#   bench/quick-latency.sh [seconds-per-round] [rounds]
source "$(dirname "$0")/lib.sh"
secs=${1:-5}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
bench_setup 18091 18090
bench_start

for kind in plain stream; do
  stream=false; [ $kind = stream ] && stream=true
  cat > "$tmp/$kind.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","stream":$stream,"messages":[{"role":"user","content":"Say hello"}]}'
LUA
done

for kind in plain stream; do
  for target in direct gateway; do : >"$tmp/$kind.$target.p50"; : >"$tmp/$kind.$target.p99"; done
  for _ in $(seq "$rounds"); do
    for target in direct gateway; do
      host=$mock; [ $target = gateway ] && host=$gw
      out=$(wrk -t1 -c1 -d"${secs}s" --latency -s "$tmp/$kind.lua" "http://$host/v1/chat/completions")
      echo "$out" | pct 50 >>"$tmp/$kind.$target.p50"
      echo "$out" | pct 99 >>"$tmp/$kind.$target.p99"
    done
  done
done

printf "\nmedian of %s rounds x %ss, c=1 (microseconds)\n" "$rounds" "$secs"
printf "%-8s %10s %10s %10s %10s %10s %10s\n" request direct_p50 gw_p50 added_p50 direct_p99 gw_p99 added_p99
for kind in plain stream; do
  d50=$(median <"$tmp/$kind.direct.p50"); g50=$(median <"$tmp/$kind.gateway.p50")
  d99=$(median <"$tmp/$kind.direct.p99"); g99=$(median <"$tmp/$kind.gateway.p99")
  awk -v k=$kind -v d50="$d50" -v g50="$g50" -v d99="$d99" -v g99="$g99" \
    'BEGIN { printf "%-8s %10s %10s %10.1f %10s %10s %10.1f\n", k, d50, g50, g50 - d50, d99, g99, g99 - d99 }'
done
