#!/usr/bin/env bash
# stagebot command provider, status: state=running + url=…, or state=stopped.
# Only STAGEBOT_REPO and STAGEBOT_SLUG are set for status checks.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"

ns="$(namespace_name)"
url="$("$KUBECTL" get namespace "$ns" --ignore-not-found \
  -o jsonpath='{.metadata.annotations.stagebot\.dev/url}')"
if [[ -z "$url" ]]; then
  echo "state=stopped"
  exit 0
fi
ready="$("$KUBECTL" -n "$ns" get deployment app --ignore-not-found -o jsonpath='{.status.readyReplicas}')"
if [[ "${ready:-0}" -ge 1 ]]; then
  echo "state=running"
  echo "url=${url}"
else
  echo "state=stopped"
fi
