#!/usr/bin/env bash
# Soak: deliveries at a steady rate for a set time against the whole server (front door, worker,
# pruning), with a retention of minutes, printing RSS and the data dir's size over time; both
# must level off once the retention window has passed (issue 13, docs/performance.md).
#
# The server is benches/soak.rs (the library's `serve::start` with a short retention, which the
# real binary refuses: it must be at least 3d). The load is wrk with a per-request delay (a
# steady rate, not a flood), the same signed `pull_request` `labeled` payload as
# scripts/bench-ingest.sh, a unique X-GitHub-Delivery per request.
#
# Knobs (environment): SOAK_DURATION (seconds, default 900), SOAK_RATE (deliveries/s, default
# 500), SOAK_RETENTION_SECS (default 120), SOAK_PRUNE_SECS (default 15), SOAK_SAMPLE (seconds
# between rows, default 30), BENCH_DIR (scratch, default target/tmp/soak).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${SOAK_DURATION:-900}"
RATE="${SOAK_RATE:-500}"
SAMPLE="${SOAK_SAMPLE:-30}"
WORK="${BENCH_DIR:-$ROOT/target/tmp/soak}"
CONNS=8
PORT=39201
SECRET="bench-secret"

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (apt)..." >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; fi
fi

echo "building benches/soak.rs..." >&2
BIN=$(cd "$ROOT" && cargo bench --locked --bench soak --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "soak" and m.get("executable"):
        print(m["executable"])')
[ -x "$BIN" ] || { echo "soak: could not build benches/soak.rs" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
python3 -c 'import json,sys; sys.stdout.write(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' \
    "$ROOT/fixtures/github-webhook-examples/pull_request/08-labeled.json" >"$WORK/body.json"
SIG="sha256=$(openssl dgst -sha256 -hmac "$SECRET" -r "$WORK/body.json" | cut -d' ' -f1)"
DELAY_MS=$(python3 -c "print(max(1, round($CONNS * 1000 / $RATE)))")
cat >"$WORK/soak.lua" <<EOF2
local f = assert(io.open("$WORK/body.json", "rb"))
local body = f:read("*a")
f:close()
local counter = 0
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args)
  tid = tonumber(tid) or 0
  math.randomseed(os.time() + tid)
  prefix = string.format("%08x-%04x-4%03x", math.random(0, 0x7fffffff), tid, math.random(0, 0xfff))
end
function delay() return $DELAY_MS end
function request()
  counter = counter + 1
  return wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "pull_request",
    ["X-GitHub-Delivery"] = string.format("%s-b%03x-%012x", prefix, tid, counter),
    ["X-Hub-Signature-256"] = "$SIG",
  }, body)
end
EOF2

SOAK_DATA="$WORK/data" SOAK_LISTEN="127.0.0.1:$PORT" SOAK_SECRET="$SECRET" RUST_LOG=warn \
    "$BIN" >"$WORK/server.log" 2>&1 &
pid=$!
wrk_pid=""
trap 'kill $pid $wrk_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.05; done

wrk -t2 -c$CONNS -d"${DURATION}s" --latency -s "$WORK/soak.lua" "http://127.0.0.1:$PORT/webhook" >"$WORK/wrk.out" 2>&1 &
wrk_pid=$!
echo "soak: ~$RATE deliveries/s for ${DURATION}s, retention ${SOAK_RETENTION_SECS:-120}s, load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "| t (s) | deliveries handled | RSS (MB) | data dir (MB) | of which sled (MB) | of which payload segments (MB) | inbox pending | flushes |"
echo "|---|---|---|---|---|---|---|---|"
start=$(date +%s)
while kill -0 "$wrk_pid" 2>/dev/null; do
    sleep "$SAMPLE"
    t=$(($(date +%s) - start))
    rss=$(awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
    disk=$( (du -sb "$WORK/data" 2>/dev/null || true) | awk '{printf "%.1f", $1/1e6}')
    sled=$( (du -sb "$WORK/data/db" 2>/dev/null || true) | awk '{printf "%.1f", $1/1e6}')
    segs=$( (du -sb "$WORK/data/payloads" 2>/dev/null || true) | awk '{printf "%.1f", $1/1e6}')
    metrics=$(curl -s "http://127.0.0.1:$PORT/metrics" || true)
    pending=$(echo "$metrics" | awk '/^stagebot_inbox_pending / {print $2}')
    flushes=$(echo "$metrics" | awk '/^stagebot_store_flushes_total / {print $2}')
    handled=$(echo "$metrics" | awk '/^stagebot_deliveries_(processed|ignored|dead)_total / {n += $2} END {print n + 0}')
    echo "| $t | $handled | $rss | $disk | ${sled:-?} | ${segs:-?} | ${pending:-?} | ${flushes:-?} |"
done
wait "$wrk_pid" || true
echo
grep -E "Requests/sec|requests in|Non-2xx|99%" "$WORK/wrk.out" | sed 's/^/    /'
