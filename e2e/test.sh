#!/usr/bin/env bash
# The whole test suite: brings the test platform up (building it on first use), then runs the unit,
# integration and chart checks against it. Leaves the platform running; `e2e/platform.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tools the suite calls that a fresh Debian machine may lack: Lua 5.1 for the Argo CD health-check
# tests (Argo CD runs Lua 5.1) and PyYAML for their runner; curl and zstd, which the restore-by-hand
# runbook in docs/backups.md uses (a test runs it as written).
need=()
for tool in lua5.1 zstd curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  echo "installing ${need[*]} (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml 2>/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null
e2e/platform.sh up
eval "$(e2e/platform.sh env)"

step() { printf '\n=== %s\n' "$*"; }

step "format and lint"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

step "chart: helm lint, server-side dry run"
e2e/chart-check.sh

step "Argo CD health check (Lua)"
deploy/argocd/test.sh

step "migration tools for the adoption tests (sqlx-cli, golang-migrate, dbmate, diesel_cli, Flyway; cached)"
# Installed before the tests, one at a time: tests/adoption.rs runs the real tools.
bash -c 'set -euo pipefail; source e2e/lib/migration-tools.sh; tool_all' >/dev/null

step "cargo test (unit + integration against the platform)"
# Benches (harness = false) are not run here: they print figures and live in e2e/bench.
cargo test --locked --lib --bins --tests -- --test-threads 4
