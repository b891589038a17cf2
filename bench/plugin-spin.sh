#!/usr/bin/env bash
# Does a spinning plugin slow other requests? wrk at one connection sends normal requests through a gateway whose
# plugin spins until its deadline (20 ms) on requests marked `x-misbehave: loop`; rounds alternate between no
# background load and two background clients sending only such spinning requests. Prints p50/p99 of the normal
# requests in each case. Needs wrk and the test guests (`make guests`).
#
#   bench/plugin-spin.sh [seconds-per-round] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
[ -f target/guests/misbehave.wasm ] || make guests
cargo build --release -p weir --locked -q
bin=target/release/weir
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

mock=127.0.0.1:18093
gw=127.0.0.1:18092
cat > "$tmp/weir.toml" <<TOML
listen = "$gw"
[log]
level = "error"
[[upstreams]]
id = "mock"
kind = "openai"
base_url = "http://$mock/v1"
models = ["gpt-4o-mini"]
[plugin_runtime]
quarantine_after = 1000000
cache_dir = "$tmp/cache"
[[plugins]]
name = "misbehave"
file = "$PWD/target/guests/misbehave.wasm"
failure = "fail-open"
capabilities = ["config"]
timeouts = { on_request = "20ms" }
TOML
"$bin" mock-upstream --listen "$mock" >"$tmp/mock.log" 2>&1 &
"$bin" serve --config "$tmp/weir.toml" >"$tmp/gw.log" 2>&1 &
for url in "http://$mock/v1/models" "http://$gw/readyz"; do
  for _ in $(seq 100); do curl -sf "$url" >/dev/null && break; sleep 0.1; done
done
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
cat > "$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$body'
LUA
pct() { awk -v p="$1%" '$1==p { v=$2; u=v; sub(/[0-9.]+/,"",u); sub(/[a-z]+$/,"",v);
  m = (u=="us") ? 1 : (u=="ms") ? 1000 : (u=="s") ? 1e6 : 1; printf "%.1f\n", v*m }'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

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

