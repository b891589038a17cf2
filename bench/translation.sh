#!/usr/bin/env bash
# Translation benchmark, in one run: what each translation step costs in process (host/examples/translate_bench.rs),
# then one gateway (no plugins) serving an OpenAI chat client two ways, alternating: `gpt-4o-mini` from an OpenAI
# upstream (no translation) and `claude-haiku-4-5` from an Anthropic upstream (chat → messages, and the answer
# back), both on the same mock. `make bench` runs it as its `translation` section.
#
#   bench/translation.sh       knobs: SECS (seconds per wrk run, default 5), ROUNDS (alternating rounds, default 3)
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}

bench_setup 18401 18400
say "## Translation, in process (\`cargo run --release -p weir --example translate_bench\`)"
say ""
cargo run --release -q --locked -p weir --example translate_bench | tee -a "$out"
say ""

bench_start "" "
[[upstreams]]
id = \"mock-anthropic\"
kind = \"anthropic\"
base_url = \"http://$mock/v1\"
models = [\"claude-haiku-4-5\"]"
# Four ways through one gateway: each client family to each upstream family. Translation's cost is a translated row
# minus the native row with the same upstream answer (chat → Anthropic vs messages → Anthropic: the mock sends the
# same events; messages → OpenAI vs chat → OpenAI).
ways="chat-openai messages-anthropic chat-anthropic messages-openai"
for w in $ways; do
  case $w in
    chat-*) path=/v1/chat/completions; extra='' ;;
    messages-*) path=/v1/messages; extra='"max_tokens":64,' ;;
  esac
  case $w in *-openai) model=gpt-4o-mini ;; *) model=claude-haiku-4-5 ;; esac
  echo "$path" >"$tmp/$w.path"
  for s in false true; do
    cat >"$tmp/$w-$s.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"$model",$extra"stream":$s,"messages":[{"role":"user","content":"Say hello"}]}'
LUA
  done
done
pid=$(pgrep -f "serve --config $tmp/gw.toml")
ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
url() { echo "http://$gw$(cat "$tmp/$1.path")"; }

say "## Translation through the gateway (no plugins): each client family to each upstream family"
say ""
say "c=1: median of $ROUNDS alternating rounds of ${SECS}s (µs). CPU: the gateway's user+system time per request at"
say "c=8. A translated row's cost is its difference to the native row with the same upstream answer."
say ""
say "| client → upstream | stream | c=1 p50 | c=1 p99 | c=8 requests/s | CPU µs per request | failed |"
say "|---|---|---|---|---|---|---|"
for s in false true; do
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
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
    case $w in
      chat-openai) label="OpenAI chat → OpenAI (native)" ;; messages-anthropic) label="Anthropic → Anthropic (native)" ;;
      chat-anthropic) label="OpenAI chat → Anthropic (translated)" ;; messages-openai) label="Anthropic → OpenAI chat (translated)" ;;
    esac
    say "| $label | $s | $(median <"$tmp/$w-$s.p50") | $(median <"$tmp/$w-$s.p99") | $(echo "$o" | awk '/Requests\/sec/ {printf "%.0f", $2}') | $cpu | $bad |"
  done
done
say ""
