#!/usr/bin/env bash
# Does a spinning plugin slow other requests? wrk at one connection sends normal requests through a gateway whose
# plugin spins until its deadline (20 ms) on requests marked `x-misbehave: loop`; rounds alternate between no
# background load and two background clients sending only such spinning requests. Prints p50/p99 of the normal
# requests in each case. Needs wrk and the test guests (`make guests`).
#
#   bench/plugin-spin.sh [seconds-per-round] [rounds]
source "$(dirname "$0")/lib.sh"
secs=${1:-5}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
[ -f target/guests/misbehave.wasm ] || make guests
bench_setup 18093 18092
BENCH_LOG_LEVEL=error bench_start "" "[plugin_runtime]
quarantine_after = 1000000
cache_dir = \"$tmp/cache\"
[[plugins]]
name = \"misbehave\"
file = \"$PWD/target/guests/misbehave.wasm\"
failure = \"fail-open\"
capabilities = [\"config\"]
timeouts = { on_request = \"20ms\" }"
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
cat > "$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$body'
LUA
spinner() {
  while :; do curl -s -o /dev/null -H 'content-type: application/json' -H 'x-misbehave: loop' -d "$body" \
    "http://$gw/v1/chat/completions"; done
}
: >"$tmp/quiet.p50"; : >"$tmp/quiet.p99"; : >"$tmp/spin.p50"; : >"$tmp/spin.p99"
for _ in $(seq "$rounds"); do
  out=$(wrk -t1 -c1 -d"${secs}s" --latency -s "$tmp/post.lua" "http://$gw/v1/chat/completions")
  echo "$out" | pct 50 >>"$tmp/quiet.p50"; echo "$out" | pct 99 >>"$tmp/quiet.p99"
  spinner & s1=$!; spinner & s2=$!
  sleep 0.5
  out=$(wrk -t1 -c1 -d"${secs}s" --latency -s "$tmp/post.lua" "http://$gw/v1/chat/completions")
  kill $s1 $s2; wait $s1 $s2 2>/dev/null || true
  echo "$out" | pct 50 >>"$tmp/spin.p50"; echo "$out" | pct 99 >>"$tmp/spin.p99"
done

printf "\nnormal requests at c=1, median of %s rounds x %ss (microseconds)\n" "$rounds" "$secs"
printf "%-34s %10s %10s\n" case p50 p99
printf "%-34s %10s %10s\n" "no spinning plugin calls" "$(median <"$tmp/quiet.p50")" "$(median <"$tmp/quiet.p99")"
printf "%-34s %10s %10s\n" "2 clients spinning (20 ms each)" "$(median <"$tmp/spin.p50")" "$(median <"$tmp/spin.p99")"

