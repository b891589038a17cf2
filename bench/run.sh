#!/usr/bin/env bash
# The benchmark harness (`make bench`): starts everything itself on loopback — the mock upstream, gateways with no
# plugins / one Rust plugin / the four-plugin chain, nginx proxying the same mock — and prints each measure next to
# its budget from ../shared/DESIGN.md §6. The tables also go to target/bench/results.md.
#
#   bench/run.sh [section...]    sections: latency throughput streaming plugins chain hotswap memory idle state
#                                translation cloud cache dist (default: all)
#
# Knobs (environment): SECS (seconds per wrk run, default 5), ROUNDS (alternating rounds for latency, default 3).
# Needs wrk and nginx (installed with apt-get if missing) and the wasm32-wasip2 target (added if missing).
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
sections=${*:-latency throughput streaming plugins chain hotswap memory idle state translation cloud cache dist}

# ---- tools ----
missing=""
for t in wrk nginx curl; do command -v $t >/dev/null || missing="$missing $t"; done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q $(echo "$missing" | sed 's/nginx/nginx-light/') >/dev/null
fi
make -s need-wasm
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

bench_setup 18201 18200
cargo build --release --locked -q -p weir-loadgen
make -s guests polyglot >/dev/null
loadgen=target/release/weir-loadgen
guests=$PWD/target/guests
: >"$out"

# ---- what runs ----
allowlist="
[[plugins]]
name = \"allowlist\"
file = \"$guests/allowlist.wasm\"
capabilities = [\"config\", \"kv\", \"trace\"]
config = { models = [\"gpt-4o-mini\"] }"
bench_start
bench_gateway one 127.0.0.1:18202 "" "$allowlist"
bench_gateway chain 127.0.0.1:18203 "" "$(chain shipped)"
bench_gateway fresh 127.0.0.1:18204 "" "$(chain request)"
bench_gateway redact 127.0.0.1:18205 "" "$redact"
bench_gateway redact-noemail 127.0.0.1:18209 "" "${redact/secret = \"block\" \}/secret = \"block\", email = \"off\" \}}"
cat >"$tmp/nginx.conf" <<NGINX
worker_processes 2;
error_log $tmp/nginx.err;
pid $tmp/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx-body;
  proxy_temp_path $tmp/nginx-proxy;
  upstream mock { server $mock; keepalive 256; }
  server {
    listen 127.0.0.1:18206;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
nginx -p "$tmp" -c "$tmp/nginx.conf" -g "daemon off;" &
bench_wait "http://127.0.0.1:18206/v1/models"
declare -A addr=([direct]=$mock [none]=$gw [one]=127.0.0.1:18202 [chain]=127.0.0.1:18203 [chain-fresh]=127.0.0.1:18204
  [redact]=127.0.0.1:18205 [redact-noemail]=127.0.0.1:18209 [nginx]=127.0.0.1:18206)
pid_of() { pgrep -f "serve --config $tmp/$1.toml"; }

post_lua() { # post_lua FILE STREAM [EXTRA-HEADERS-LUA]
  cat >"$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-weir-demo"
${3:-}
wrk.body = '{"model":"gpt-4o-mini","stream":$2,"max_tokens":64,"messages":[{"role":"user","content":"Say hello to jane@example.com"}]}'
LUA
}
post_lua "$tmp/plain.lua" false
# wrk_run TARGET CONNS LUA: runs wrk; sets $rps $p50 $p99 $reqs $bad (non-2xx + socket errors).
wrk_run() {
  local o
  o=$(wrk -t"$([ "$2" -ge 2 ] && echo 2 || echo 1)" -c"$2" -d"${SECS}s" --latency -s "$3" "http://${addr[$1]}/v1/chat/completions")
  rps=$(echo "$o" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  reqs=$(echo "$o" | awk '/requests in/ {print $1}')
  p50=$(echo "$o" | pct 50); p99=$(echo "$o" | pct 99)
  bad=$(echo "$o" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
}
verdict() { awk -v v="$1" -v b="$2" 'BEGIN { print (v <= b) ? "met" : sprintf("missed (%.1f×)", v / b) }'; }

say "# Weir benchmark results"
say ""
say "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), \
$(free -g | awk '/Mem/ {print $2}') GiB, Linux $(uname -r), weir $(git rev-parse --short HEAD), SECS=$SECS ROUNDS=$ROUNDS"
say ""

# ---- added latency, c=1 ----
if [[ " $sections " == *" latency "* ]]; then
  targets="direct nginx none one chain chain-fresh"
  for t in $targets; do : >"$tmp/lat.$t.p50"; : >"$tmp/lat.$t.p99"; done
  for _ in $(seq "$ROUNDS"); do
    for t in $targets; do
      wrk_run "$t" 1 "$tmp/plain.lua"
      [ "$bad" = 0 ] || { echo "latency: $t had $bad failed requests"; exit 1; }
      echo "$p50" >>"$tmp/lat.$t.p50"; echo "$p99" >>"$tmp/lat.$t.p99"
    done
  done
  d50=$(median <"$tmp/lat.direct.p50"); d99=$(median <"$tmp/lat.direct.p99")
  say "## Added latency, c=1, non-streamed (µs; median of $ROUNDS alternating rounds of ${SECS}s)"
  say ""
  say "| through | p50 | p99 | added p50 | added p99 | budget (added) | verdict |"
  say "|---|---|---|---|---|---|---|"
  for t in $targets; do
    g50=$(median <"$tmp/lat.$t.p50"); g99=$(median <"$tmp/lat.$t.p99")
    a50=$(awk -v a="$g50" -v b="$d50" 'BEGIN {printf "%.0f", a-b}'); a99=$(awk -v a="$g99" -v b="$d99" 'BEGIN {printf "%.0f", a-b}')
    case $t in
      direct) say "| mock directly | $g50 | $g99 | – | – | – | – |"; continue ;;
      nginx) say "| nginx (reference) | $g50 | $g99 | $a50 | $a99 | – | – |"; continue ;;
      none) budget="p50 ≤ 50, p99 ≤ 100"; v="p50 $(verdict "$a50" 50), p99 $(verdict "$a99" 100)" ;;
      chain) budget="p99 ≤ 150"; v="$(verdict "$a99" 150)" ;;
      *) budget="–"; v="–" ;;
    esac
    label=$t
    case $t in none) label="gateway, no plugins";; one) label="gateway, 1 Rust plugin (allowlist)";;
      chain) label="gateway, 4 plugins (auth, router, redact, cost), shipped isolation";;
      chain-fresh) label="same, isolation = \"request\" (fresh instances)";; esac
    say "| $label | $g50 | $g99 | $a50 | $a99 | $budget | $v |"
  done
  say ""
fi

# ---- throughput vs nginx ----
if [[ " $sections " == *" throughput "* ]]; then
  say "## Throughput, non-streamed, wrk -t2 (requests/s; p99 in µs)"
  say ""
  say "| connections | mock directly | gateway, no plugins | nginx | gateway p99 | nginx p99 |"
  say "|---|---|---|---|---|---|"
  declare -A best5 sat
  for t in none nginx; do best5[$t]=0; sat[$t]=0; done
  for c in 1 4 16 64 256; do
    row="| $c"
    for t in direct none nginx; do
      wrk_run "$t" "$c" "$tmp/plain.lua"
      [ "$bad" = 0 ] || echo "throughput: $t c=$c had $bad failed requests" >&2
      row="$row | $rps"
      declare "p99_$t=$p99"
      if [ "$t" != direct ]; then
        awk -v r="$rps" -v s="${sat[$t]}" 'BEGIN {exit !(r > s)}' && sat[$t]=$rps
        awk -v r="$rps" -v s="${best5[$t]}" -v p="$p99" 'BEGIN {exit !(p <= 5000 && r > s)}' && best5[$t]=$rps
      fi
    done
    say "$row | $p99_none | $p99_nginx |"
  done
  say ""
  r5=$(awk -v a="${best5[none]}" -v b="${best5[nginx]}" 'BEGIN {printf "%.2f", (b > 0) ? a/b : 0}')
  rs=$(awk -v a="${sat[none]}" -v b="${sat[nginx]}" 'BEGIN {printf "%.2f", (b > 0) ? a/b : 0}')
  say "| measure | gateway | nginx | ratio | budget | verdict |"
  say "|---|---|---|---|---|---|"
  say "| highest RPS with p99 ≤ 5 ms | ${best5[none]} | ${best5[nginx]} | $r5 | ≥ 0.50 | $(awk -v r="$r5" 'BEGIN {print (r >= 0.5) ? "met" : "missed"}') |"
  say "| saturation RPS | ${sat[none]} | ${sat[nginx]} | $rs | ≥ 0.50 | $(awk -v r="$rs" 'BEGIN {print (r >= 0.5) ? "met" : "missed"}') |"
  say ""
  # CPU per request at c=8: the gateway's (and nginx's) user+system time over the requests served.
  post_lua "$tmp/plain.lua" false
  say "## CPU per request, c=8, non-streamed"
  say ""
  say "| process | requests | CPU µs per request | budget | verdict |"
  say "|---|---|---|---|---|"
  for t in none nginx; do
    if [ $t = nginx ]; then pids="$(cat "$tmp/nginx.pid") $(pgrep -P "$(cat "$tmp/nginx.pid")")"; else pids=$(pid_of gw); fi
    ticks() { local s=0; for p in $pids; do s=$((s + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $s; }
    t0=$(ticks); wrk_run "$t" 8 "$tmp/plain.lua"; t1=$(ticks)
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
    if [ $t = none ]; then say "| gateway, no plugins | $reqs | $cpu | ≤ 80 | $(verdict "$cpu" 80) |"
    else say "| nginx (2 workers) | $reqs | $cpu | – | – |"; fi
  done
  say ""
fi

# ---- streaming ----
if [[ " $sections " == *" streaming "* ]]; then
  body='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello to jane@example.com"}]}'
  lg() { # lg TARGET CONNS REQUESTS: sets the loadgen's key=value output as variables
    local line
    line=$("$loadgen" --url "http://${addr[$1]}/v1/chat/completions" --conns "$2" --requests "$3" --body "$body" \
      --header "authorization:Bearer sk-weir-demo" --header "x-mock-chunks:64" --header "x-mock-delay-ms:20" --header "x-mock-stamp:1" 2>>"$tmp/lg.err")
    eval "$(echo "$line" | tr ' ' '\n' | sed 's/^/lg_/')"
  }
  say "## Streaming: 64 deltas paced 20 ms, 10 concurrent streams × 5 each (µs)"
  say ""
  say 'Delivery: the mock stamps each event with its send time (`x-mock-stamp`); delivery is send → arrival at the'
  say "client, per text event, so the gateway's addition is measured per event without the mock's 1 ms timer in it."
  say "The first text event's addition is the added time to first token; an added delay that varies from event to"
  say "event is what widens the gaps between them. Gaps: between text events as the client saw them."
  say ""
  say "| through | delivery p50 | delivery p99 | first token p50 | gap p50 | gap p99 | added delivery p50 | added delivery p99 | budget | verdict |"
  say "|---|---|---|---|---|---|---|---|---|---|"
  lg direct 10 5; dd50=$lg_delivery_p50_us; dd99=$lg_delivery_p99_us
  say "| mock directly | $lg_delivery_p50_us | $lg_delivery_p99_us | $lg_ttft_p50_us | $lg_gap_p50_us | $lg_gap_p99_us | – | – | – | – |"
  dgap99=$lg_gap_p99_us
  for t in none redact redact-noemail; do
    lg $t 10 5
    a50=$((lg_delivery_p50_us - dd50)); a99=$((lg_delivery_p99_us - dd99))
    case $t in
      none) label="gateway, no plugins"; b="TTFT p99 ≤ 150"; v=$(verdict $a99 150) ;;
      redact) label="gateway, redact on every event"; b="gap p99 ≤ 20" ;;
      *) label="same, email detection off"; b="gap p99 ≤ 20" ;;
    esac
    if [ "$lg_delivered" = 0 ]; then
      # Events the plugin rewrote are re-encoded without the stamp: judge on the gaps the client saw.
      ag=$((lg_gap_p99_us - dgap99)); a50="–"; a99="– (gap p99 +$ag)"; lg_delivery_p50_us="–"; lg_delivery_p99_us="–"
      v=$(verdict $ag 20)
    elif [ $t != none ]; then v=$(verdict $a99 20); fi
    say "| $label | $lg_delivery_p50_us | $lg_delivery_p99_us | $lg_ttft_p50_us | $lg_gap_p50_us | $lg_gap_p99_us | $a50 | $a99 | $b | $v |"
  done
  say ""
  say "Most concurrent streams with no gap over 200 ms (10× the pace), gateway without plugins:"
  say ""
  say "| streams | ok | failed | gap p99 µs | gap max µs |"
  say "|---|---|---|---|---|"
  sustained=0
  for n in 100 250 500 1000 2000; do
    lg none $n 1
    say "| $n | $lg_streams_ok | $lg_streams_failed | $lg_gap_p99_us | $lg_gap_max_us |"
    if [ "$lg_streams_failed" = 0 ] && [ "$lg_gap_max_us" -le 200000 ]; then sustained=$n; else break; fi
  done
  say ""
  say "Sustained: **$sustained** concurrent streams."
  say ""
fi

# ---- plugins, in process ----
if [[ " $sections " == *" plugins "* ]]; then
  say "## Plugins in process (\`weir plugin bench\`, 3000 iterations, µs)"
  say ""
  say "Per request: a fresh instance (instantiate + on-request + on-complete + drop), with \`init\` run in every"
  say "instance, and pre-initialized (\`init\` snapshotted at load: what \`isolation = \"request\"\` runs). Reused: one"
  say "instance serving every request (\`tenant\` or \`shared\`, what the example config runs). The budget applies to the"
  say "reused figure (on-request + on-complete) and to on-chunk per event; the fresh figure is reported."
  say ""
  say "| plugin | size KB | fresh, init per instance | fresh, pre-initialized median | reused median | reused p99 | on-chunk median | on-chunk p99 | budget | verdict |"
  say "|---|---|---|---|---|---|---|---|---|---|"
  # auth with the demo key presented (the accept path: hash, lookup, revocation check in kv, principal); every plugin
  # with the principal auth sets for it, so cost measures its reservation and settle (without one it returns early).
  for spec in "allowlist|{\"models\":[\"gpt-4o-mini\"]}" \
      "auth|{\"keys\":[{\"id\":\"demo\",\"hash\":\"sha256:$demo_hash\",\"team\":\"demo\"}]}" \
      "router|{\"rules\":[{\"model\":\"gpt-4o-mini\",\"targets\":[{\"upstream\":\"mock\"}]}]}" "redact|{}" \
      "cost|{\"prices\":{\"gpt-4o-mini\":{\"input\":0.15,\"output\":0.6}},\"budgets\":[{\"key\":\"demo\",\"usd\":5.0,\"period\":\"day\"}]}"; do
    name=${spec%%|*}; cfg=${spec#*|}
    o=$("$bin" plugin bench "$guests/$name.wasm" --iterations 3000 --config "$cfg" --header "authorization:Bearer sk-weir-demo" \
      --principal demo:demo)
    plain=$(echo "$o" | awk '/^per request: instantiate/ {print $(NF-1)}')
    pre=$(echo "$o" | awk '/^pre-initialized: per request/ {print $(NF-1), $NF}')
    reused=$(echo "$o" | awk '/^per request, reused/ {print $(NF-1), $NF}')
    chunk=$(echo "$o" | awk '/^on-chunk call/ {print $(NF-1), $NF}')
    set -- $pre $reused $chunk
    size=$(( $(stat -c %s "$guests/$name.wasm") / 1024 ))
    say "| $name | $size | $plain | $1 | $3 | $4 | $5 | $6 | reused ≤ 10, chunk ≤ 2 | reused $(verdict "$3" 10), chunk $(verdict "$5" 2) |"
  done
  say ""
  say "One plugin in three languages (tests/conformance, mode \`upper\`: config parse, kv increment + set, two trace"
  say "attributes and a log line per request, replace-text per event); compile from an empty cache (µs unless noted)."
  say "Pre-initialized: \`init\` snapshotted by wasmtime-wizer, as the gateway does by default for components up to"
  say "8 MiB. Python and JavaScript components are above it (their runtime is snapshotted when they are built): the"
  say "gateway runs their \`init\` in every instance, so their gateway cost is the first per-request column."
  say ""
  say "Reused: one instance serving every request, as \`isolation = \"tenant\"\` runs them (the conformance plugins"
  say "declare \`within-tenant\`); the budget for Python and JavaScript applies to it."
  say ""
  say "| language | size KB | compile (fresh) ms | per request, fresh instance, init per instance median / p99 | same, pre-initialized median / p99 | per request, reused instance median / p99 | on-chunk median / p99 | budget | verdict |"
  say "|---|---|---|---|---|---|---|---|---|"
  for lang in rust python js; do
    f="$guests/conformance-$lang.wasm"
    rm -rf "$tmp/fresh-cache"
    o=$(XDG_CACHE_HOME="$tmp/fresh-cache" "$bin" plugin bench "$f" --iterations 2000 \
        --config '{"default_mode":"upper","greeting":"hi","abort_word":"zzz"}')
    compile=$(echo "$o" | awk '/^compiled in/ {print $3}')
    req=$(echo "$o" | awk '/^per request:/ {print $(NF-1) " / " $NF}')
    pre=$(echo "$o" | awk '/^pre-initialized: per request/ {print $(NF-1) " / " $NF}')
    reused=$(echo "$o" | awk '/^per request, reused/ {print $(NF-1) " / " $NF}')
    chunk=$(echo "$o" | awk '/^on-chunk call/ {print $(NF-1) " / " $NF}')
    budget="–"; v="–"
    [ "$lang" = rust ] || { budget="reused ≤ 100"; v=$(verdict "${reused%% *}" 100); }
    say "| $lang | $(( $(stat -c %s "$f") / 1024 )) | $compile | $req | ${pre:-–} | $reused | $chunk | $budget | $v |"
  done
  say ""
fi

# ---- hot swap under load ----
if [[ " $sections " == *" hotswap "* ]]; then
  mkdir -p "$tmp/swap.d"
  cp "$guests/version-A.wasm" "$tmp/swap.d/version.wasm"
  bench_gateway swap 127.0.0.1:18207 "plugins_dir = \"$tmp/swap.d\"" "[plugin_runtime]
cache_dir = \"$tmp/swap-cache\""
  addr[swap]=127.0.0.1:18207
  post_lua "$tmp/swap.lua" true 'wrk.headers["x-mock-chunks"] = "8"'
  wrk -t2 -c8 -d60s --latency -s "$tmp/swap.lua" "http://${addr[swap]}/v1/chat/completions" >"$tmp/swap.wrk" &
  wrkpid=$!
  swapout=$(python3 - "${addr[swap]}" "$tmp/swap.d" 20 "$guests" <<'PY'
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
        time.sleep(0.001)
    times.append((time.monotonic() - t0) * 1000)
    time.sleep(0.2)
first, rest = times[:2], sorted(times[2:])
print(f"{first[0]:.0f} {first[1]:.0f} {rest[len(rest)//2]:.0f} {rest[-1]:.0f} {len(rest)}")
PY
)
  kill -INT $wrkpid 2>/dev/null; wait $wrkpid 2>/dev/null || true
  set -- $swapout
  o=$(cat "$tmp/swap.wrk")
  reqs=$(echo "$o" | awk '/requests in/ {print $1}')
  bad=$(echo "$o" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
  say "## Hot swap under load (20 swaps of a Rust plugin while wrk -c8 streams through it)"
  say ""
  say "| measure | result | budget | verdict |"
  say "|---|---|---|---|"
  say "| file complete → first request on the new version, cached artifact: median | $3 ms | ≤ 250 ms | $(verdict "$3" 250) |"
  say "| same, max over $5 swaps | $4 ms | ≤ 250 ms | $(verdict "$4" 250) |"
  say "| first two swaps (compiled fresh) | $1 ms, $2 ms | – | – |"
  say "| failed requests during the swaps | $bad of $reqs | 0 | $([ "$bad" = 0 ] && echo met || echo missed) |"
  say ""
fi

# ---- memory ----
if [[ " $sections " == *" memory "* ]]; then
  rss() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
  # A gateway of its own, so the other sections' traffic does not weigh on the numbers.
  bench_gateway mem 127.0.0.1:18208 "" ""
  addr[mem]=127.0.0.1:18208
  gpid=$(pid_of mem)
  idle=$(rss "$gpid")
  body='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'
  # Warm up (connection pools, allocator arenas) with 1,000 short streams, then measure the baseline.
  "$loadgen" --url "http://${addr[mem]}/v1/chat/completions" --conns 1000 --requests 1 --body "$body" \
    --header "x-mock-chunks:8" >/dev/null 2>>"$tmp/lg.err"
  base=$(rss "$gpid")
  # 1,000 streams that stay open: 10,000 deltas a second apart; measured once every one has its first token.
  "$loadgen" --url "http://${addr[mem]}/v1/chat/completions" --conns 1000 --requests 1 --body "$body" --hold 3 \
    --header "x-mock-chunks:10000" --header "x-mock-delay-ms:1000" >"$tmp/hold.out" 2>>"$tmp/lg.err" &
  lgpid=$!
  for _ in $(seq 600); do grep -q ready "$tmp/hold.out" && break; sleep 0.1; done
  sleep 1
  open=$(rss "$gpid")
  wait $lgpid || true
  per=$(( (open - base) * 1024 / 1000 ))
  say "## Memory (a fresh gateway without plugins; RSS)"
  say ""
  say "| measure | result | budget | verdict |"
  say "|---|---|---|---|"
  say "| idle RSS, just started | $((idle / 1024)) MB | ≤ 30 MB | $(verdict $((idle / 1024)) 30) |"
  say "| after 1,000 short streams (baseline) | $((base / 1024)) MB | – | – |"
  say "| with 1,000 open streams ($(grep -o 'ready [0-9]*' "$tmp/hold.out" || echo 'not ready') had their first token) | $((open / 1024)) MB | – | – |"
  say "| per open stream: (open − baseline) / 1,000 | $((per / 1024)) KB | ≤ 64 KB | $(verdict $((per / 1024)) 64) |"
  say ""
fi

echo "results: $out"

# ---- an idle gateway's CPU and wake-ups (its own gateway; appends to the same results) ----
if [[ " $sections " == *" idle "* ]]; then
  bash bench/idle.sh
fi

# ---- plugin state per kv backend (its own gateways and redis-server; appends to the same results) ----
if [[ " $sections " == *" state "* ]]; then
  bash bench/state.sh
fi

# ---- the four-plugin chain against no plugins, the plugin-cost budgets (its own gateways; appends) ----
if [[ " $sections " == *" chain "* ]]; then
  bash bench/chain.sh
fi

# ---- translation between the API families (its own gateway; appends to the same results) ----
if [[ " $sections " == *" translation "* ]]; then
  bash bench/translation.sh
fi

# ---- the response cache: a hit vs a miss vs no cache (its own gateways; appends to the same results) ----
if [[ " $sections " == *" cache "* ]]; then
  bash bench/cache.sh
fi

# ---- cloud upstreams vs the plain upstream of their family (its own gateway; appends to the same results) ----
if [[ " $sections " == *" cloud "* ]]; then
  bash bench/cloud.sh
fi

# ---- the shipped static binary against the glibc build (its own gateways; appends to the same results) ----
if [[ " $sections " == *" dist "* ]]; then
  bash bench/dist.sh
fi
