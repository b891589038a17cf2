#!/usr/bin/env bash
# Hot-swap latency: time from a complete `.wasm` landing in the watched directory (atomic rename) to the first
# request served by it, over N swaps alternating between two builds of the `version` test guest (both already in the
# compile cache after the first two swaps, as in a re-deploy). Needs the test guests (`make guests`).
#
#   bench/hot-swap.sh [swaps]
source "$(dirname "$0")/lib.sh"
swaps=${1:-20}
[ -f target/guests/version-A.wasm ] || make guests
bench_setup 18098 18097
mkdir "$tmp/plugins.d"
cp target/guests/version-A.wasm "$tmp/plugins.d/version.wasm"
bench_start "plugins_dir = \"$tmp/plugins.d\"" "[plugin_runtime]
cache_dir = \"$tmp/cache\""
python3 - "$gw" "$tmp/plugins.d" "$swaps" target/guests <<'PY'
import json, os, shutil, sys, time, urllib.request
gw, d, swaps, guests = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
def version():
    req = urllib.request.Request(f"http://{gw}/v1/chat/completions", data=body,
                                 headers={"content-type": "application/json", "x-mock-chunks": "1"})
    text = json.loads(urllib.request.urlopen(req).read())["choices"][0]["message"]["content"]
    return text[text.rindex("<") + 1:-1]
times = []
for i in range(swaps):
    v = "B" if i % 2 == 0 else "A"
    shutil.copy(f"{guests}/version-{v}.wasm", f"{d}/.version.tmp")
    t0 = time.monotonic()
    os.rename(f"{d}/.version.tmp", f"{d}/version.wasm")
    while version() != v:
        pass
    times.append((time.monotonic() - t0) * 1000)
first, rest = times[:2], sorted(times[2:])
print(f"first two swaps (compile): {first[0]:.1f} ms, {first[1]:.1f} ms")
print(f"cached swaps: median {rest[len(rest)//2]:.1f} ms, max {rest[-1]:.1f} ms over {len(rest)} swaps "
      f"(includes the 25 ms debounce and polling with requests)")
PY
