#!/usr/bin/env bash
# Turns states the integration tests captured into Argo CD health check test cases, in Argo CD's layout:
# resource_customizations/lifeboat.dev/<Kind>/{health.lua, health_test.yaml, testdata/*.yaml}.
#
#   deploy/argocd/capture.sh --run [DIR]   run the suites below with LIFEBOAT_CAPTURE_DIR=DIR (default: a
#                                          fresh temporary directory), then generate from DIR
#   deploy/argocd/capture.sh DIR           generate from a directory captured before
#
# --run needs the platform up and its environment: eval "$(e2e/platform.sh env)"; states already in DIR stay.
# For each kind found in DIR it replaces that kind's testdata/ and health_test.yaml with a handful of the
# distinct states (CASES_PER_KIND, default 8, covering every health status seen) plus the hand-written cases
# (first line "# hand-written") no captured state stands for: the expected status from the intended rule
# (healthcheck.py), the message from health.lua. It exits 1, naming the states, when the Lua disagrees with
# the rule; those cases are written anyway, so test.sh fails until health.lua is fixed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUITES=(kstatus database_environment migration_run backup_schedule restore_drill)
cases=${CASES_PER_KIND:-8}
if [[ ${1:-} == --run ]]; then
  dir=${2:-$(mktemp -d -t lifeboat-capture.XXXXXX)}
  dir=$(mkdir -p "$dir" && cd "$dir" && pwd) # the tests run in the repository's root
  [[ -n ${KUBECONFIG:-} ]] || { echo "capture.sh: the platform's environment is not set: eval \"\$(e2e/platform.sh env)\"" >&2; exit 2; }
  args=()
  for suite in "${SUITES[@]}"; do args+=(--test "$suite"); done
  if ! (cd "$HERE/../.." && LIFEBOAT_CAPTURE_DIR=$dir cargo test --no-fail-fast "${args[@]}"); then
    echo "capture.sh: a suite failed; nothing generated. The states it saw are in $dir:" \
      "deploy/argocd/capture.sh $dir generates from them anyway" >&2
    exit 1
  fi
  echo "captured $(find "$dir" -name '*.yaml' | wc -l) states into $dir"
else
  dir=${1:?usage: capture.sh --run [DIR] | capture.sh DIR [CASES_PER_KIND]}
  cases=${2:-$cases}
fi
exec python3 "$HERE/healthcheck.py" capture "$dir" "$cases"
