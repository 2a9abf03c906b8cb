#!/usr/bin/env bash
# stagebot command provider, deploy: one Kubernetes namespace per environment.
# Contract: see README.md. Prints url=<public URL> as its last url= line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"

: "${STAGEBOT_SHA:?STAGEBOT_SHA is not set}"
: "${STAGEBOT_KIND:?STAGEBOT_KIND is not set}"
[[ "$STAGEBOT_SHA" =~ ^[0-9a-f]{7,64}$ ]] || die "unexpected sha: $STAGEBOT_SHA"
[[ "$IMAGE_REPO" =~ ^[a-z0-9./_:-]+$ ]] || die "IMAGE_REPO must be a lowercase image name: $IMAGE_REPO"
[[ "$PREVIEW_DOMAIN" =~ ^[a-z0-9.-]+$ ]] || die "PREVIEW_DOMAIN must be a DNS name: $PREVIEW_DOMAIN"

ns="$(namespace_name)"
host="${ns}.${PREVIEW_DOMAIN}"
url="https://${host}"
echo "deploying ${STAGEBOT_REPO}@${STAGEBOT_SHA} (release ${STAGEBOT_RELEASE:-?}) into namespace ${ns}"

# 1. The namespace, labelled so operators can find (and clean up) what stagebot made.
"$KUBECTL" create namespace "$ns" --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" label namespace "$ns" --overwrite \
  app.kubernetes.io/managed-by=stagebot \
  "stagebot.dev/kind=${STAGEBOT_KIND}" \
  "stagebot.dev/slug=${STAGEBOT_SLUG}" \
  "stagebot.dev/repo=$(repo_label)"
"$KUBECTL" annotate namespace "$ns" --overwrite \
  "stagebot.dev/url=${url}" \
  "stagebot.dev/sha=${STAGEBOT_SHA}" \
  "stagebot.dev/release=${STAGEBOT_RELEASE:-}"

# 2. The STAGEBOT_* variables for the app. kubectl encodes the values (branch names may hold
#    anything); they are never pasted into YAML or a command line by this script.
"$KUBECTL" -n "$ns" create configmap stagebot-env --dry-run=client -o yaml \
  --from-literal="STAGEBOT_ENV=${STAGEBOT_ENV:-}" \
  --from-literal="STAGEBOT_SLUG=${STAGEBOT_SLUG}" \
  --from-literal="STAGEBOT_KIND=${STAGEBOT_KIND}" \
  --from-literal="STAGEBOT_REPO=${STAGEBOT_REPO}" \
  --from-literal="STAGEBOT_BRANCH=${STAGEBOT_BRANCH:-}" \
  --from-literal="STAGEBOT_SHA=${STAGEBOT_SHA}" \
  --from-literal="STAGEBOT_PR=${STAGEBOT_PR:-}" \
  --from-literal="STAGEBOT_RELEASE=${STAGEBOT_RELEASE:-}" \
  --from-literal="STAGEBOT_URL=${url}" |
  "$KUBECTL" apply -f -

# 3. The manifests: base/ plus a generated overlay that pins the namespace, the image tag and the
#    ingress host. Every value written here was validated above.
overlay="$(mktemp -d)"
trap 'rm -rf "$overlay"' EXIT
cp -R "$here/base" "$overlay/base"
cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: ${ns}
resources:
  - base
images:
  - name: app
    newName: ${IMAGE_REPO}
    newTag: ${STAGEBOT_SHA}
patches:
  - target: { kind: Ingress, name: app }
    patch: |-
      - op: replace
        path: /spec/rules/0/host
        value: ${host}
      - op: replace
        path: /spec/tls/0/hosts/0
        value: ${host}
YAML
"$KUBECTL" apply -k "$overlay"

# 4. Wait for the rollout; on failure, show why (this ends up in the PR's log tail).
if ! "$KUBECTL" -n "$ns" rollout status deployment/app --timeout="$ROLLOUT_TIMEOUT"; then
  echo "rollout did not finish within ${ROLLOUT_TIMEOUT}; recent events and logs:" >&2
  "$KUBECTL" -n "$ns" get events --sort-by=.lastTimestamp 2>&1 | tail -n 15 >&2 || true
  "$KUBECTL" -n "$ns" logs deployment/app --tail=30 --all-containers >&2 2>&1 || true
  exit 1
fi

echo "url=${url}"
