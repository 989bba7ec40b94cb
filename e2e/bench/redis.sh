#!/usr/bin/env bash
# Benchmark (prints figures; not a test): Redis backups and restore drills by the release `lifeboat`
# binary against the raw paths on the same server, same run.
#
# A `dev` Redis environment `big` (an ACL user limited to its key prefix) is filled with N keys (default
# 1,000,000, about 100 MB of data: values of about 80 bytes; 70% strings, 10% hashes, 10% lists, 5% sets,
# 5% sorted sets; one key in three with a TTL of 2-3 h) by `redis-cli --pipe` from generated RESP. Then:
# - backup: a BackupSchedule backup (zstd, tableChecks rowCounts), verify false and verify true, against
#   `redis-cli --rdb FILE` (and `redis-cli --rdb - | zstd -3 > FILE`) as the admin user. The tenant's
#   backup SCANs its own prefix; --rdb dumps the whole server: both key counts are printed.
# - drill: a RestoreDrill of that backup (rowCounts, no checksums; RESTORE under lifeboat:drill:<uid>:
#   on the same server, S3 download included) against loading the RDB from a local file into a fresh
#   redis-server (start until `ping` answers, `loading:0` and DBSIZE).
# - snapshot: an `external` environment `whole` adopting the same server with the admin's Secret is
#   backed up as an RDB snapshot over the replication protocol (what --rdb reads: the same bytes), and
#   drilled (decoded and RESTOREd under a scratch prefix): the like-for-like comparison with the raw
#   paths above.
# Targets: backup throughput lifeboat/raw >= 0.9, drill time lifeboat/raw <= 1.2.
#
# `redis-cli --rdb` is timed with repl-diskless-sync-delay 0 (Redis 7's default, 5 s, would add 5 s
# of waiting for other replicas to every raw backup).
#
# The server: by default a private redis-server ($LIFEBOAT_REDIS_SERVER_BIN, configured like the
# platform's: ACL admin user, default user off, no persistence) that holds only the benchmark's keys, so
# that tests running at the same time on the platform's Redis neither disturb the figures nor have to
# SCAN past a million keys. LIFEBOAT_BENCH_REDIS=platform uses the platform's Redis instead (its other
# keys are counted and printed; LIFEBOAT_BENCH_FLUSHALL=1 empties it first: it is a test server, but
# FLUSHALL removes what concurrent tests and the demo keep there, e.g. the hash lifeboat:owners).
#
# Usage: e2e/bench/redis.sh [keys]; LIFEBOAT_BENCH_RUNS (3) runs per path, median reported.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
KEYS="${1:-1000000}"
RUNS=${LIFEBOAT_BENCH_RUNS:-3}
MODE=${LIFEBOAT_BENCH_REDIS:-private}
if [[ -z "${LIFEBOAT_REDIS_HOST:-}" || -z "${LIFEBOAT_S3_ENDPOINT:-}" ]]; then
  eval "$("$ROOT/e2e/platform.sh" env)"
fi
: "${LIFEBOAT_S3_ENDPOINT:?start the platform: e2e/platform.sh up}"
: "${LIFEBOAT_REDIS_SERVER_BIN:=/usr/bin/redis-server}"
for tool in redis-cli zstd python3 bc curl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done

echo "building lifeboat (release)" >&2
(cd "$ROOT" && cargo build -q --release --locked --bin lifeboat)
LIFEBOAT="$ROOT/target/release/lifeboat"

NS="bench-redis-$$"
WORK="$(mktemp -d)"
OP_PID="" SRV_PID="" LOAD_PID=""
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
s3() { # curl arguments... (SigV4 as the platform's S3 user)
  curl -fsS -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 "aws:amz:${LIFEBOAT_S3_REGION}:s3" \
    --user "${LIFEBOAT_S3_ACCESS_KEY}:${LIFEBOAT_S3_SECRET_KEY}" "$@"
}
DELAY_BEFORE=""
cleanup() {
  [[ -n $DELAY_BEFORE ]] && rcli config set repl-diskless-sync-delay "$DELAY_BEFORE" >/dev/null 2>&1 || true
  # The operator deletes the environment's user and keys (deletionPolicy Delete) before it stops.
  kubectl -n "$NS" delete restoredrills,databaseenvironments --all --wait=true --timeout=300s >/dev/null 2>&1 || true
  [[ -n $OP_PID ]] && kill "$OP_PID" 2>/dev/null || true
  [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null || true
  [[ -n $SRV_PID ]] && kill "$SRV_PID" 2>/dev/null || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  # The backups (and drill results) this run wrote.
  local key
  for key in $(s3 "${LIFEBOAT_S3_ENDPOINT}/${LIFEBOAT_S3_BUCKET}?list-type=2&prefix=${NS}/" 2>/dev/null |
    grep -o '<Key>[^<]*</Key>' | sed 's/<Key>\(.*\)<\/Key>/\1/'); do
    s3 -X DELETE "${LIFEBOAT_S3_ENDPOINT}/${LIFEBOAT_S3_BUCKET}/${key}" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The server under test and its admin user.
if [[ $MODE == platform ]]; then
  RHOST=$LIFEBOAT_REDIS_HOST RPORT=$LIFEBOAT_REDIS_PORT RUSER=$LIFEBOAT_REDIS_USER RPASS=$LIFEBOAT_REDIS_PASSWORD
else
  RHOST=127.0.0.1 RPORT=$(free_port) RUSER=lifeboat_admin
  RPASS=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  mkdir -p "$WORK/server"
  (umask 077; cat >"$WORK/server/redis.conf" <<EOF
bind 127.0.0.1
port $RPORT
protected-mode yes
daemonize no
logfile ""
dir $WORK/server
save ""
appendonly no
repl-diskless-sync-delay 0
user default off resetpass resetkeys resetchannels -@all
user $RUSER on >$RPASS ~* &* +@all
EOF
  )
  "$LIFEBOAT_REDIS_SERVER_BIN" "$WORK/server/redis.conf" >"$WORK/server/redis.log" 2>&1 &
  SRV_PID=$!
fi
rcli() { REDISCLI_AUTH=$RPASS redis-cli -h "$RHOST" -p "$RPORT" --user "$RUSER" "$@"; }
for _ in $(seq 100); do [[ $(rcli ping 2>/dev/null) == PONG ]] && break; sleep 0.1; done
[[ $(rcli ping 2>/dev/null) == PONG ]] || { echo "Redis at $RHOST:$RPORT does not answer" >&2; cat "$WORK/server/redis.log" >&2 2>/dev/null; exit 1; }
[[ $MODE == platform && ${LIFEBOAT_BENCH_FLUSHALL:-0} == 1 ]] && rcli flushall >/dev/null
# `redis-cli --rdb` is a diskless replication sync, which Redis 7 starts only after
# repl-diskless-sync-delay (default 5 s, waiting for more replicas): 0 for the run (the platform's
# server gets its value back at exit).
if [[ $MODE == platform ]]; then
  DELAY_BEFORE=$(rcli config get repl-diskless-sync-delay | tail -1)
  rcli config set repl-diskless-sync-delay 0 >/dev/null
fi
REDIS_VERSION=$(rcli info server | tr -d '\r' | awk -F: '/^redis_version:/ {print $2}')

kubectl apply -f "$ROOT/crds/" >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" create secret generic redis-admin --from-literal=host="$RHOST" --from-literal=port="$RPORT" \
  --from-literal=username="$RUSER" --from-literal=password="$RPASS" --from-literal=sslmode=disable >/dev/null
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
  engine: redis
  tier: dev
  deletionPolicy: Delete
  server: {adminSecretRef: {name: redis-admin}}
EOF
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: lifeboat.dev/v1alpha1
kind: DatabaseEnvironment
metadata: {name: whole}
spec:
  engine: redis
  tier: production
  external: {connectionSecretRef: {name: redis-admin}}
EOF
kubectl -n "$NS" wait --for=condition=Ready databaseenvironment/big databaseenvironment/whole --timeout=120s >/dev/null
PREFIX=$(kubectl -n "$NS" get secret big-connection -o 'jsonpath={.data.keyPrefix}' | base64 -d)

# RESP for N keys under the prefix, on stdout.
gen_resp() {
  python3 - "$PREFIX" "$KEYS" <<'PY'
import base64, os, sys
prefix, n = sys.argv[1].encode(), int(sys.argv[2])
out = sys.stdout.buffer
def cmd(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
CHUNK = 10000
for start in range(0, n, CHUNK):
    end = min(n, start + CHUNK)
    rnd = base64.b64encode(os.urandom((end - start) * 60))  # 80 characters per key
    buf = []
    for i in range(start, end):
        v = rnd[(i - start) * 80:(i - start + 1) * 80]
        key = prefix + b"k:%d" % i
        ttl = b"%d" % (7_200_000 + (i % 3600) * 1000) if i % 3 == 0 else None
        t = i % 20
        if t < 14:
            buf.append(cmd(b"SET", key, v, b"PX", ttl) if ttl else cmd(b"SET", key, v))
            continue
        if t < 16:
            buf.append(cmd(b"HSET", key, b"a", v[:40], b"b", v[40:]))
        elif t < 18:
            buf.append(cmd(b"RPUSH", key, v[:40], v[40:]))
        elif t == 18:
            buf.append(cmd(b"SADD", key, v[:40], v[40:]))
        else:
            buf.append(cmd(b"ZADD", key, b"1", v[:40], b"2", v[40:]))
        if ttl:
            buf.append(cmd(b"PEXPIRE", key, ttl))
    out.write(b"".join(buf))
out.flush()
PY
}
echo "writing $KEYS keys under $PREFIX (redis-cli --pipe)" >&2
t0=$(now)
gen_resp | rcli --pipe >"$WORK/pipe.out" 2>&1
FILL_S=$(echo "$(now) - $t0" | bc -l)
grep -q 'errors: 0,' "$WORK/pipe.out" || { cat "$WORK/pipe.out" >&2; exit 1; }
TENANT_KEYS=$(rcli --scan --pattern "${PREFIX}*" | wc -l)
SERVER_KEYS=$(rcli dbsize)
USED_MEMORY=$(rcli info memory | tr -d '\r' | awk -F: '/^used_memory:/ {print $2}')

# --- backup ---------------------------------------------------------------------------------------
raw_rdb_once() {
  local t0; t0=$(now)
  rcli --rdb "$WORK/raw.rdb" >/dev/null 2>&1
  echo "$(now) - $t0" | bc -l
}
raw_rdb_zstd_once() {
  local t0; t0=$(now)
  rcli --rdb - 2>/dev/null | zstd -q -3 -f -o "$WORK/raw.rdb.zst"
  echo "$(now) - $t0" | bc -l
}
echo "raw: redis-cli --rdb file ($RUNS runs)" >&2
RAW_S=$(for _ in $(seq "$RUNS"); do raw_rdb_once; done | median)
RDB_BYTES=$(stat -c %s "$WORK/raw.rdb")
echo "raw: redis-cli --rdb - | zstd -3 > file ($RUNS runs)" >&2
RAWZ_S=$(for _ in $(seq "$RUNS"); do raw_rdb_zstd_once; done | median)
RDBZ_BYTES=$(stat -c %s "$WORK/raw.rdb.zst")
rm -f "$WORK/raw.rdb.zst"

rss() { awk "/^$1:/ {print \$2}" "/proc/$OP_PID/status"; }
backup() { # name verify trigger [environment] -> seconds from trigger to Succeeded in status
  local name=$1 verify=$2 trigger=$3 env=${4:-big}
  kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: lifeboat.dev/v1alpha1
kind: BackupSchedule
metadata: {name: $name}
spec:
  environmentRef: {name: $env}
  schedule: "0 0 1 1 *"
  verify: $verify
  compression: zstd
  tableChecks: rowCounts
  trigger: "$trigger"
  destination:
    s3: {bucket: $LIFEBOAT_S3_BUCKET, endpoint: "$LIFEBOAT_S3_ENDPOINT", region: $LIFEBOAT_S3_REGION,
         forcePathStyle: true, credentialsSecretRef: {name: s3}}
EOF
  local start deadline=$((SECONDS + 900)); start=$(now)
  until [[ $(kubectl -n "$NS" get backupschedule "$name" -o 'jsonpath={.status.lastHandledTrigger}/{.status.recentBackups[0].phase}' 2>/dev/null) =~ ^$trigger/(Succeeded|Failed)$ ]]; do
    ((SECONDS < deadline)) || { echo "backup $name/$trigger not finished within 900 s" >&2; exit 1; }
    sleep 0.2
  done
  local end; end=$(now)
  [[ $(kubectl -n "$NS" get backupschedule "$name" -o 'jsonpath={.status.recentBackups[0].phase}') == Succeeded ]] ||
    { kubectl -n "$NS" get backupschedule "$name" -o yaml >&2; exit 1; }
  echo "$end - $start" | bc -l
}
RSS_BEFORE=$(rss VmRSS)
echo "lifeboat: BackupSchedule, verify: false ($RUNS runs)" >&2
LB_S=$(for i in $(seq "$RUNS"); do backup plain false "run$i"; done | median)
HWM=$(rss VmHWM)
echo "lifeboat: BackupSchedule, verify: true ($RUNS runs)" >&2
LBV_S=$(for i in $(seq "$RUNS"); do backup verified true "run$i"; done | median)
HWM_V=$(rss VmHWM)
# The pipeline's own time, as the operator logs it, per backup in order.
pipeline() { # nth backup (1-based) -> seconds
  grep '"backup finished"' "$WORK/operator.log" | sed -n "${1}p" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["seconds"])'
}
LBP_S=$(for i in $(seq "$RUNS"); do pipeline "$i"; done | median)
LBPV_S=$(for i in $(seq "$RUNS"); do pipeline $((RUNS + i)); done | median)
ID=$(kubectl -n "$NS" get backupschedule plain -o 'jsonpath={.status.lastSuccessfulBackup.id}')
manifest_figures() { # schedule id -> stored bytes, raw bytes, keys
  s3 -o "$WORK/manifest.json" "${LIFEBOAT_S3_ENDPOINT}/${LIFEBOAT_S3_BUCKET}/${NS}/$1/$2/manifest.json"
  python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(m["dump"]["sizeBytes"], m["dump"]["rawSizeBytes"], sum(t["rows"] for t in m["tables"]))' "$WORK/manifest.json"
}
read -r LB_BYTES LB_RAW_BYTES LB_KEYS < <(manifest_figures plain "$ID")
echo "lifeboat: snapshot of the whole server, verify: false ($RUNS runs)" >&2
SNAP_S=$(for i in $(seq "$RUNS"); do backup snap false "run$i" whole; done | median)
echo "lifeboat: snapshot of the whole server, verify: true ($RUNS runs)" >&2
SNAPV_S=$(for i in $(seq "$RUNS"); do backup snapv true "run$i" whole; done | median)
SNAP_P=$(for i in $(seq "$RUNS"); do pipeline $((2 * RUNS + i)); done | median)
SNAPV_P=$(for i in $(seq "$RUNS"); do pipeline $((3 * RUNS + i)); done | median)
SNAP_ID=$(kubectl -n "$NS" get backupschedule snap -o 'jsonpath={.status.lastSuccessfulBackup.id}')
read -r SNAP_BYTES SNAP_RAW_BYTES SNAP_KEYS < <(manifest_figures snap "$SNAP_ID")

# --- drill ----------------------------------------------------------------------------------------
raw_load_once() { # -> seconds from starting redis-server on the RDB to DBSIZE answered after loading
  local dir="$WORK/load" port; port=$(free_port)
  rm -rf "$dir"; mkdir -p "$dir"; cp "$WORK/raw.rdb" "$dir/dump.rdb"
  local t0; t0=$(now)
  "$LIFEBOAT_REDIS_SERVER_BIN" --bind 127.0.0.1 --port "$port" --dir "$dir" --dbfilename dump.rdb \
    --save '' --appendonly no >"$dir/redis.log" 2>&1 &
  LOAD_PID=$!
  local c=(env -u REDISCLI_AUTH redis-cli -h 127.0.0.1 -p "$port")
  until [[ $("${c[@]}" ping 2>/dev/null) == PONG ]]; do
    kill -0 "$LOAD_PID" 2>/dev/null || { cat "$dir/redis.log" >&2; exit 1; }
    sleep 0.01
  done
  until "${c[@]}" info persistence 2>/dev/null | grep -q '^loading:0'; do sleep 0.01; done
  local n; n=$("${c[@]}" dbsize)
  local t1; t1=$(now)
  "${c[@]}" shutdown nosave >/dev/null 2>&1 || true
  wait "$LOAD_PID" 2>/dev/null || true
  LOAD_PID=""
  echo "$n" >"$WORK/load.dbsize"
  echo "$t1 - $t0" | bc -l
}
drill_once() { # name [schedule] -> seconds from apply to a result in status
  kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: lifeboat.dev/v1alpha1
kind: RestoreDrill
metadata: {name: drill-$1}
spec:
  backupScheduleRef: {name: ${2:-plain}}
  target: {server: {adminSecretRef: {name: redis-admin}}}
  checks: {rowCounts: true, checksums: false}
YAML
  local t0 t1 deadline=$((SECONDS + 900)); t0=$(now)
  until [[ $(kubectl -n "$NS" get restoredrill "drill-$1" -o 'jsonpath={.status.lastRun.result}' 2>/dev/null) =~ ^(Passed|Failed)$ ]]; do
    ((SECONDS < deadline)) || { echo "drill $1 not finished within 900 s" >&2; exit 1; }
    sleep 0.2
  done
  t1=$(now)
  [[ $(kubectl -n "$NS" get restoredrill "drill-$1" -o 'jsonpath={.status.lastRun.result}') == Passed ]] ||
    { kubectl -n "$NS" get restoredrill "drill-$1" -o yaml >&2; exit 1; }
  echo "$t1 - $t0" | bc -l
}
echo "raw: redis-server loading the RDB ($RUNS runs)" >&2
LOAD_S=$(for _ in $(seq "$RUNS"); do raw_load_once; done | median)
LOAD_KEYS=$(cat "$WORK/load.dbsize")
echo "lifeboat: RestoreDrill, rowCounts ($RUNS runs)" >&2
DRILL_S=$(for i in $(seq "$RUNS"); do drill_once "$i"; done | median)
field() { kubectl -n "$NS" get restoredrill "drill-$1" -o "jsonpath={.status.lastRun.$2}"; }
RTO_S=$(for i in $(seq "$RUNS"); do field "$i" rtoSeconds; echo; done | median)
RESTORE_S=$(for i in $(seq "$RUNS"); do field "$i" restoreSeconds; echo; done | median)
VERIFY_S=$(for i in $(seq "$RUNS"); do field "$i" verifySeconds; echo; done | median)
echo "lifeboat: RestoreDrill of the snapshot, rowCounts ($RUNS runs)" >&2
SDRILL_S=$(for i in $(seq "$RUNS"); do drill_once "snap$i" snap; done | median)
SRTO_S=$(for i in $(seq "$RUNS"); do field "snap$i" rtoSeconds; echo; done | median)
SRESTORE_S=$(for i in $(seq "$RUNS"); do field "snap$i" restoreSeconds; echo; done | median)

# --- figures --------------------------------------------------------------------------------------
mib() { echo "scale=1; $1 / 1048576" | bc -l; }
mibs() { echo "scale=1; $1 / 1048576 / $2" | bc -l; }
kps() { echo "scale=0; $1 / $2" | bc -l; }
printf '\nRedis %s (%s server at %s:%s): %s keys written in %.1f s; used_memory %s MiB; median of %s runs each\n' \
  "$REDIS_VERSION" "$MODE" "$RHOST" "$RPORT" "$KEYS" "$FILL_S" "$(mib "$USED_MEMORY")" "$RUNS"
printf 'keys: tenant prefix %s (SCAN), whole server %s (DBSIZE: what --rdb dumps); lifeboat archive %s keys, RDB reloaded %s keys\n' \
  "$TENANT_KEYS" "$SERVER_KEYS" "$LB_KEYS" "$LOAD_KEYS"
printf '\nbackup; MiB/s of each path'"'"'s uncompressed output (RDB, or key archive before zstd)\n'
printf '%-46s %8s %12s %12s %9s %10s\n' "path" "seconds" "bytes out" "stored" "MiB/s" "keys/s"
printf '%-46s %8.2f %12s %12s %9s %10s\n' "raw: redis-cli --rdb file" "$RAW_S" "$RDB_BYTES" "$RDB_BYTES" \
  "$(mibs "$RDB_BYTES" "$RAW_S")" "$(kps "$SERVER_KEYS" "$RAW_S")"
printf '%-46s %8.2f %12s %12s %9s %10s\n' "raw: redis-cli --rdb - | zstd -3 > file" "$RAWZ_S" "$RDB_BYTES" "$RDBZ_BYTES" \
  "$(mibs "$RDB_BYTES" "$RAWZ_S")" "$(kps "$SERVER_KEYS" "$RAWZ_S")"
for row in "lifeboat pipeline, verify false:$LBP_S" "lifeboat pipeline, verify true:$LBPV_S" \
  "lifeboat trigger -> status, verify false:$LB_S" "lifeboat trigger -> status, verify true:$LBV_S"; do
  printf '%-46s %8.2f %12s %12s %9s %10s\n' "${row%:*}" "${row##*:}" "$LB_RAW_BYTES" "$LB_BYTES" \
    "$(mibs "$LB_RAW_BYTES" "${row##*:}")" "$(kps "$LB_KEYS" "${row##*:}")"
done
ratio() { echo "scale=4; ($1 / $2) / ($3 / $4)" | bc -l; } # (lb units / lb s) / (raw units / raw s)
printf 'throughput ratio lifeboat/raw (vs --rdb file), keys/s: pipeline verify false %.2f, verify true %.2f; trigger to status %.2f, %.2f (target >= 0.9)\n' \
  "$(ratio "$LB_KEYS" "$LBP_S" "$SERVER_KEYS" "$RAW_S")" "$(ratio "$LB_KEYS" "$LBPV_S" "$SERVER_KEYS" "$RAW_S")" \
  "$(ratio "$LB_KEYS" "$LB_S" "$SERVER_KEYS" "$RAW_S")" "$(ratio "$LB_KEYS" "$LBV_S" "$SERVER_KEYS" "$RAW_S")"
printf 'throughput ratio lifeboat/raw (vs --rdb file), MiB/s of uncompressed output: pipeline verify false %.2f, trigger to status %.2f\n' \
  "$(ratio "$LB_RAW_BYTES" "$LBP_S" "$RDB_BYTES" "$RAW_S")" "$(ratio "$LB_RAW_BYTES" "$LB_S" "$RDB_BYTES" "$RAW_S")"
printf 'throughput ratio lifeboat/raw (vs --rdb | zstd), keys/s: pipeline verify false %.2f; trigger to status %.2f\n' \
  "$(ratio "$LB_KEYS" "$LBP_S" "$SERVER_KEYS" "$RAWZ_S")" "$(ratio "$LB_KEYS" "$LB_S" "$SERVER_KEYS" "$RAWZ_S")"
printf '\nsnapshot of the whole server (RDB over the replication protocol: the bytes --rdb writes)\n'
for row in "lifeboat pipeline, verify false:$SNAP_P" "lifeboat pipeline, verify true:$SNAPV_P" \
  "lifeboat trigger -> status, verify false:$SNAP_S" "lifeboat trigger -> status, verify true:$SNAPV_S"; do
  printf '%-46s %8.2f %12s %12s %9s %10s\n' "${row%:*}" "${row##*:}" "$SNAP_RAW_BYTES" "$SNAP_BYTES" \
    "$(mibs "$SNAP_RAW_BYTES" "${row##*:}")" "$(kps "$SNAP_KEYS" "${row##*:}")"
done
printf 'snapshot throughput ratio lifeboat/raw, MiB/s: pipeline verify false %.2f (vs --rdb file), %.2f (vs --rdb | zstd); trigger to status %.2f, %.2f (target >= 0.9)\n' \
  "$(ratio "$SNAP_RAW_BYTES" "$SNAP_P" "$RDB_BYTES" "$RAW_S")" "$(ratio "$SNAP_RAW_BYTES" "$SNAP_P" "$RDB_BYTES" "$RAWZ_S")" \
  "$(ratio "$SNAP_RAW_BYTES" "$SNAP_S" "$RDB_BYTES" "$RAW_S")" "$(ratio "$SNAP_RAW_BYTES" "$SNAP_S" "$RDB_BYTES" "$RAWZ_S")"
printf 'operator RSS before: %s MiB; peak after backups: %s MiB; after verified backups: %s MiB\n' \
  "$(mib $((RSS_BEFORE * 1024)))" "$(mib $((HWM * 1024)))" "$(mib $((HWM_V * 1024)))"

printf '\ndrill of backup %s (%s stored bytes)\n' "$ID" "$LB_BYTES"
printf '%-58s %9.2f\n' "raw: redis-server loads the RDB file (to loading:0, DBSIZE)" "$LOAD_S"
printf '%-58s %9.2f\n' "lifeboat: RestoreDrill apply -> Passed in status (wall)" "$DRILL_S"
printf '%-58s %9s\n' "lifeboat: status rtoSeconds (whole seconds)" "$RTO_S"
printf '%-58s %9s\n' "lifeboat: status restoreSeconds / verifySeconds" "$RESTORE_S / $VERIFY_S"
printf 'last drill: %s\n' "$(field "$RUNS" restoreMethod)"
printf 'ratio drill/raw: rtoSeconds %.2f, wall %.2f (target <= 1.2)\n' \
  "$(echo "$RTO_S / $LOAD_S" | bc -l)" "$(echo "$DRILL_S / $LOAD_S" | bc -l)"
printf '\ndrill of snapshot %s (%s stored bytes, %s keys)\n' "$SNAP_ID" "$SNAP_BYTES" "$SNAP_KEYS"
printf '%-58s %9.2f\n' "lifeboat: RestoreDrill apply -> Passed in status (wall)" "$SDRILL_S"
printf '%-58s %9s\n' "lifeboat: status rtoSeconds / restoreSeconds" "$SRTO_S / $SRESTORE_S"
printf 'ratio snapshot drill/raw: rtoSeconds %.2f, wall %.2f (target <= 1.2)\n' \
  "$(echo "$SRTO_S / $LOAD_S" | bc -l)" "$(echo "$SDRILL_S / $LOAD_S" | bc -l)"
LEFT=$(rcli --scan --pattern 'lifeboat:drill:*' | wc -l)
printf 'scratch keys left under lifeboat:drill:* on the server: %s\n' "$LEFT"
