#!/usr/bin/env bash
# Per-request overhead of the policy plugins (issue 4): wrk at one connection, against the mock directly and through
# three gateways in front of it — no plugins, one Rust plugin (allowlist), and the four-plugin chain of
# examples/weir.toml (auth → router → redact → cost) — in alternating rounds of the same run, non-streamed and
# streamed (8 chunks; redact runs on every event). Prints p50/p99 and what each gateway adds over direct.
#
#   bench/policy-chain.sh [seconds-per-round] [rounds]
#   WARM=8 bench/policy-chain.sh ...    # the same with `warm_instances = 8` on every plugin (instances reused)
source "$(dirname "$0")/lib.sh"
secs=${1:-5}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
bench_setup 18101 18100
cargo build --locked -q --target wasm32-wasip2 --profile plugin \
  -p weir-plugin-allowlist -p weir-plugin-auth -p weir-plugin-router -p weir-plugin-redact -p weir-plugin-cost
wasm=$PWD/target/wasm32-wasip2/plugin
warm=""; [ -n "${WARM:-}" ] && warm="warm_instances = $WARM"
demo_hash=$(printf %s sk-weir-demo | sha256sum | cut -d' ' -f1)

bench_start
bench_gateway one 127.0.0.1:18102 "" "
[[plugins]]
name = \"allowlist\"
file = \"$wasm/weir_plugin_allowlist.wasm\"
capabilities = [\"config\", \"kv\", \"trace\"]
$warm
config = { models = [\"gpt-4o-mini\"] }"
bench_gateway chain 127.0.0.1:18103 "" "
[[plugins]]
name = \"auth\"
order = 10
file = \"$wasm/weir_plugin_auth.wasm\"
capabilities = [\"config\", \"kv\", \"trace\", \"clock\"]
$warm
config = { keys = [{ id = \"demo\", hash = \"sha256:$demo_hash\", team = \"demo\" }] }
[[plugins]]
name = \"router\"
order = 20
file = \"$wasm/weir_plugin_router.wasm\"
capabilities = [\"config\", \"trace\"]
$warm
config = { rules = [{ model = \"gpt-4o-mini\", targets = [{ upstream = \"mock\", model = \"gpt-4o-mini\" }] }] }
[[plugins]]
name = \"redact\"
order = 30
file = \"$wasm/weir_plugin_redact.wasm\"
capabilities = [\"config\", \"trace\"]
$warm
config = { modes = { secret = \"block\" } }
[[plugins]]
name = \"cost\"
order = 40
file = \"$wasm/weir_plugin_cost.wasm\"
capabilities = [\"log\", \"config\", \"kv\", \"trace\", \"clock\"]
$warm
config = { prices = { \"gpt-4o-mini\" = { input = 0.15, output = 0.6 } }, budgets = [{ key = \"demo\", usd = 1e9, period = \"day\" }] }"

declare -A addr=([direct]=$mock [none]=$gw [one]=127.0.0.1:18102 [chain]=127.0.0.1:18103)
targets="direct none one chain"
for kind in plain stream; do
  stream=false; [ $kind = stream ] && stream=true
  cat > "$tmp/$kind.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-weir-demo"
wrk.body = '{"model":"gpt-4o-mini","stream":$stream,"max_tokens":64,"messages":[{"role":"user","content":"Say hello to jane@example.com"}]}'
LUA
  # A request through the chain must succeed, or the numbers would measure refusals.
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-weir-demo' -H 'content-type: application/json' \
    -d "{\"model\":\"gpt-4o-mini\",\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" \
    "http://${addr[chain]}/v1/chat/completions")
  [ "$code" = 200 ] || { echo "chain answered $code"; cat "$tmp/chain.log"; exit 1; }
done

for kind in plain stream; do
  for t in $targets; do : >"$tmp/$kind.$t.p50"; : >"$tmp/$kind.$t.p99"; done
  for _ in $(seq "$rounds"); do
    for t in $targets; do
      out=$(wrk -t1 -c1 -d"${secs}s" --latency -s "$tmp/$kind.lua" "http://${addr[$t]}/v1/chat/completions")
      echo "$out" | grep -q "Non-2xx" && { echo "$t: non-2xx answers"; echo "$out"; exit 1; }
      echo "$out" | pct 50 >>"$tmp/$kind.$t.p50"
      echo "$out" | pct 99 >>"$tmp/$kind.$t.p99"
    done
  done
done

printf "\nmedian of %s rounds x %ss, c=1 (microseconds; added = through the gateway minus direct)\n" "$rounds" "$secs"
printf "%-7s %-7s %9s %9s %10s %10s\n" request plugins p50 p99 added_p50 added_p99
for kind in plain stream; do
  d50=$(median <"$tmp/$kind.direct.p50"); d99=$(median <"$tmp/$kind.direct.p99")
  for t in $targets; do
    g50=$(median <"$tmp/$kind.$t.p50"); g99=$(median <"$tmp/$kind.$t.p99")
    awk -v k=$kind -v t=$t -v d50="$d50" -v g50="$g50" -v d99="$d99" -v g99="$g99" \
      'BEGIN { printf "%-7s %-7s %9s %9s %10.1f %10.1f\n", k, t, g50, g99, g50 - d50, g99 - d99 }'
  done
done
