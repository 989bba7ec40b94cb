#!/usr/bin/env bash
# Runs Lifeboat's Argo CD health check the way Argo CD does (global `obj` = the object, the script returns
# {status, message}) against every case of resource_customizations/lifeboat.dev/<Kind>/health_test.yaml
# (Argo CD's own layout; the cases are states the integration tests captured, see capture.sh). Checks that
# each case's expected status is the intended rule's (healthcheck.py) and the Lua's answer, that every
# <Kind>/health.lua is byte for byte health.lua, and that argocd-cm-patch.yaml embeds exactly health.lua for
# each of the four kinds.
#
# Needs a Lua interpreter and python3 with PyYAML; it installs nothing. Argo CD runs gopher-lua (Lua 5.1), so
# lua5.1 is preferred; lua5.4 or lua also work (or set LUA). On Debian/Ubuntu: apt-get install lua5.1 python3-yaml
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -z ${LUA:-} ]] && ! command -v lua5.1 lua5.4 lua5.3 lua luajit >/dev/null 2>&1; then
  echo "test.sh: no Lua interpreter found; install Debian's lua5.1 (or lua5.4) package" >&2
  exit 2
fi
python3 -c 'import yaml' 2>/dev/null || { echo "test.sh: python3 needs PyYAML (Debian: python3-yaml)" >&2; exit 2; }
exec python3 "$HERE/healthcheck.py" test
