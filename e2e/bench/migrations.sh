#!/usr/bin/env bash
# Benchmark (prints figures; not a test): histories of small migrations (CREATE TABLE, CREATE INDEX,
# ALTER TABLE) applied by Lifeboat's runner, by `sqlx migrate run` (sqlx-cli from crates.io) and by
# `psql -1 -f` of the concatenated SQL, each on a fresh database on the platform's PostgreSQL 18, every
# size in the same invocation. Ratios are against sqlx-cli; the last table compares Lifeboat's time per
# migration across sizes (linear cost: the ratio stays near 1).
# Usage: e2e/bench/migrations.sh [count...]   (default: 500 10000); LIFEBOAT_BENCH_RUNS (default 3)
# runs of each, the median reported.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
COUNTS=("$@")
[[ $# -eq 0 ]] && COUNTS=(500 10000)
SQLX_CLI_VERSION="0.9.0"
CACHE="${LIFEBOAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat}"
SQLX_ROOT="$CACHE/sqlx-cli-$SQLX_CLI_VERSION"
SQLX="$SQLX_ROOT/bin/sqlx"

if [[ -z "${LIFEBOAT_PG_HOST:-}" ]]; then
  eval "$("$ROOT/e2e/platform.sh" env)"
fi
: "${LIFEBOAT_PG_HOST:?start the platform: e2e/platform.sh up}"

if [[ ! -x "$SQLX" ]]; then
  echo "installing sqlx-cli $SQLX_CLI_VERSION into $SQLX_ROOT (once; several minutes)" >&2
  cargo install sqlx-cli --version "$SQLX_CLI_VERSION" --locked --no-default-features \
    --features postgres,rustls --root "$SQLX_ROOT" >&2
fi

echo "building the Lifeboat runner example (release)" >&2
(cd "$ROOT" && cargo build -q --release --example migrate_bench)
BENCH_BIN="$ROOT/target/release/examples/migrate_bench"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

export PGPASSWORD="$LIFEBOAT_PG_PASSWORD" PGOPTIONS="-c client_min_messages=warning"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$LIFEBOAT_PG_HOST" -p "$LIFEBOAT_PG_PORT" -U "$LIFEBOAT_PG_USER")
SUFFIX="$$"
fresh_db() { # name
  "${PSQL[@]}" -d postgres -c "drop database if exists $1 with (force)" -c "create database $1" >/dev/null
}
drop_db() { "${PSQL[@]}" -d postgres -c "drop database if exists $1 with (force)" >/dev/null; }
now() { date +%s.%N; }
tables() { "${PSQL[@]}" -d "$1" -Atc "select count(*) from pg_tables where tablename like 'bench_t%'"; }

RUNS="${LIFEBOAT_BENCH_RUNS:-3}"
declare -A SECONDS_TAKEN TIMES
run_case() { # label db command...  (one timed run; appended to TIMES[label])
  local label=$1 db=$2; shift 2
  fresh_db "$db"
  local start end
  start=$(now)
  "$@" >"$WORK/$label.log" 2>&1 || { cat "$WORK/$label.log" >&2; echo "$label failed" >&2; exit 1; }
  end=$(now)
  TIMES[$label]+="$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }') "
  echo "$label: $(tables "$db") tables" >&2
  drop_db "$db"
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

URL_BASE="postgres://$LIFEBOAT_PG_USER@$LIFEBOAT_PG_HOST:$LIFEBOAT_PG_PORT"
declare -A PER_MIGRATION
for COUNT in "${COUNTS[@]}"; do
  MIGRATIONS="$WORK/migrations-$COUNT"
  mkdir -p "$MIGRATIONS"
  # Every third migration creates a table; the next indexes it; the next adds a column to it.
  for ((i = 1; i <= COUNT; i++)); do
    t=$(( (i - 1) / 3 ))
    case $(( (i - 1) % 3 )) in
      0) sql="create table bench_t$t (id bigint primary key, a integer, b text);" ;;
      1) sql="create index bench_t${t}_a on bench_t$t (a);" ;;
      2) sql="alter table bench_t$t add column c text;" ;;
    esac
    printf '%s\n' "$sql" > "$MIGRATIONS/$(printf '%05d' "$i")_step_$i.sql"
  done
  cat "$MIGRATIONS"/*.sql > "$WORK/all-$COUNT.sql"

  TIMES=()
  # The tools take turns in each round, so a slow spell of the server touches them all alike.
  for ((run = 1; run <= RUNS; run++)); do
    run_case sqlx-cli "bench_sqlx_$SUFFIX" \
      env DATABASE_URL="$URL_BASE/bench_sqlx_$SUFFIX?sslmode=disable" "$SQLX" migrate run --source "$MIGRATIONS"
    run_case lifeboat "bench_lifeboat_$SUFFIX" \
      "$BENCH_BIN" --dir "$MIGRATIONS" --database "bench_lifeboat_$SUFFIX" --lint off
    run_case lifeboat-lint-warn "bench_lifeboat_lint_$SUFFIX" \
      "$BENCH_BIN" --dir "$MIGRATIONS" --database "bench_lifeboat_lint_$SUFFIX" --lint warn
    run_case "psql-1-f" "bench_psql_$SUFFIX" \
      "${PSQL[@]}" -1 -d "bench_psql_$SUFFIX" -f "$WORK/all-$COUNT.sql"
  done
  for label in "${!TIMES[@]}"; do
    SECONDS_TAKEN[$label]=$(echo "${TIMES[$label]}" | median)
  done

  base=${SECONDS_TAKEN[sqlx-cli]}
  printf '\n%d migrations, PostgreSQL %s, fresh database each (wall time of the whole process, median of %d)\n' \
    "$COUNT" "$("${PSQL[@]}" -d postgres -Atc 'show server_version')" "$RUNS"
  printf '%-22s %10s %14s\n' tool seconds "vs sqlx-cli"
  for label in sqlx-cli lifeboat lifeboat-lint-warn psql-1-f; do
    s=${SECONDS_TAKEN[$label]}
    printf '%-22s %10.3f %13.2fx\n' "$label" "$s" "$(awk -v a="$s" -v b="$base" 'BEGIN { print a / b }')"
  done
  PER_MIGRATION[$COUNT]=$(awk -v a="${SECONDS_TAKEN[lifeboat-lint-warn]}" -v n="$COUNT" 'BEGIN { print a * 1000 / n }')
  rm -rf "$MIGRATIONS"
done

first=${COUNTS[0]}
printf '\nLifeboat (lint: warn) per migration, against the smallest size\n'
printf '%-10s %14s %10s\n' migrations "ms/migration" ratio
for COUNT in "${COUNTS[@]}"; do
  printf '%-10d %14.3f %9.2fx\n' "$COUNT" "${PER_MIGRATION[$COUNT]}" \
    "$(awk -v a="${PER_MIGRATION[$COUNT]}" -v b="${PER_MIGRATION[$first]}" 'BEGIN { print a / b }')"
done
