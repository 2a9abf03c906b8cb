#!/usr/bin/env bash
# stagebot command provider, teardown: delete the environment's namespace (and everything in it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"

ns="$(namespace_name)"
# Only ever delete a namespace stagebot created.
managed="$("$KUBECTL" get namespace "$ns" --ignore-not-found \
  -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}')"
if [[ -z "$managed" ]]; then
  echo "namespace ${ns} does not exist; nothing to do"
  exit 0
fi
[[ "$managed" == "stagebot" ]] || die "namespace ${ns} is not managed by stagebot (managed-by=${managed}); leaving it alone"
echo "deleting namespace ${ns}"
"$KUBECTL" delete namespace "$ns" --ignore-not-found --wait=true --timeout="${ROLLOUT_TIMEOUT}"
