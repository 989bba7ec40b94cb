#!/usr/bin/env bash
# Checks the Helm chart and the kustomize base against the running platform's API server:
# `helm lint`, then every rendered object through a server-side dry run (schema, RBAC rules, CRDs).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -n ${KUBECONFIG:-} ]] || eval "$(e2e/platform.sh env)"
ns=lifeboat-chart-check
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
helm lint --strict charts/lifeboat
helm template lifeboat charts/lifeboat --namespace "$ns" --include-crds | kubectl apply --server-side --force-conflicts --field-manager lifeboat-chart-check --dry-run=server -f - >/dev/null
# With watchNamespace the namespaced rights become a RoleBinding in that namespace.
helm template lifeboat charts/lifeboat --namespace "$ns" --set watchNamespace="$ns" \
  | kubectl apply --server-side --force-conflicts --field-manager lifeboat-chart-check --dry-run=server -f - >/dev/null
helm template lifeboat charts/lifeboat --namespace "$ns" --set watchNamespace="$ns" --show-only templates/clusterrolebinding.yaml \
  | grep -q '^kind: RoleBinding$'
# The ServiceMonitor kind belongs to the Prometheus Operator, which the platform does not run: render it
# and check it is there and well-formed on the client side only.
helm template lifeboat charts/lifeboat --namespace "$ns" --set serviceMonitor.enabled=true \
  --show-only templates/servicemonitor.yaml | grep -q '^kind: ServiceMonitor$'
# The PrometheusRule kind too; lint the chart with it on as well.
helm lint --strict charts/lifeboat --set prometheusRule.enabled=true
helm template lifeboat charts/lifeboat --namespace "$ns" --set prometheusRule.enabled=true \
  --show-only templates/prometheusrule.yaml | grep -q '^kind: PrometheusRule$'
echo "helm chart: lint and server-side dry run passed"
# One RBAC source: deploy/base's RBAC is the chart's, rendered by deploy/render-rbac.sh.
rendered="$(mktemp -d)"
deploy/render-rbac.sh "$rendered"
for f in "$rendered"/*.yaml; do
  diff -u "deploy/base/$(basename "$f")" "$f" || { echo "deploy/base/$(basename "$f") differs from the chart: run deploy/render-rbac.sh" >&2; exit 1; }
done
rm -rf "$rendered"
echo "kustomize base: RBAC is the chart's"
# A server-side dry run does not create the base's Namespace, so the namespaced objects need it to exist.
kubectl get namespace lifeboat-system >/dev/null 2>&1 || kubectl create namespace lifeboat-system >/dev/null
kubectl kustomize deploy/base | kubectl apply --server-side --force-conflicts --field-manager lifeboat-chart-check --dry-run=server -f - >/dev/null
echo "kustomize base: server-side dry run passed"
