#!/usr/bin/env bash
# Lifeboat's main job, end to end on this machine: the test platform (Kubernetes API server, controller
# manager, PostgreSQL, Redis, S3), the CRDs, the operator running with the Helm chart's RBAC, the examples
# reaching Ready, a verified backup of the dev database in S3, then a Redis cache environment written to
# and read with redis-cli and a verified backup of its keys. Stop everything with: e2e/platform.sh down
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "platform"
e2e/platform.sh up
eval "$(e2e/platform.sh env)"

say "build the operator"
cargo build --locked --bin lifeboat
LIFEBOAT=$PWD/target/debug/lifeboat

say "install the CRDs and the chart's RBAC"
"$LIFEBOAT" crds | kubectl apply --server-side --force-conflicts --field-manager lifeboat-demo -f - >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/databaseenvironments.lifeboat.dev crd/migrationruns.lifeboat.dev crd/backupschedules.lifeboat.dev crd/restoredrills.lifeboat.dev >/dev/null
kubectl get namespace lifeboat-system >/dev/null 2>&1 || kubectl create namespace lifeboat-system >/dev/null
helm template lifeboat charts/lifeboat --namespace lifeboat-system \
  --show-only templates/serviceaccount.yaml --show-only templates/clusterrole.yaml \
  --show-only templates/clusterrolebinding.yaml --show-only templates/role.yaml \
  --show-only templates/rolebinding.yaml | kubectl apply -f - >/dev/null

ns=lifeboat-demo
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null

say "start the operator as the chart's ServiceAccount (watching namespace $ns)"
# No container runtime here: the operator runs as a local process with the ServiceAccount's token,
# exactly the permissions the chart grants its Deployment.
token=$(kubectl create token lifeboat -n lifeboat-system --duration 24h)
op_kubeconfig=$LIFEBOAT_PLATFORM_DIR/operator.kubeconfig
kubectl config view --raw --minify --flatten >"$op_kubeconfig"
KUBECONFIG=$op_kubeconfig kubectl config set-credentials operator --token "$token" >/dev/null
KUBECONFIG=$op_kubeconfig kubectl config set-context --current --user operator --namespace lifeboat-system >/dev/null
chmod 600 "$op_kubeconfig"
if [[ -f $LIFEBOAT_PLATFORM_DIR/pids/operator ]] && kill -0 "$(cat "$LIFEBOAT_PLATFORM_DIR/pids/operator")" 2>/dev/null; then
  kill "$(cat "$LIFEBOAT_PLATFORM_DIR/pids/operator")"; sleep 1
fi
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KUBECONFIG=$op_kubeconfig POD_NAMESPACE=lifeboat-system setsid "$LIFEBOAT" run \
  --metrics-addr "127.0.0.1:$metrics_port" --identity demo-operator --watch-namespace lifeboat-demo >"$LIFEBOAT_PLATFORM_DIR/logs/operator.log" 2>&1 &
echo $! >"$LIFEBOAT_PLATFORM_DIR/pids/operator"
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null || { tail -20 "$LIFEBOAT_PLATFORM_DIR/logs/operator.log"; exit 1; }
echo "operator ready; metrics on http://127.0.0.1:$metrics_port/metrics, log in $LIFEBOAT_PLATFORM_DIR/logs/operator.log"

say "prepare the shared server: an admin Secret and a migrated template database"
kubectl -n "$ns" create secret generic pg-admin --dry-run=client -o yaml \
  --from-literal=host="$LIFEBOAT_PG_HOST" --from-literal=port="$LIFEBOAT_PG_PORT" \
  --from-literal=username="$LIFEBOAT_PG_USER" --from-literal=password="$LIFEBOAT_PG_PASSWORD" | kubectl apply -f - >/dev/null
export PGPASSWORD=$LIFEBOAT_PG_PASSWORD
psql_admin() { psql -h "$LIFEBOAT_PG_HOST" -p "$LIFEBOAT_PG_PORT" -U "$LIFEBOAT_PG_USER" -v ON_ERROR_STOP=1 -q "$@"; }
if [[ $(psql_admin -d postgres -Atc "select count(*) from pg_database where datname = 'shop_template'") == 0 ]]; then
  psql_admin -d postgres -c "create database shop_template is_template true"
  psql_admin -d shop_template -c "create table customers (id bigserial primary key, name text not null, email text unique);
    create table orders (id bigserial primary key, customer_id bigint not null references customers, total numeric(12,2) not null,
                         created_at timestamptz not null default now());
    create index orders_customer on orders (customer_id);"
fi
# Only databases the server's administrator marks as templates (or lists in a DatabaseServer) may be cloned.
psql_admin -d postgres -c "alter database shop_template is_template true"
unset PGPASSWORD

say "apply the examples"
kubectl -n "$ns" apply -f examples/seed-configmap.yaml -f examples/dev-environment.yaml -f examples/ci-pr-environment.yaml
kubectl -n "$ns" wait --for=condition=Ready databaseenvironment --all --timeout=120s

say "back up the dev database to the platform's S3 server (streamed, checksummed, read back)"
kubectl -n "$ns" create secret generic shop-backup-s3 --from-literal=accessKeyId="$LIFEBOAT_S3_ACCESS_KEY" \
  --from-literal=secretAccessKey="$LIFEBOAT_S3_SECRET_KEY" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
trigger="demo-$(date +%s)"
kubectl -n "$ns" apply -f - <<YAML
apiVersion: lifeboat.dev/v1alpha1
kind: BackupSchedule
metadata: {name: shop-dev-nightly}
spec:
  environmentRef: {name: shop-dev}
  schedule: "0 3 * * *"
  timeZone: Europe/Berlin
  trigger: "$trigger"
  retention: {keepLast: 7, daily: 14}
  destination:
    s3:
      bucket: $LIFEBOAT_S3_BUCKET
      endpoint: "$LIFEBOAT_S3_ENDPOINT"
      region: $LIFEBOAT_S3_REGION
      forcePathStyle: true
      credentialsSecretRef: {name: shop-backup-s3}
YAML
kubectl -n "$ns" wait --for=jsonpath='{.status.lastHandledTrigger}'="$trigger" backupschedule/shop-dev-nightly --timeout=60s >/dev/null
kubectl -n "$ns" wait --for=jsonpath='{.status.recentBackups[0].phase}'=Succeeded backupschedule/shop-dev-nightly --timeout=120s

say "a Redis cache on the shared Redis: its own ACL user, limited to its own key prefix (docs/redis.md)"
kubectl -n "$ns" create secret generic redis-admin --dry-run=client -o yaml \
  --from-literal=host="$LIFEBOAT_REDIS_HOST" --from-literal=port="$LIFEBOAT_REDIS_PORT" \
  --from-literal=username="$LIFEBOAT_REDIS_USER" --from-literal=password="$LIFEBOAT_REDIS_PASSWORD" \
  --from-literal=sslmode=disable | kubectl apply -f - >/dev/null
kubectl -n "$ns" apply -f examples/redis-environment.yaml
kubectl -n "$ns" wait --for=condition=Ready databaseenvironment/shop-cache --timeout=120s
secret_key() { kubectl -n "$ns" get secret shop-cache-connection -o jsonpath="{.data.$1}" | base64 -d; }
prefix=$(secret_key keyPrefix)
redis_uri=$(secret_key uri)
echo "key prefix: $prefix"
# The application's own connection: the Secret's uri (redis://<user>:<password>@host:port/0), as the
# environment's user. A key outside its prefix is refused (NOPERM).
cache_cli() {
  printf '$ redis-cli -u "$uri"'; printf ' %q' "$@"; echo
  redis-cli --no-auth-warning -u "$redis_uri" "$@" || true
}
echo 'uri=$(kubectl -n '"$ns"' get secret shop-cache-connection -o jsonpath={.data.uri} | base64 -d)'
cache_cli SET "${prefix}greeting" "hello from the demo"
cache_cli GET "${prefix}greeting"
cache_cli SET greeting "outside the prefix"

say "back up the cache's keys to the same S3 server (its own keys only, read back and counted)"
trigger="demo-$(date +%s)"
kubectl -n "$ns" apply -f - <<YAML
apiVersion: lifeboat.dev/v1alpha1
kind: BackupSchedule
metadata: {name: shop-cache-nightly}
spec:
  environmentRef: {name: shop-cache}
  schedule: "0 3 * * *"
  timeZone: Europe/Berlin
  trigger: "$trigger"
  retention: {keepLast: 7, daily: 14}
  destination:
    s3:
      bucket: $LIFEBOAT_S3_BUCKET
      endpoint: "$LIFEBOAT_S3_ENDPOINT"
      region: $LIFEBOAT_S3_REGION
      forcePathStyle: true
      credentialsSecretRef: {name: shop-backup-s3}
YAML
kubectl -n "$ns" wait --for=jsonpath='{.status.lastHandledTrigger}'="$trigger" backupschedule/shop-cache-nightly --timeout=60s >/dev/null
kubectl -n "$ns" wait --for=jsonpath='{.status.recentBackups[0].phase}'=Succeeded backupschedule/shop-cache-nightly --timeout=120s
kubectl -n "$ns" get lifeboat
echo
echo "Connect to the PR database:  kubectl -n $ns get secret shop-pr-42-connection -o jsonpath='{.data.uri}' | base64 -d"
echo "Connect to the cache:        redis-cli -u \"\$(kubectl -n $ns get secret shop-cache-connection -o jsonpath='{.data.uri}' | base64 -d)\""
echo "The backups and manifests:   kubectl -n $ns get backupschedule shop-dev-nightly shop-cache-nightly -o yaml   (docs/backups.md, docs/redis.md)"
echo "Stop everything:             e2e/platform.sh down"
