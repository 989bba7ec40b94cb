# Shared by the backup and drill benchmarks (sourced, not run): builds the release `lifeboat`, starts it
# watching a new namespace, creates a `staging` environment `big` on the platform's PostgreSQL 18 and
# fills it with `pgbench -i -s $SCALE`. Sets ROOT, SCALE, NS, WORK, OP_PID, DB_BYTES and the libpq
# variables of the environment's role; the EXIT trap deletes the environment (its database) while the
# operator runs, then stops it and deletes the namespace. Needs BENCH_NAME.
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SCALE="${1:-70}"
if [[ -z "${LIFEBOAT_PG_HOST:-}" ]]; then
  eval "$("$ROOT/e2e/platform.sh" env)"
fi
: "${LIFEBOAT_PG_HOST:?start the platform: e2e/platform.sh up}"
command -v zstd >/dev/null || { echo "zstd is needed (apt-get install zstd)" >&2; exit 1; }
command -v pgbench >/dev/null || PGBENCH_DIR=$(dirname "$(command -v pg_dump)")

echo "building lifeboat (release)" >&2
(cd "$ROOT" && cargo build -q --release --locked --bin lifeboat)
LIFEBOAT="$ROOT/target/release/lifeboat"

NS="bench-${BENCH_NAME:?}-$$"
WORK="$(mktemp -d)"
OP_PID=""
cleanup() {
  # The operator drops the database (deletionPolicy Delete) before it stops, then the namespace goes.
  kubectl -n "$NS" delete restoredrills,databaseenvironments --all --wait=true --timeout=180s >/dev/null 2>&1 || true
  [[ -n $OP_PID ]] && kill "$OP_PID" 2>/dev/null || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
kubectl apply -f "$ROOT/crds/" >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" create secret generic pg-admin --from-literal=host="$LIFEBOAT_PG_HOST" \
  --from-literal=port="$LIFEBOAT_PG_PORT" --from-literal=username="$LIFEBOAT_PG_USER" \
  --from-literal=password="$LIFEBOAT_PG_PASSWORD" >/dev/null
kubectl -n "$NS" create secret generic s3 --from-literal=accessKeyId="$LIFEBOAT_S3_ACCESS_KEY" \
  --from-literal=secretAccessKey="$LIFEBOAT_S3_SECRET_KEY" >/dev/null

"$LIFEBOAT" run --watch-namespace "$NS" --operator-namespace "$NS" --lease-namespace "$NS" \
  --metrics-addr 127.0.0.1:0 --identity bench --log-level info --log-format json >"$WORK/operator.log" 2>&1 &
OP_PID=$!

kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: lifeboat.dev/v1alpha1
kind: DatabaseEnvironment
metadata: {name: big}
spec:
  tier: staging
  deletionPolicy: Delete
  server: {adminSecretRef: {name: pg-admin}}
EOF
kubectl -n "$NS" wait --for=condition=Ready databaseenvironment/big --timeout=120s >/dev/null
secret() { kubectl -n "$NS" get secret big-connection -o "jsonpath={.data.$1}" | base64 -d; }
export PGHOST=$(secret host) PGPORT=$(secret port) PGUSER=$(secret username) PGPASSWORD=$(secret password)
export PGDATABASE=$(secret database) PGSSLMODE=disable
echo "pgbench -i -s $SCALE into $PGDATABASE (once per run; takes a while)" >&2
"${PGBENCH_DIR:+$PGBENCH_DIR/}pgbench" -i -q -s "$SCALE" >/dev/null 2>&1
DB_BYTES=$(psql -X -Atc "select pg_database_size(current_database())")
