# Shared by the bench scripts (run.sh — the harness, `make bench` —, chain.sh, state.sh, translation.sh, cloud.sh,
# plugin-spin.sh; sourced, not run): the results file, build, a temp dir removed on exit, a mock upstream and gateways
# on loopback, and the percentile helpers for wrk's output.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Every section appends its tables to one results file; `say` prints a line and appends it.
out=target/bench/results.md
mkdir -p target/bench
say() { echo "$*" | tee -a "$out"; }

# bench_setup MOCK_PORT GATEWAY_PORT: builds the release binary (or uses $BENCH_BIN, built already); sets $bin, $tmp,
# $mock, $gw.
bench_setup() {
  if [ -n "${BENCH_BIN:-}" ]; then
    bin=$BENCH_BIN
  else
    cargo build --release -p weir --locked -q
    bin=target/release/weir
  fi
  mock=127.0.0.1:$1
  gw=127.0.0.1:$2
  tmp=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
}

# bench_start [TOP-LEVEL TOML] [TRAILING TOML]: starts the mock and the gateway $gw (see bench_gateway).
bench_start() {
  "$bin" mock-upstream --listen "$mock" >"$tmp/mock.log" 2>&1 &
  bench_wait "http://$mock/v1/models"
  bench_gateway gw "$gw" "${1:-}" "${2:-}"
}

# bench_gateway NAME ADDR [TOP-LEVEL TOML] [TRAILING TOML]: writes $tmp/NAME.toml (one OpenAI upstream `mock`: the
# mock, serving gpt-4o-mini; x-mock-* headers forwarded so clients can script the mock) and starts a gateway on ADDR with it ($WEIR_ENV before it, e.g.
# "env TOKIO_WORKER_THREADS=1"); waits until it is ready. Its log is $tmp/NAME.log. Unless the top-level TOML has a
# `[kv]` table, the gateway gets a file store of its own ($tmp/weir-data-NAME).
bench_gateway() {
  # Each gateway its own file store (the default backend), unless the caller chose a kv backend.
  local kv="[kv]
path = \"weir-data-$1\""
  [[ "${3:-}" != *"[kv]"* ]] || kv=""
  cat > "$tmp/$1.toml" <<TOML
listen = "$2"
forward_headers = ["x-mock-*"]
${3:-}
$kv
[log]
level = "${BENCH_LOG_LEVEL:-warn}"
[[upstreams]]
id = "mock"
kind = "openai"
base_url = "http://$mock/v1"
models = ["gpt-4o-mini"]
${4:-}
TOML
  ${WEIR_ENV:-} "$bin" serve --config "$tmp/$1.toml" >"$tmp/$1.log" 2>&1 &
  bench_wait "http://$2/readyz"
}

bench_wait() {
  for _ in $(seq 300); do curl -sf "$1" >/dev/null && return; sleep 0.1; done
  echo "not ready: $1" >&2; cat "$tmp"/*.log >&2; exit 1
}

# wrk prints e.g. "     50%   45.00us"; `pct 50` reads that line, in microseconds.
pct() { awk -v p="$1%" '$1==p { v=$2; u=v; sub(/[0-9.]+/,"",u); sub(/[a-z]+$/,"",v);
  m = (u=="us") ? 1 : (u=="ms") ? 1000 : (u=="s") ? 1e6 : 1; printf "%.1f\n", v*m }'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# The plugins of examples/weir.toml's chain, for gateways under benchmark (built by `make guests`).
guests=$PWD/target/guests
demo_hash=$(printf %s sk-weir-demo | sha256sum | cut -d' ' -f1)
redact="
[[plugins]]
name = \"redact\"
order = 30
file = \"$guests/redact.wasm\"
capabilities = [\"config\", \"trace\"]
config = { modes = { secret = \"block\" } }"
# The chain of examples/weir.toml: auth → router → redact → cost. $1: the plugins' isolation — `shipped` (as in
# examples/weir.toml: auth and router shared, redact and cost tenant), or one mode for all (`request`, `tenant`,
# `shared`), or `unset` (no `isolation` key: what each component declares; the only form a gateway from before the
# isolation modes accepts, for A/B runs against one).
chain() {
  local auth=${1:-shipped} router redact_mode cost
  case $auth in
    shipped) auth=shared router=shared redact_mode=tenant cost=tenant ;;
    *) router=$auth redact_mode=$auth cost=$auth ;;
  esac
  [ "$auth" != unset ] || { chain_toml | grep -v '^isolation = '; return; }
  chain_toml
}
chain_toml() {
  cat <<TOML
[[plugins]]
name = "auth"
order = 10
file = "$guests/auth.wasm"
capabilities = ["config", "kv", "trace", "clock"]
isolation = "$auth"
config = { keys = [{ id = "demo", hash = "sha256:$demo_hash", team = "demo" }] }
[[plugins]]
name = "router"
order = 20
file = "$guests/router.wasm"
capabilities = ["config", "trace"]
isolation = "$router"
config = { rules = [{ model = "gpt-4o-mini", targets = [{ upstream = "mock", model = "gpt-4o-mini" }] }] }
${redact}
isolation = "$redact_mode"
[[plugins]]
name = "cost"
order = 40
file = "$guests/cost.wasm"
capabilities = ["log", "config", "kv", "trace", "clock"]
isolation = "$cost"
config = { prices = { "gpt-4o-mini" = { input = 0.15, output = 0.6 } }, budgets = [{ key = "demo", usd = 1e12, period = "day" }] }
TOML
}

