#!/usr/bin/env bash
# Installs what the test suite needs besides the Rust toolchain, on Debian or Ubuntu: git,
# python3 (the test apps), bubblewrap (the local provider's sandbox; the tests run real bwrap),
# PostgreSQL (the database tests start a real server), Chromium (the dashboard's browser test) and
# Node.js with npm
# (scripts/conformance.sh). With --check it only prints the missing
# packages and the exact install line, and exits 1 if any is missing.
set -euo pipefail

need=()
command -v git >/dev/null || need+=(git)
command -v python3 >/dev/null || need+=(python3)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v npm >/dev/null || need+=(nodejs npm)
# The database tests start a real PostgreSQL server (initdb, pg_ctl) and the test app uses psql.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)

if ((${#need[@]} == 0)); then
    echo "test prerequisites: all present"
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    echo "missing: ${need[*]}"
    echo "install with: apt-get install -y ${need[*]}"
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${need[*]}"
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${need[@]}"
