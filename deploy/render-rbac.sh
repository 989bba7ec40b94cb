#!/usr/bin/env bash
# The chart is the one source of the operator's RBAC: this renders its ServiceAccount, Roles and bindings (with
# default values, release `lifeboat` in `lifeboat-system`) into deploy/base/, or into the directory given.
# e2e/chart-check.sh renders into a temporary directory and fails when deploy/base/ differs.
#   deploy/render-rbac.sh [out-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-deploy/base}"
mkdir -p "$out"
for f in serviceaccount clusterrole clusterrolebinding role rolebinding; do
  helm template lifeboat charts/lifeboat --namespace lifeboat-system --show-only "templates/$f.yaml" \
    | grep -v -e '^# Source:' -e 'helm.sh/chart' \
    | sed -e 's/managed-by: Helm/managed-by: kustomize/' -e '1{/^---$/d}' >"$out/$f.yaml"
done
