#!/usr/bin/env bash
# Plugin state (`[kv]`) benchmark, in one run: what one kv operation costs on each backend (in process,
# host/examples/kv_bench.rs), then the four-plugin chain (auth → router → redact → cost: auth reads kv, cost makes
# four increments and a set per request and settles four increments) through the gateway on memory, the file store
# and Redis on loopback, beside the same gateway without plugins. `make bench` runs it as its `state` section.
#
#   bench/state.sh            knobs: SECS (seconds per wrk run, default 5)
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-5}
command -v redis-server >/dev/null || make -s need-redis

bench_setup 18301 18300
make -s guests >/dev/null
redis_port=18309
redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no >"$tmp/redis.log" 2>&1 &
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$redis_port) 2>/dev/null && break; sleep 0.05; done

say "## Plugin state: one kv operation per backend, in process (µs; \`cargo run --release -p weir --example kv_bench\`)"
say ""
cargo run --release -q --locked -p weir --example kv_bench -- "redis://127.0.0.1:$redis_port/0" | tee -a "$out"
say ""

bench_start
bench_gateway memory 127.0.0.1:18302 $'[kv]\nbackend = "memory"' "$(chain "")"
bench_gateway file 127.0.0.1:18303 "[kv]
path = \"$tmp/kv-file\"" "$(chain "")"
bench_gateway redis 127.0.0.1:18304 "[kv]
backend = \"redis\"
url = \"redis://127.0.0.1:$redis_port/0\"
journal = \"$tmp/kv-journal\"" "$(chain "")"
declare -A addr=([none]=$gw [memory]=127.0.0.1:18302 [file]=127.0.0.1:18303 [redis]=127.0.0.1:18304)
cat >"$tmp/plain.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-weir-demo"
wrk.body = '{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"Say hello to jane@example.com"}]}'
LUA

say "## The four-plugin chain on each kv backend, non-streamed, wrk (one run, ${SECS}s each)"
say ""
say "| gateway | c=1 p50 (µs) | c=1 p99 (µs) | c=8 requests/s | c=8 p99 (µs) | failed |"
say "|---|---|---|---|---|---|"
for t in none memory file redis; do
  o1=$(wrk -t1 -c1 -d"${SECS}s" --latency -s "$tmp/plain.lua" "http://${addr[$t]}/v1/chat/completions")
  o8=$(wrk -t2 -c8 -d"${SECS}s" --latency -s "$tmp/plain.lua" "http://${addr[$t]}/v1/chat/completions")
  bad=$(printf '%s\n%s\n' "$o1" "$o8" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
  label=$t
  case $t in none) label="no plugins";; memory) label="chain, kv memory";; file) label="chain, kv file (default)";;
    redis) label="chain, kv redis (loopback)";; esac
  say "| $label | $(echo "$o1" | pct 50) | $(echo "$o1" | pct 99) | $(echo "$o8" | awk '/Requests\/sec/ {printf "%.0f", $2}') | $(echo "$o8" | pct 99) | $bad |"
done
say ""
