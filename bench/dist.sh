#!/usr/bin/env bash
# The shipped binary (`make dist`: static, musl, stripped) against the glibc release build, in one run: file size,
# start-up time to the first 200 from /healthz (and to /readyz with examples/weir.toml's four plugins, the compile
# cache warm), then bench/chain.sh as an A/B of the two binaries (latency at c=1, CPU per request at c=8, requests/s
# at c=32, with and without the chain). `make bench` runs it as its `dist` section.
#
# Knobs: STARTS (start-ups per binary and config, default 20), chain.sh's SECS and ROUNDS, and GLIBC=BIN / MUSL=BIN
# to measure binaries already built (absolute paths) instead of building this tree's.
source "$(dirname "$0")/lib.sh"
STARTS=${STARTS:-20}
make -s guests >/dev/null
glibc=${GLIBC:-}
musl=${MUSL:-}
[ -n "$musl" ] || { make -s dist >/dev/null; musl=$PWD/dist/weir-x86_64-linux-musl; }
[ -n "$glibc" ] || { cargo build --release -p weir --locked -q; glibc=$PWD/target/release/weir; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

# A config with no plugins, and examples/weir.toml with its ports moved and the built plugins in place.
cat >"$tmp/bare.toml" <<TOML
listen = "127.0.0.1:18401"
[kv]
backend = "memory"
[[upstreams]]
id = "mock"
kind = "openai"
base_url = "http://127.0.0.1:18402/v1"
models = ["gpt-4o-mini"]
TOML
sed -e 's/127.0.0.1:8080/127.0.0.1:18401/; s/127.0.0.1:8081/127.0.0.1:18402/' \
  -e "s#\.\./target/wasm32-wasip2/plugin/weir_plugin_\([a-z]*\)\.wasm#$guests/\1.wasm#" \
  -e "s#plugins_dir = \"plugins.d\"#plugins_dir = \"$tmp/plugins.d\"#" examples/weir.toml >"$tmp/example.toml"
mkdir -p "$tmp/plugins.d"

# startup BIN CONFIG PATH: median and p90 ms from spawn to the first 200 on PATH, over $STARTS starts (SIGTERM after each).
startup() {
  python3 - "$1" "$2" "$3" "$STARTS" <<'PY'
import http.client, subprocess, sys, time
bin_, config, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
times = []
for _ in range(n):
    t0 = time.perf_counter()
    p = subprocess.Popen([bin_, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", 18401, timeout=1)
            c.request("GET", path)
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if p.poll() is not None:
            sys.exit(f"{bin_} exited with {p.returncode}")
        time.sleep(0.0005)
    times.append((time.perf_counter() - t0) * 1000)
    p.terminate()
    p.wait()
times.sort()
print(f"{times[len(times) // 2]:.1f} {times[int(len(times) * 0.9)]:.1f}")
PY
}

size() { awk -v b="$(stat -c %s "$1")" 'BEGIN {printf "%.1f", b / 1048576}'; }
strip -o "$tmp/weir-glibc-stripped" "$glibc"
# One start of each binary with the example fills the compiled-plugin cache (keyed by the engine's settings).
for b in "$glibc" "$musl"; do
  "$b" serve --config "$tmp/example.toml" >"$tmp/warm.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -sf http://127.0.0.1:18401/readyz >/dev/null && break; sleep 0.1; done
  kill $pid; wait $pid 2>/dev/null || true
done

say "## The shipped binary: static musl (\`make dist\`) vs the glibc release build"
say ""
say "Start-up: spawn to the first 200, median (p90) of $STARTS starts; \`example\` is examples/weir.toml with its four"
say "plugins (compile cache warm) and the embedded mock."
say ""
say "| measure | glibc (target/release/weir) | musl (dist/) |"
say "|---|---|---|"
say "| file | $(file -b "$glibc" | cut -d, -f1-2) | $(file -b "$musl" | cut -d, -f1-2) |"
say "| linking | $(file -b "$glibc" | grep -o 'dynamically linked\|static-pie linked\|statically linked') | $(file -b "$musl" | grep -o 'dynamically linked\|static-pie linked\|statically linked') |"
say "| size MiB | $(size "$glibc") ($(size "$tmp/weir-glibc-stripped") stripped) | $(size "$musl") |"
for cfg in bare:/healthz example:/healthz example:/readyz; do
  c=${cfg%%:*}; p=${cfg#*:}
  read -r g50 g90 <<<"$(startup "$glibc" "$tmp/$c.toml" "$p")"
  read -r m50 m90 <<<"$(startup "$musl" "$tmp/$c.toml" "$p")"
  say "| start-up to $p, $c config, ms | $g50 ($g90) | $m50 ($m90) |"
done
say ""
BENCH_BIN=$glibc bash bench/chain.sh "glibc=$glibc" "musl=$musl"
