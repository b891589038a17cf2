#!/usr/bin/env bash
# Response cache benchmark, in one run: one gateway with the `cache` plugin (scope global, anonymous, every model's
# answers cacheable, so no auth plugin is in the way) and one without plugins, on the same mock, alternating. Rows:
# no cache (the plain gateway); a hit (every request after the first is served from the cache); `no-cache` (the
# cache runs, looks nothing up and stores each answer: a miss and its store); `no-store` (the plugin runs and bypasses).
# The mock answers at once, so a hit's gain here is only the gateway's own work; against a real model a hit also
# saves the model's whole answer time. `make bench` runs it as its `cache` section.
#
#   bench/cache.sh       knobs: SECS (seconds per wrk run, default 5), ROUNDS (alternating rounds, default 3)
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}

bench_setup 18411 18410
cache_gw=127.0.0.1:18412
[ -f "$guests/cache.wasm" ] || make guests >/dev/null
bench_start ""
bench_gateway cache "$cache_gw" "" "
[[plugins]]
name = \"cache\"
order = 17
file = \"$guests/cache.wasm\"
capabilities = [\"config\", \"kv\", \"trace\", \"clock\", \"answer\", \"metrics\"]
isolation = \"shared\"
config = { scope = \"global\", anonymous = true, sampled = [\"*\"] }"
for s in false true; do
  for way in none hit store bypass; do
    case $way in store) cc='wrk.headers["Cache-Control"] = "no-cache"' ;; bypass) cc='wrk.headers["Cache-Control"] = "no-store"' ;; *) cc='' ;; esac
    cat >"$tmp/$way-$s.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
$cc
wrk.body = '{"model":"gpt-4o-mini","stream":$s,"messages":[{"role":"user","content":"Say hello"}]}'
LUA
  done
done
# Prime the cache (whole and streamed share one entry).
curl -sf "http://$cache_gw/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}' >/dev/null
sleep 0.2
[ "$(curl -s -o /dev/null -D - "http://$cache_gw/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}' | tr -d '\r' | awk -F': ' 'tolower($1)=="x-weir-cache" {print $2}')" = HIT ] \
  || { echo "the cache did not answer a primed request" >&2; cat "$tmp/cache.log" >&2; exit 1; }
pid_of() { pgrep -f "serve --config $tmp/$1.toml"; }
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
target() { if [ "$1" = none ]; then echo "gw $gw"; else echo "cache $cache_gw"; fi; }

say "## Response cache (\`bash bench/cache.sh\`): a hit against a miss and against no cache"
say ""
say "c=1: median of $ROUNDS alternating rounds of ${SECS}s (µs). CPU: the gateway's user+system time per request at"
say "c=8. The mock answers at once: a hit saves only the gateway's work here (against a real model, the whole answer"
say "time)."
say ""
say "| way | stream | c=1 p50 | c=1 p99 | c=8 requests/s | CPU µs per request | failed |"
say "|---|---|---|---|---|---|---|"
for s in false true; do
  for w in none hit store bypass; do : >"$tmp/$w-$s.p50"; : >"$tmp/$w-$s.p99"; done
  for _ in $(seq "$ROUNDS"); do
    for w in none hit store bypass; do
      read -r _ addr <<<"$(target $w)"
      o=$(wrk -t1 -c1 -d"${SECS}s" --latency -s "$tmp/$w-$s.lua" "http://$addr/v1/chat/completions")
      echo "$o" | pct 50 >>"$tmp/$w-$s.p50"; echo "$o" | pct 99 >>"$tmp/$w-$s.p99"
    done
  done
  for w in none hit store bypass; do
    read -r name addr <<<"$(target $w)"
    pid=$(pid_of "$name")
    t0=$(ticks "$pid")
    o=$(wrk -t2 -c8 -d"${SECS}s" --latency -s "$tmp/$w-$s.lua" "http://$addr/v1/chat/completions")
    t1=$(ticks "$pid")
    reqs=$(echo "$o" | awk '/requests in/ {print $1}')
    bad=$(echo "$o" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
    case $w in none) label="no cache (no plugins)" ;; hit) label="cache: hit" ;; store) label="cache: no-cache (miss + store)" ;; bypass) label="cache: no-store (bypass)" ;; esac
    say "| $label | $s | $(median <"$tmp/$w-$s.p50") | $(median <"$tmp/$w-$s.p99") | $(echo "$o" | awk '/Requests\/sec/ {printf "%.0f", $2}') | $cpu | $bad |"
  done
done
say ""
