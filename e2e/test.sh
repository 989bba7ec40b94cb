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
# The platform with its node (kubelet, containerd, kube-proxy, CoreDNS: pods run; docs/testing.md).
e2e/platform.sh up --with-node
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

step "node: a pod's log, exec, Service DNS and ClusterIP"
e2e/platform.sh node-check

step "images: the operator (release build), PostgreSQL 18 and 15 and Redis 7, imported into the node"
# tests/node.rs installs the chart with this image and starts `instance` databases from these.
cargo build --release --locked --bin lifeboat
# The operator's archive last: the Dockerfile check below takes the last line.
images=$(bash -c 'set -euo pipefail; source e2e/lib/images.sh
  images_build_postgres 18; images_build_postgres 15; images_build_redis 7
  images_build_operator target/release/lifeboat')
# The Dockerfile (the published recipe) must describe what was built here.
bash -c 'set -euo pipefail; source e2e/lib/images.sh; images_check_dockerfile "$1"' _ "$(tail -1 <<<"$images")"
# shellcheck disable=SC2086 # one path per line
e2e/platform.sh import-image $images
LIFEBOAT_OPERATOR_IMAGE=$(bash -c 'source e2e/lib/images.sh; printf %s "$IMAGES_OPERATOR_IMAGE"')
export LIFEBOAT_OPERATOR_IMAGE

step "cargo test (unit + integration against the platform)"
# Benches (harness = false) are not run here: they print figures and live in e2e/bench.
cargo test --locked --lib --bins --tests -- --test-threads 4
