#!/usr/bin/env bash
# Shared by deploy.sh, teardown.sh and status.sh: settings and the namespace name.
# Sourced, not run.

# Operator settings (set them in stagebot's environment; the command provider passes it on).
: "${PREVIEW_DOMAIN:=example.dev}"           # environments live at https://<namespace>.<domain>
: "${IMAGE_REPO:=ghcr.io/${STAGEBOT_REPO:-}}" # images are tagged with the full commit sha
: "${ROLLOUT_TIMEOUT:=5m}"
: "${KUBECTL:=kubectl}"

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# The namespace of this environment: "<slug>--<repo name>", the same DNS label stagebot uses for
# preview hosts. The slug alone is unique only within one repository. Labels longer than 63
# characters keep 54 and get an 8-digit hash of the full name.
namespace_name() {
  local slug="${STAGEBOT_SLUG:?STAGEBOT_SLUG is not set}"
  local repo="${STAGEBOT_REPO:?STAGEBOT_REPO is not set}"
  [[ "$slug" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || die "unexpected slug: $slug"
  local name
  name="$(printf '%s--%s' "$slug" "${repo#*/}" | tr 'A-Z._' 'a-z--' | tr -cd 'a-z0-9-')"
  if ((${#name} > 63)); then
    local hash
    hash="$(printf '%s' "$name" | sha256sum | cut -c1-8)"
    name="${name:0:54}"
    name="${name%-}-${hash}"
  fi
  printf '%s\n' "${name%-}"
}

# A label value for owner/name (label values cannot contain "/").
repo_label() {
  printf '%s' "${STAGEBOT_REPO:?}" | tr '/' '.' | cut -c1-63
}
