#!/usr/bin/env bash
# What an idle gateway costs: the four-plugin chain (auth → router → redact → cost, shipped modes, the default file
# store) serves one request, then nothing for IDLE seconds (default 20); prints the gateway's CPU time (user +
# system, from /proc/<pid>/stat) and the context switches of its threads over that time. Nothing should run when no
# request does: the epoch ticker parks, the file store syncs only what was written.
#
#   bench/idle.sh            knobs: IDLE (seconds, default 20)
source "$(dirname "$0")/lib.sh"
IDLE=${IDLE:-20}
bench_setup 18401 18400
make -s guests >/dev/null
bench_start "" "$(chain shipped)"
curl -sf -o /dev/null "http://$gw/v1/chat/completions" -H "authorization: Bearer sk-weir-demo" \
  -H 'content-type: application/json' -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
pid=$(pgrep -f -- "serve --config $tmp/gw.toml" | head -1)
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
switches() { cat /proc/"$pid"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
t0=$(ticks) s0=$(switches)
sleep "$IDLE"
t1=$(ticks) s1=$(switches)
hz=$(getconf CLK_TCK)
say "## An idle gateway (the chain, one request, then ${IDLE} s without any)"
say ""
say "| measure | over ${IDLE} s idle |"
say "|---|---|"
say "| CPU (user + system) | $(awk -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN {printf "%.2f s", t / hz}') |"
say "| context switches (all threads) | $((s1 - s0)) |"
say ""
