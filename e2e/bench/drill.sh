#!/usr/bin/env bash
# Benchmark (prints figures; not a test): a RestoreDrill of a backup of a pgbench database (default
# scale 70, about 1 GB) by the release `lifeboat` binary, against the raw path a person would take in
# the same run: download the dump (curl --aws-sigv4), decompress it, `pg_restore -j2` into a new
# database, and the same per-table count queries. Reports both times and their ratio (target: the
# drill at most 1.15x the raw path). The drill runs twice over: streamed into one pg_restore job (the
# default, no spool file), and with `jobs: 2` (spooled, then pg_restore -j2, as the raw path does).
# Usage: e2e/bench/drill.sh [scale]
set -euo pipefail

BENCH_NAME=drill
source "$(dirname "$0")/pgbench-environment.sh"
RUNS=${LIFEBOAT_BENCH_RUNS:-3}
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "taking the backup" >&2
kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: lifeboat.dev/v1alpha1
kind: BackupSchedule
metadata: {name: nightly}
spec:
  environmentRef: {name: big}
  schedule: "0 0 1 1 *"
  tableChecks: rowCounts
  trigger: go
  destination:
    s3: {bucket: $LIFEBOAT_S3_BUCKET, endpoint: "$LIFEBOAT_S3_ENDPOINT", region: $LIFEBOAT_S3_REGION,
         forcePathStyle: true, credentialsSecretRef: {name: s3}}
YAML
deadline=$((SECONDS + 600))
until [[ $(kubectl -n "$NS" get backupschedule nightly -o 'jsonpath={.status.recentBackups[0].phase}' 2>/dev/null) =~ ^(Succeeded|Failed)$ ]]; do
  ((SECONDS < deadline)) || { echo "no backup within 600 s" >&2; exit 1; }
  sleep 0.5
done
ID=$(kubectl -n "$NS" get backupschedule nightly -o 'jsonpath={.status.lastSuccessfulBackup.id}')
[[ -n $ID ]] || { echo "the backup failed" >&2; exit 1; }
PREFIX="$NS/nightly"

ADMIN=(-h "$LIFEBOAT_PG_HOST" -p "$LIFEBOAT_PG_PORT" -U "$LIFEBOAT_PG_USER")
as_admin() { PGPASSWORD=$LIFEBOAT_PG_PASSWORD PGSSLMODE=disable "$@"; }
raw_once() {
  local db="raw_drill_$$" t0 t1
  as_admin psql -X -q "${ADMIN[@]}" -d postgres -c "drop database if exists $db" -c "create database $db"
  t0=$(now)
  curl -fsS -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 "aws:amz:${LIFEBOAT_S3_REGION}:s3" \
    --user "${LIFEBOAT_S3_ACCESS_KEY}:${LIFEBOAT_S3_SECRET_KEY}" -o "$WORK/dump" \
    "${LIFEBOAT_S3_ENDPOINT}/${LIFEBOAT_S3_BUCKET}/${PREFIX}/${ID}/dump"
  zstd -d -q -f -o "$WORK/archive.dump" "$WORK/dump"
  as_admin pg_restore -j2 --no-owner --no-privileges --exit-on-error "${ADMIN[@]}" -d "$db" "$WORK/archive.dump"
  for t in $(as_admin psql -X -At "${ADMIN[@]}" -d "$db" -c "select quote_ident(schemaname)||'.'||quote_ident(tablename) from pg_tables where schemaname not in ('pg_catalog','information_schema')"); do
    as_admin psql -X -At "${ADMIN[@]}" -d "$db" -c "select count(*) from $t" >/dev/null
  done
  t1=$(now)
  as_admin psql -X -q "${ADMIN[@]}" -d postgres -c "drop database $db"
  rm -f "$WORK/dump" "$WORK/archive.dump"
  echo "$t1 - $t0" | bc -l
}
drill_once() { # name jobs -> seconds from apply to a result in status
  kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: lifeboat.dev/v1alpha1
kind: RestoreDrill
metadata: {name: drill-$1}
spec:
  backupScheduleRef: {name: nightly}
  target: {server: {adminSecretRef: {name: pg-admin}}}
  checks: {rowCounts: true}
  jobs: $2
YAML
  local t0 t1; t0=$(now)
  until [[ $(kubectl -n "$NS" get restoredrill "drill-$1" -o 'jsonpath={.status.lastRun.result}' 2>/dev/null) =~ ^(Passed|Failed)$ ]]; do
    sleep 0.2
  done
  t1=$(now)
  [[ $(kubectl -n "$NS" get restoredrill "drill-$1" -o 'jsonpath={.status.lastRun.result}') == Passed ]] ||
    { kubectl -n "$NS" get restoredrill "drill-$1" -o yaml >&2; exit 1; }
  echo "$t1 - $t0" | bc -l
}
echo "raw: curl + zstd -d + pg_restore -j2 + counts ($RUNS runs)" >&2
RAW_S=$(for _ in $(seq "$RUNS"); do raw_once; done | median)
echo "lifeboat: RestoreDrill, rowCounts, streamed ($RUNS runs)" >&2
DRILL_S=$(for i in $(seq "$RUNS"); do drill_once "s$i" 1; done | median)
echo "lifeboat: RestoreDrill, rowCounts, jobs: 2 ($RUNS runs)" >&2
DRILL_J=$(for i in $(seq "$RUNS"); do drill_once "j$i" 2; done | median)
rto() {
  kubectl -n "$NS" get restoredrill "drill-$1" -o 'jsonpath={.status.lastRun.rtoSeconds} s (restore {.status.lastRun.restoreSeconds} s, verify {.status.lastRun.verifySeconds} s; {.status.lastRun.restoreMethod})'
}

printf '\npgbench scale %s: database %s MiB on PostgreSQL %s; backup %s; median of %s runs each\n' "$SCALE" \
  "$(echo "scale=1; $DB_BYTES / 1048576" | bc -l)" "$(psql -X -Atc 'show server_version')" "$ID" "$RUNS"
printf '%-58s %9.2f\n' "raw: download + zstd -d + pg_restore -j2 + counts" "$RAW_S"
printf '%-58s %9.2f\n' "lifeboat: RestoreDrill streamed, apply -> Passed" "$DRILL_S"
printf '%-58s %9.2f\n' "lifeboat: RestoreDrill jobs: 2, apply -> Passed" "$DRILL_J"
printf 'the last streamed drill measured RTO %s\n' "$(rto "s$RUNS")"
printf 'the last jobs: 2 drill measured RTO %s\n' "$(rto "j$RUNS")"
printf 'ratio drill/raw: streamed %.2f, jobs: 2 %.2f (target <= 1.15)\n' "$(echo "$DRILL_S / $RAW_S" | bc -l)" \
  "$(echo "$DRILL_J / $RAW_S" | bc -l)"
