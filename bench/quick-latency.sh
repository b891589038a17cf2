#!/usr/bin/env bash
# Quick added-latency measurement (issue 2): wrk at one connection against the mock upstream directly and through the
# gateway, in alternating rounds of the same run, non-streamed and streamed (8 chunks, no delay). Prints p50/p99 of
# each and the difference. This is a quick check, not the benchmark harness: no CPU pinning, noisy on a shared machine.
#
#   bench/quick-latency.sh [seconds-per-round] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release -p weir --locked -q
bin=target/release/weir
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

mock=127.0.0.1:18091
gw=127.0.0.1:18090
cat > "$tmp/weir.toml" <<TOML
listen = "$gw"
[log]
level = "warn"
[[upstreams]]
id = "mock"
kind = "openai"
base_url = "http://$mock/v1"
models = ["gpt-4o-mini"]
TOML
"$bin" mock-upstream --listen "$mock" >"$tmp/mock.log" 2>&1 &
${WEIR_ENV:-} "$bin" serve --config "$tmp/weir.toml" >"$tmp/gw.log" 2>&1 &
for url in "http://$mock/v1/models" "http://$gw/readyz"; do
  for _ in $(seq 100); do curl -sf "$url" >/dev/null && break; sleep 0.1; done
done

for kind in plain stream; do
  stream=false; [ $kind = stream ] && stream=true
  cat > "$tmp/$kind.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","stream":$stream,"messages":[{"role":"user","content":"Say hello"}]}'
LUA
done

# wrk prints e.g. "     50%   45.00us"; normalise to microseconds.
pct() { awk -v p="$1%" '$1==p { v=$2; u=v; sub(/[0-9.]+/,"",u); sub(/[a-z]+$/,"",v);
  m = (u=="us") ? 1 : (u=="ms") ? 1000 : (u=="s") ? 1e6 : 1; printf "%.1f", v*m }'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for kind in plain stream; do
  for target in direct gateway; do : >"$tmp/$kind.$target.p50"; : >"$tmp/$kind.$target.p99"; done
  for _ in $(seq "$rounds"); do
    for target in direct gateway; do
      host=$mock; [ $target = gateway ] && host=$gw
      out=$(wrk -t1 -c1 -d"${secs}s" --latency -s "$tmp/$kind.lua" "http://$host/v1/chat/completions")
      echo "$out" | pct 50 >>"$tmp/$kind.$target.p50"; echo >>"$tmp/$kind.$target.p50"
      echo "$out" | pct 99 >>"$tmp/$kind.$target.p99"; echo >>"$tmp/$kind.$target.p99"
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
