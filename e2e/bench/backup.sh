#!/usr/bin/env bash
# Benchmark (prints figures; not a test): a BackupSchedule backup of a pgbench database (default scale
# 70, about 1 GB) by the release `lifeboat` binary, against the raw path `pg_dump -Fc -Z0 | zstd > file`
# on the same database, same server, same run. Reports throughput (database bytes per second) of each,
# their ratio, the time `verify` adds, and the operator's peak RSS growth during the backup (VmHWM after
# minus VmRSS before). Usage: e2e/bench/backup.sh [scale]; LIFEBOAT_BENCH_RUNS (3) and
# LIFEBOAT_BENCH_COMPRESSION (zstd) change the runs per path and the schedule's compression.
set -euo pipefail

BENCH_NAME=backup
source "$(dirname "$0")/pgbench-environment.sh"

RUNS=${LIFEBOAT_BENCH_RUNS:-3}
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
raw_once() {
  local t0 t1; t0=$(now)
  pg_dump -Fc -Z0 | zstd -q -3 -f -o "$WORK/raw.dump.zst"
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}
echo "raw: pg_dump -Fc -Z0 | zstd > file ($RUNS runs)" >&2
RAW_S=$(for _ in $(seq "$RUNS"); do raw_once; done | median)
RAW_SIZE=$(stat -c %s "$WORK/raw.dump.zst")
rm -f "$WORK/raw.dump.zst"

rss() { awk "/^$1:/ {print \$2}" "/proc/$OP_PID/status"; }
backup() { # name verify trigger -> seconds
  local name=$1 verify=$2 trigger=${3:-go}
  kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: lifeboat.dev/v1alpha1
kind: BackupSchedule
metadata: {name: $name}
spec:
  environmentRef: {name: big}
  schedule: "0 0 1 1 *"
  verify: $verify
  compression: ${LIFEBOAT_BENCH_COMPRESSION:-zstd}
  tableChecks: rowCounts
  trigger: "$trigger"
  destination:
    s3: {bucket: $LIFEBOAT_S3_BUCKET, endpoint: "$LIFEBOAT_S3_ENDPOINT", region: $LIFEBOAT_S3_REGION,
         forcePathStyle: true, credentialsSecretRef: {name: s3}}
EOF
  local start; start=$(now)
  until [[ $(kubectl -n "$NS" get backupschedule "$name" -o 'jsonpath={.status.lastHandledTrigger}/{.status.recentBackups[0].phase}' 2>/dev/null) =~ ^$trigger/(Succeeded|Failed)$ ]]; do
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
# The pipeline's own time (snapshot to manifest), as the operator logs it, per backup in order.
pipeline() { # nth backup (1-based) -> seconds
  grep '"backup finished"' "$WORK/operator.log" | sed -n "${1}p" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["seconds"])'
}
LBP_S=$(for i in $(seq "$RUNS"); do pipeline "$i"; done | median)
LBPV_S=$(for i in $(seq "$RUNS"); do pipeline $((RUNS + i)); done | median)
LB_SIZE=$(kubectl -n "$NS" get backupschedule plain -o 'jsonpath={.status.recentBackups[0].sizeBytes}')

mb() { echo "scale=1; $1 / 1048576" | bc -l; }
tp() { echo "scale=1; $DB_BYTES / 1048576 / $1" | bc -l; }
printf '\npgbench scale %s: database %s MiB on PostgreSQL %s; median of %s runs each; Lifeboat times are trigger to Succeeded in status\n' "$SCALE" "$(mb "$DB_BYTES")" "$(psql -X -Atc 'show server_version')" "$RUNS"
printf '%-44s %9s %12s %12s\n' "path" "seconds" "MiB/s (db)" "stored MiB"
printf '%-44s %9.2f %12s %12s\n' "raw: pg_dump -Fc -Z0 | zstd -3 > file" "$RAW_S" "$(tp "$RAW_S")" "$(mb "$RAW_SIZE")"
printf '%-44s %9.2f %12s %12s\n' "lifeboat pipeline, verify false" "$LBP_S" "$(tp "$LBP_S")" "$(mb "$LB_SIZE")"
printf '%-44s %9.2f %12s %12s\n' "lifeboat pipeline, verify true" "$LBPV_S" "$(tp "$LBPV_S")" "-"
printf '%-44s %9.2f %12s %12s\n' "lifeboat trigger -> status, verify false" "$LB_S" "$(tp "$LB_S")" "-"
printf '%-44s %9.2f %12s %12s\n' "lifeboat trigger -> status, verify true" "$LBV_S" "$(tp "$LBV_S")" "-"
printf 'throughput ratio lifeboat/raw, pipeline (verify false): %.2f; trigger to status: %.2f (target >= 0.9)\n' \
  "$(echo "$RAW_S / $LBP_S" | bc -l)" "$(echo "$RAW_S / $LB_S" | bc -l)"
printf 'operator RSS before: %s MiB; peak after backup: %s MiB (growth %s MiB); after verified backup: %s MiB (target growth < 64 MiB)\n' \
  "$(mb $((RSS_BEFORE * 1024)))" "$(mb $((HWM * 1024)))" "$(mb $(((HWM - RSS_BEFORE) * 1024)))" "$(mb $((HWM_V * 1024)))"
