#!/usr/bin/env bash
# `lifeboat ci up --wait` of a pull request (3 migrations on a 200-table template) vs createdb -T + psql,
# p50/p95 over 30 runs each, same run, same server.
set -euo pipefail
cd "$(dirname "$0")/../.."
e2e/platform.sh up
eval "$(e2e/platform.sh env)"
cargo bench --locked --bench ci_up
