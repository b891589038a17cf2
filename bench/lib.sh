# Shared by the bench scripts (sourced, not run): build, a temp dir removed on exit, a mock upstream and a gateway
# on loopback, and the percentile helpers for wrk's output.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# bench_setup MOCK_PORT GATEWAY_PORT: builds the release binary; sets $bin, $tmp, $mock, $gw.
bench_setup() {
  cargo build --release -p weir --locked -q
  bin=target/release/weir
  mock=127.0.0.1:$1
  gw=127.0.0.1:$2
  tmp=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
}

# bench_start [TOP-LEVEL TOML] [TRAILING TOML]: writes $tmp/weir.toml (one OpenAI upstream: the mock, serving
# gpt-4o-mini), starts the mock and the gateway (with $WEIR_ENV before it, e.g. "env TOKIO_WORKER_THREADS=1"),
# and waits until both answer.
bench_start() {
  cat > "$tmp/weir.toml" <<TOML
listen = "$gw"
${1:-}
[log]
level = "${BENCH_LOG_LEVEL:-warn}"
[[upstreams]]
id = "mock"
kind = "openai"
base_url = "http://$mock/v1"
models = ["gpt-4o-mini"]
${2:-}
TOML
  "$bin" mock-upstream --listen "$mock" >"$tmp/mock.log" 2>&1 &
  ${WEIR_ENV:-} "$bin" serve --config "$tmp/weir.toml" >"$tmp/gw.log" 2>&1 &
  local url
  for url in "http://$mock/v1/models" "http://$gw/readyz"; do
    for _ in $(seq 100); do curl -sf "$url" >/dev/null && break; sleep 0.1; done
  done
}

# wrk prints e.g. "     50%   45.00us"; `pct 50` reads that line, in microseconds.
pct() { awk -v p="$1%" '$1==p { v=$2; u=v; sub(/[0-9.]+/,"",u); sub(/[a-z]+$/,"",v);
  m = (u=="us") ? 1 : (u=="ms") ? 1000 : (u=="s") ? 1e6 : 1; printf "%.1f\n", v*m }'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
