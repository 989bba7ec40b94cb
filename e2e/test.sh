#!/usr/bin/env bash
# The whole test suite: brings the test platform up (building it on first use), then runs the unit,
# integration and chart checks against it. Leaves the platform running; `e2e/platform.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
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

step "cargo test (unit + integration against the platform)"
# Benches (harness = false) are not run here: they print figures and live in e2e/bench.
cargo test --locked --lib --bins --tests -- --test-threads 4
