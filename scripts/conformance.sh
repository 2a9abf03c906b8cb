#!/usr/bin/env bash
# Conformance of stagebot's GitHub client with GitHub's OpenAPI description.
#
# Installs Prism and @octokit/openapi into a temporary directory, starts a Prism mock of
# api.github.com (request validation on), and runs `examples/conformance.rs` against it: every
# kind of call stagebot makes, failing on any 4xx/5xx answer or request violation Prism reports.
#
# Needs node/npm and cargo. Usage: scripts/conformance.sh   (PRISM_PORT to pick the port)
set -euo pipefail

cd "$(dirname "$0")/.."
started=$(date +%s)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/stagebot-conformance.XXXXXX")
prism_pid=""

cleanup() {
    if [[ -n "$prism_pid" ]] && kill -0 "$prism_pid" 2>/dev/null; then
        kill "$prism_pid" 2>/dev/null || true
        wait "$prism_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

step() { printf '==> [%3ss] %s\n' "$(($(date +%s) - started))" "$*"; }

step "installing @stoplight/prism-cli and @octokit/openapi into $tmp"
if ! npm install --no-audit --no-fund --prefix "$tmp" @stoplight/prism-cli @octokit/openapi \
    >"$tmp/npm.log" 2>&1; then
    cat "$tmp/npm.log" >&2
    exit 1
fi
spec="$tmp/node_modules/@octokit/openapi/generated/api.github.com.json"
[[ -f "$spec" ]] || { echo "no $spec after npm install" >&2; exit 1; }

# Build while Prism starts; both take a while.
step "building the conformance example"
cargo build --quiet --example conformance &
build_pid=$!

port="${PRISM_PORT:-$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')}"
step "starting prism on 127.0.0.1:$port"
"$tmp/node_modules/.bin/prism" mock -h 127.0.0.1 -p "$port" "$spec" >"$tmp/prism.log" 2>&1 &
prism_pid=$!

for _ in $(seq 1 180); do
    if grep -q "Prism is listening" "$tmp/prism.log"; then break; fi
    if ! kill -0 "$prism_pid" 2>/dev/null; then
        echo "prism exited:" >&2
        tail -n 30 "$tmp/prism.log" >&2
        exit 1
    fi
    sleep 1
done
if ! grep -q "Prism is listening" "$tmp/prism.log"; then
    echo "prism did not start within 180 s:" >&2
    tail -n 30 "$tmp/prism.log" >&2
    exit 1
fi
step "prism is listening"

wait "$build_pid"
step "running the conformance example"
status=0
cargo run --quiet --example conformance -- "http://127.0.0.1:$port" || status=$?
if [[ $status -ne 0 ]]; then
    echo "--- last prism log lines ---" >&2
    tail -n 40 "$tmp/prism.log" >&2
fi
step "done (exit $status)"
exit "$status"
