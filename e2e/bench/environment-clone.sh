#!/usr/bin/env bash
# Apply-to-Ready of ci environments cloned from a template vs raw `createdb -T`, same run, same server.
set -euo pipefail
cd "$(dirname "$0")/../.."
e2e/platform.sh up
eval "$(e2e/platform.sh env)"
cargo bench --locked --bench environment_clone
