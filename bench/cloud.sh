#!/usr/bin/env bash
# Cloud upstreams benchmark, in one run: one gateway (no plugins) and the mock, each cloud upstream against the plain
# upstream of its family, alternating: Anthropic messages from `anthropic` vs `bedrock` (SigV4, event-stream
# re-framed as SSE) vs `vertex` (OAuth token, cached); OpenAI chat from `openai` vs `azure-openai`. The mock serves
# the same answers on every route. `make bench` runs it as its `cloud` section.
#
#   bench/cloud.sh       knobs: SECS (seconds per wrk run, default 5), ROUNDS (alternating rounds, default 3)
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}

bench_setup 18501 18500
# The mock's test credentials (see the Makefile's `run`), and its test service account pointed at this mock.
export WEIR_DEMO_AWS_ACCESS_KEY_ID=AKIAWEIRMOCKEXAMPLE1
export WEIR_DEMO_AWS_SECRET_ACCESS_KEY=weirMockSecretKey/DoNotUse+EXAMPLEKEY00000
export WEIR_DEMO_AZURE_KEY=weir-mock-azure-key
sed "s#http://127.0.0.1:8081/token#http://$mock/token#" examples/cloud/vertex-service-account.json >"$tmp/sa.json"
bench_start "" "
[[upstreams]]
id = \"anthropic\"
kind = \"anthropic\"
base_url = \"http://$mock/v1\"
models = [\"claude-haiku-4-5\"]
[[upstreams]]
id = \"bedrock\"
kind = \"bedrock\"
region = \"us-east-1\"
base_url = \"http://$mock\"
access_key_env = \"WEIR_DEMO_AWS_ACCESS_KEY_ID\"
secret_key_env = \"WEIR_DEMO_AWS_SECRET_ACCESS_KEY\"
models = [\"anthropic.claude-haiku-4-5-20251001-v1:0\"]
[[upstreams]]
id = \"vertex\"
kind = \"vertex\"
project = \"weir-demo\"
region = \"us-east5\"
base_url = \"http://$mock\"
credentials_file = \"$tmp/sa.json\"
models = [\"claude-haiku-4-5@20251001\"]
[[upstreams]]
id = \"azure\"
kind = \"azure-openai\"
base_url = \"http://$mock\"
api_version = \"2024-10-21\"
api_key_env = \"WEIR_DEMO_AZURE_KEY\"
[[routes]]
model = \"azure-mini\"
candidates = [{ upstream = \"azure\", model = \"gpt-4o-mini\" }]"
ways="anthropic bedrock vertex openai azure"
for w in $ways; do
  case $w in
    anthropic) path=/v1/messages; model=claude-haiku-4-5 ;;
    bedrock) path=/v1/messages; model=anthropic.claude-haiku-4-5-20251001-v1:0 ;;
    vertex) path=/v1/messages; model=claude-haiku-4-5@20251001 ;;
    openai) path=/v1/chat/completions; model=gpt-4o-mini ;;
    azure) path=/v1/chat/completions; model=azure-mini ;;
  esac
  echo "$path" >"$tmp/$w.path"
  for s in false true long; do
    stream=$s; chunks=8
    [ "$s" = long ] && { stream=true; chunks=200; }
    cat >"$tmp/$w-$s.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-mock-chunks"] = "$chunks"
wrk.body = '{"model":"$model","max_tokens":64,"stream":$stream,"messages":[{"role":"user","content":"Say hello"}]}'
LUA
  done
done
pid=$(pgrep -f "serve --config $tmp/gw.toml")
ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
url() { echo "http://$gw$(cat "$tmp/$1.path")"; }
for w in $ways; do  # each route answers, before anything is measured
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    -d "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$tmp/$w-false.lua")" "$(url $w)")
  [ "$code" = 200 ] || { echo "$w answered $code" >&2; cat "$tmp/gw.log" >&2; exit 1; }
done

say "## Cloud upstreams vs the plain upstream of their family (one gateway, no plugins, the same mock)"
say ""
say "c=1: median of $ROUNDS alternating rounds of ${SECS}s (µs). CPU: the gateway's user+system time per request at"
say "c=8. \`long\` streams have 200 content deltas (about 205 events): the difference to the plain row, divided by"
say "the events, is the cost per streamed event."
say ""
say "| upstream | stream | c=1 p50 | c=1 p99 | c=8 requests/s | CPU µs per request | vs plain | failed |"
say "|---|---|---|---|---|---|---|---|"
declare -A cpu
for s in false true long; do
  for w in $ways; do : >"$tmp/$w-$s.p50"; : >"$tmp/$w-$s.p99"; done
  for _ in $(seq "$ROUNDS"); do
    for w in $ways; do
      o=$(wrk -t1 -c1 -d"${SECS}s" --latency -s "$tmp/$w-$s.lua" "$(url $w)")
      echo "$o" | pct 50 >>"$tmp/$w-$s.p50"; echo "$o" | pct 99 >>"$tmp/$w-$s.p99"
    done
  done
  for w in $ways; do
    t0=$(ticks)
    o=$(wrk -t2 -c8 -d"${SECS}s" --latency -s "$tmp/$w-$s.lua" "$(url $w)")
    t1=$(ticks)
    reqs=$(echo "$o" | awk '/requests in/ {print $1}')
    bad=$(echo "$o" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
    cpu[$w-$s]=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
    case $w in bedrock | vertex) base=anthropic ;; azure) base=openai ;; *) base="" ;; esac
    delta="—"
    if [ -n "$base" ]; then
      delta=$(awk -v a="${cpu[$w-$s]}" -v b="${cpu[$base-$s]}" -v long="$s" \
        'BEGIN {d = a - b; if (long == "long") printf "%+.1f µs (%+.2f µs/event)", d, d / 205; else printf "%+.1f µs", d}')
    fi
    say "| $w | $s | $(median <"$tmp/$w-$s.p50") | $(median <"$tmp/$w-$s.p99") | $(echo "$o" | awk '/Requests\/sec/ {printf "%.0f", $2}') | ${cpu[$w-$s]} | $delta | $bad |"
  done
done
say ""
