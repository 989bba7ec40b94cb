#!/usr/bin/env bash
# Runs deploy/argocd/health.lua against every case in health_test/health_test.yaml, the way Argo CD does
# (global `obj` = the object, the script returns {status, message}), and checks that argocd-cm-patch.yaml
# embeds exactly health.lua for each of the four kinds.
#
# Needs a Lua interpreter and python3 with PyYAML; it installs nothing. Argo CD runs gopher-lua (Lua 5.1), so
# lua5.1 is preferred; lua5.4 or lua also work. On Debian/Ubuntu: apt-get install lua5.1 python3-yaml
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

LUA=${LUA:-}
if [[ -z $LUA ]]; then
  for candidate in lua5.1 lua5.4 lua5.3 lua luajit; do
    if command -v "$candidate" >/dev/null 2>&1; then LUA=$candidate; break; fi
  done
fi
if [[ -z $LUA ]]; then
  echo "test.sh: no Lua interpreter found; install Debian's lua5.1 (or lua5.4) package" >&2
  exit 2
fi
python3 -c 'import yaml' 2>/dev/null || { echo "test.sh: python3 needs PyYAML (Debian: python3-yaml)" >&2; exit 2; }

exec python3 - "$HERE" "$LUA" <<'PY'
import os, subprocess, sys, yaml

here, lua = sys.argv[1], sys.argv[2]

class Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, as Argo CD sees them (JSON)."""
Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

def lua_literal(v):
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        out = []
        for ch in v:
            if ch in '\\"':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ord(ch) < 32:
                out.append("\\%03d" % ord(ch))
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(v, list):
        return "{" + ", ".join(lua_literal(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join("[%s] = %s" % (lua_literal(str(k)), lua_literal(x))
                               for k, x in v.items() if x is not None) + "}"
    raise TypeError(type(v))

script = os.path.join(here, "health.lua")
driver = """
obj = %s
local check = assert(loadfile(%s))
local hs = check()
io.write(tostring(hs.status), "\\n", tostring(hs.message), "\\n")
"""

passed = failed = 0
tests_dir = os.path.join(here, "health_test")
with open(os.path.join(tests_dir, "health_test.yaml")) as f:
    tests = yaml.load(f, Loader=Loader)["tests"]
for t in tests:
    with open(os.path.join(tests_dir, t["inputPath"])) as f:
        obj = yaml.load(f, Loader=Loader)
    proc = subprocess.run([lua, "-"], input=driver % (lua_literal(obj), lua_literal(script)),
                          capture_output=True, text=True)
    want = t["healthStatus"]
    if proc.returncode != 0:
        failed += 1
        print("FAIL %s: lua error: %s" % (t["inputPath"], proc.stderr.strip()))
        continue
    status, message = proc.stdout.split("\n")[:2]
    if status == want["status"] and message == want.get("message", message):
        passed += 1
        print("ok   %s: %s" % (t["inputPath"], status))
    else:
        failed += 1
        print("FAIL %s: got %s %r, want %s %r" % (t["inputPath"], status, message, want["status"], want.get("message")))

# The ConfigMap patch must carry the same script for every kind.
with open(script) as f:
    source = f.read()
with open(os.path.join(here, "argocd-cm-patch.yaml")) as f:
    data = yaml.load(f, Loader=Loader)["data"]
for kind in ("DatabaseEnvironment", "MigrationRun", "BackupSchedule", "RestoreDrill"):
    key = "resource.customizations.health.lifeboat.dev_" + kind
    if data.get(key) == source:
        passed += 1
        print("ok   argocd-cm-patch.yaml: %s matches health.lua" % key)
    else:
        failed += 1
        print("FAIL argocd-cm-patch.yaml: %s differs from health.lua (regenerate the patch)" % key)

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
PY
