#!/usr/bin/env bash
# Webhook intake, stagebot against Probot, side by side in one run (issue 13, docs/performance.md).
#
# Installs what it needs (wrk from apt, Probot 14 from npm into a cache dir outside the
# repository), builds stagebot --release, then runs, one at a time on the same payload:
#   - stagebot `serve` (durable: every 202 is flushed to disk; the worker running), and
#   - a minimal Probot app whose handler only logs,
# each under `wrk -t2 -c64 -d10s`, sampling RSS from /proc, and prints one table with the ratios.
#
# The payload: GitHub's `pull_request` `labeled` example (fixtures/, minified: 26,307 bytes,
# ~25.7 KiB), one fixed body with a valid `X-Hub-Signature-256` and a unique `X-GitHub-Delivery`
# per request (a counter per wrk thread formatted as a GUID). Signing every body in wrk's Lua
# would cost more than the servers' own work, so the body does not change.
#
# Knobs (environment): BENCH_DURATION (wrk -d, default 10s), BENCH_CONNECTIONS (default 64),
# BENCH_ROUNDS (alternations, default 1), BENCH_STARTUP_ENVS (environments for the start-up
# measurement, default 10000; 0 skips it), BENCH_DIR (scratch, default target/tmp/bench-ingest),
# PROBOT_DIR (npm cache dir, default ~/.cache/stagebot-bench/probot), STAGEBOT_BIN (skip the
# build and use this binary).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${BENCH_DURATION:-10s}"
CONNS="${BENCH_CONNECTIONS:-64}"
ROUNDS="${BENCH_ROUNDS:-1}"
WORK="${BENCH_DIR:-$ROOT/target/tmp/bench-ingest}"
PROBOT_DIR="${PROBOT_DIR:-$HOME/.cache/stagebot-bench/probot}"
SECRET="bench-secret"
SB_PORT=39101
STARTUP_ENVS="${BENCH_STARTUP_ENVS:-10000}"
PB_PORT=39102

need() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools ---------------------------------------------------------------------------------
if ! need wrk; then
    echo "installing wrk (apt)..." >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
fi
for t in node npm openssl python3 curl; do
    need "$t" || { echo "bench-ingest: '$t' is required (apt-get install nodejs npm openssl python3 curl)" >&2; exit 1; }
done
if [ ! -x "$PROBOT_DIR/node_modules/.bin/probot" ]; then
    echo "installing probot@14 (npm) into $PROBOT_DIR..." >&2
    mkdir -p "$PROBOT_DIR"
    (cd "$PROBOT_DIR" && { [ -f package.json ] || npm init -y >/dev/null; } &&
        npm install --no-audit --no-fund --silent probot@14 >/dev/null)
fi

if [ -z "${STAGEBOT_BIN:-}" ]; then
    echo "building stagebot --release..." >&2
    (cd "$ROOT" && cargo build --locked --release --bin stagebot -q)
    STAGEBOT_BIN="$ROOT/target/release/stagebot"
fi

rm -rf "$WORK"
mkdir -p "$WORK"
KEY="$ROOT/fixtures/keys/test-app-private-key.pem"

# --- the payload and the wrk script ----------------------------------------------------------
python3 -c 'import json,sys; sys.stdout.write(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' \
    "$ROOT/fixtures/github-webhook-examples/pull_request/08-labeled.json" >"$WORK/body.json"
SIG="sha256=$(openssl dgst -sha256 -hmac "$SECRET" -r "$WORK/body.json" | cut -d' ' -f1)"
cat >"$WORK/ingest.lua" <<EOF
local f = assert(io.open("$WORK/body.json", "rb"))
local body = f:read("*a")
f:close()
local counter = 0
-- 'tid' is a global set by setup() through thread:set(): a 'local tid' here would shadow it,
-- give both threads the same seed and prefix, and make half the deliveries duplicates.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  tid = tonumber(tid) or 0
  math.randomseed(os.time() + tid)
  prefix = string.format("%08x-%04x-4%03x", math.random(0, 0x7fffffff), tid, math.random(0, 0xfff))
end
function request()
  counter = counter + 1
  local guid = string.format("%s-a%03x-%012x", prefix, tid, counter)
  return wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "pull_request",
    ["X-GitHub-Delivery"] = guid,
    ["X-Hub-Signature-256"] = "$SIG",
    ["User-Agent"] = "GitHub-Hookshot/bench",
  }, body)
end
EOF

# --- the Probot app --------------------------------------------------------------------------
mkdir -p "$WORK/probot-app"
cat >"$WORK/probot-app/index.js" <<'EOF'
export default (app) => {
  app.on("pull_request.labeled", async (context) => {
    context.log.info({ delivery: context.id }, "labeled");
  });
};
EOF
echo '{"type":"module","main":"index.js"}' >"$WORK/probot-app/package.json"

# --- helpers -----------------------------------------------------------------------------------
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# The RSS of a process and its children (npx-free, but node may fork nothing; stagebot none).
sample_peak() { # pid outfile
    local pid=$1 out=$2 peak=0 r
    while kill -0 "$pid" 2>/dev/null; do
        r=$(rss_kb "$pid"); r=${r:-0}
        [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$out"
        sleep 0.05
    done
}
wait_http() { # url
    for _ in $(seq 1 1200); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "bench-ingest: $1 did not come up" >&2
    return 1
}

# run_side NAME PID URL -> prints "rps p99_ms peak_kb idle_kb non2xx"
run_side() {
    local name=$1 pid=$2 url=$3
    sleep 2
    local idle_before
    idle_before=$(rss_kb "$pid")
    echo 0 >"$WORK/$name.peak"
    sample_peak "$pid" "$WORK/$name.peak" &
    local sampler=$!
    wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/ingest.lua" "$url" >"$WORK/$name.wrk" 2>&1
    # idle: after the load, once the process has settled (the worker drained)
    sleep 5
    local idle
    idle=$(rss_kb "$pid")
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    local rps p99 non2xx
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.wrk")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v=v/1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v=v*1000}; print v}' "$WORK/$name.wrk")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/$name.wrk")
    echo "$rps ${p99:-0} $(cat "$WORK/$name.peak") $idle ${non2xx:-0} $idle_before"
}

declare -a SB PB
sb_pid=""; pb_pid=""
trap 'kill $sb_pid $pb_pid 2>/dev/null || true' EXIT
for round in $(seq 1 "$ROUNDS"); do
    # stagebot: durable, worker running (the fake GitHub URL is a closed port: the labeled
    # delivery is decided without calling GitHub).
    rm -rf "$WORK/stagebot-data"
    WEBHOOK_SECRET="$SECRET" APP_ID=1 PRIVATE_KEY_PATH="$KEY" GITHUB_API_URL="http://127.0.0.1:9" \
        STAGEBOT_DATA_DIR="$WORK/stagebot-data" STAGEBOT_LISTEN="127.0.0.1:$SB_PORT" RUST_LOG=warn \
        "$STAGEBOT_BIN" serve >"$WORK/stagebot.log" 2>&1 &
    sb_pid=$!
    wait_http "http://127.0.0.1:$SB_PORT/healthz"
    read -r -a sb <<<"$(run_side stagebot "$sb_pid" "http://127.0.0.1:$SB_PORT/webhook")"
    kill "$sb_pid"; wait "$sb_pid" 2>/dev/null || true
    sb+=("$(du -sb "$WORK/stagebot-data" | cut -f1)")
    SB+=("${sb[*]}")

    # Probot: nothing stored, the handler only logs (to a file).
    (cd "$WORK/probot-app" && APP_ID=1 PRIVATE_KEY="$(cat "$KEY")" WEBHOOK_SECRET="$SECRET" \
        PORT=$PB_PORT HOST=127.0.0.1 LOG_LEVEL=info NODE_ENV=production \
        exec node "$PROBOT_DIR/node_modules/probot/bin/probot.js" run ./index.js >"$WORK/probot.log" 2>&1) &
    pb_pid=$!
    wait_http "http://127.0.0.1:$PB_PORT/"
    read -r -a pb <<<"$(run_side probot "$pb_pid" "http://127.0.0.1:$PB_PORT/api/github/webhooks")"
    kill "$pb_pid"; wait "$pb_pid" 2>/dev/null || true
    PB+=("${pb[*]}")
done

# --- start-up with 10,000 environments (nine in ten destroyed) to ready -------------------------
declare -a STARTS
if [ "$STARTUP_ENVS" -gt 0 ]; then
echo "seeding $STARTUP_ENVS environments (benches/soak.rs)..." >&2
SOAK_BIN=$(cd "$ROOT" && cargo bench --locked --bench soak --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "soak" and m.get("executable"):
        print(m["executable"])')
SOAK_DATA="$WORK/startup-data" SOAK_SEED_ENVS="$STARTUP_ENVS" "$SOAK_BIN" 2>/dev/null
for _ in 1 2 3; do
    t0=$(date +%s%N)
    WEBHOOK_SECRET="$SECRET" APP_ID=1 PRIVATE_KEY_PATH="$KEY" GITHUB_API_URL="http://127.0.0.1:9" \
        STAGEBOT_DATA_DIR="$WORK/startup-data" STAGEBOT_LISTEN="127.0.0.1:$SB_PORT" RUST_LOG=warn \
        "$STAGEBOT_BIN" serve >>"$WORK/startup.log" 2>&1 &
    st_pid=$!
    until curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SB_PORT/readyz" 2>/dev/null | grep -q 200; do
        kill -0 "$st_pid" 2>/dev/null || { echo "bench-ingest: stagebot exited at start-up (see $WORK/startup.log)" >&2; exit 1; }
        sleep 0.005
    done
    STARTS+=($(( ($(date +%s%N) - t0) / 1000000 )))
    kill "$st_pid"; wait "$st_pid" 2>/dev/null || true
done
else
    STARTS=(0)
fi

# --- the table (median of the rounds) ----------------------------------------------------------
python3 - "$DURATION" "$CONNS" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)" "$STARTUP_ENVS" "${STARTS[*]}" "${#SB[@]}" "${SB[@]}" "${PB[@]}" <<'EOF'
import statistics, sys
dur, conns, cores, load, envs, starts, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
rows = [list(map(float, r.split())) for r in sys.argv[8:]]
sb, pb = rows[:n], rows[n:]
med = lambda rs, i: statistics.median(r[i] for r in rs)
s = {k: med(sb, i) for i, k in enumerate(["rps", "p99", "peak", "idle", "non2xx", "start", "disk"])}
p = {k: med(pb, i) for i, k in enumerate(["rps", "p99", "peak", "idle", "non2xx", "start"])}
mb = lambda kb: kb / 1024
print(f"\nwrk -t2 -c{conns} -d{dur}, {cores} cores, load {load}, median of {n} round(s)\n")
print("| | stagebot (durable, worker running) | Probot (nothing stored) | ratio stagebot/Probot | target |")
print("|---|---|---|---|---|")
print(f"| throughput | {s['rps']:,.0f} req/s | {p['rps']:,.0f} req/s | {s['rps']/p['rps']:.2f}x | >= 5x |")
print(f"| p99 latency | {s['p99']:.1f} ms | {p['p99']:.1f} ms | {s['p99']/p['p99']:.2f} | <= 0.25 |")
print(f"| peak RSS | {mb(s['peak']):.1f} MB | {mb(p['peak']):.1f} MB | {s['peak']/p['peak']:.2f} | <= 0.20 |")
print(f"| idle RSS (5 s after) | {mb(s['idle']):.1f} MB | {mb(p['idle']):.1f} MB | {s['idle']/p['idle']:.2f} | < 20 MB |")
print(f"| RSS at start | {mb(s['start']):.1f} MB | {mb(p['start']):.1f} MB | | |")
print(f"| non-2xx answers | {s['non2xx']:.0f} | {p['non2xx']:.0f} | | 0 |")
print(f"| data dir after the run | {s['disk']/1e6:.1f} MB | - | | bounded by retention |")
st = sorted(map(int, starts.split()))
print(f"| start-up to /readyz, {envs:,} environments (90% destroyed) | {statistics.median(st)} ms ({st[0]}-{st[-1]}) | - | | < 200 ms |")
EOF
