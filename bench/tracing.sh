#!/usr/bin/env bash
# What tracing costs: the same gateway with traces off, exporting to a live OTLP/HTTP collector, and exporting to a
# collector that refuses connections (gRPC). wrk -t2 -c8, non-streamed, ROUNDS alternating rounds of SECS seconds;
# prints requests/s and latency p50/p99 per round, and the export counters from /metrics.
#   bench/tracing.sh [SECS] [ROUNDS]
source "$(dirname "$0")/lib.sh"
secs=${1:-5}; rounds=${2:-3}
bench_setup 18300 18301
"$bin" mock-upstream --listen "$mock" >"$tmp/mock.log" 2>&1 &
bench_wait "http://$mock/v1/models"

# A collector that accepts OTLP/HTTP and discards it (an empty body is a valid ExportTraceServiceResponse).
python3 - <<'PY' &
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200); self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 18399), H).serve_forever()
PY
declare -A pid
bench_gateway off 127.0.0.1:18301; pid[off]=$!
bench_gateway live 127.0.0.1:18302 "" $'[telemetry]\notlp_endpoint = "http://127.0.0.1:18399"'; pid[live]=$!
bench_gateway dead 127.0.0.1:18303 "" $'[telemetry]\notlp_endpoint = "http://127.0.0.1:9"\notlp_protocol = "grpc"'; pid[dead]=$!
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in clock ticks (all threads)
hz=$(getconf CLK_TCK)

cat > "$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
LUA
echo "| round | gateway | requests/s | p50 µs | p99 µs | gateway CPU µs/request |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
  for g in off:18301 live:18302 dead:18303; do
    name=${g%%:*}; port=${g#*:}
    t0=$(ticks "${pid[$name]}")
    wrk -t2 -c8 -d"${secs}s" --latency -s "$tmp/post.lua" "http://127.0.0.1:$port/v1/chat/completions" >"$tmp/w"
    t1=$(ticks "${pid[$name]}")
    reqs=$(awk '/requests in/ {print $1}' "$tmp/w")
    cpu=$(awk -v a="$t0" -v b="$t1" -v n="$reqs" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / n }')
    echo "| $r | $name | $(awk '/Requests\/sec/ {printf "%.0f", $2}' "$tmp/w") | $(pct 50 <"$tmp/w") | $(pct 99 <"$tmp/w") | $cpu |"
  done
done
for g in live:18302 dead:18303; do
  echo "${g%%:*}: $(curl -s "http://127.0.0.1:${g#*:}/metrics" | grep -E '^weir_spans_(exported|dropped)_total' | tr '\n' ' ')"
done
