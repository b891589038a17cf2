#!/usr/bin/env bash
# Says whether a wasmtime release with the pooling allocator's slot-reset fix (PR #14357: 48.0.11, 50.0.3, 51.0.0 and
# later) can be used yet. Our lock has 48.0.8; `bindgen!` needs `wasmtime-internal-wit-bindgen` of the same version,
# and the registry had none of the fixed ones on 2026-12-05. Until one resolves, host/src/plugin/engine.rs turns the
# PAGEMAP_SCAN reset off wherever memory can be swapped. Informational: never fails (CI prints it).
set -uo pipefail
index=https://index.crates.io/wa/sm/wasmtime-internal-wit-bindgen
versions=$(curl -fsS --max-time 20 "$index" 2>/dev/null | python3 -c '
import json, sys
fixed = lambda v: (v[0] == 48 and v[2] >= 11) or (v[0] == 50 and v[2] >= 3) or v[0] >= 51
vs = [json.loads(l)["vers"] for l in sys.stdin if l.strip()]
print(" ".join(v for v in vs if "-" not in v and fixed(tuple(map(int, v.split("."))))))
') || { echo "wasmtime fix: could not read the crates.io index; not checked"; exit 0; }
if [ -n "$versions" ]; then
  echo "wasmtime fix: RESOLVES NOW ($versions): move to it and drop the swap check in plugin/engine.rs"
else
  echo "wasmtime fix: not on the registry yet (no wasmtime-internal-wit-bindgen 48.0.11+, 50.0.3+ or 51+); the swap check stays"
fi
