"""Lifeboat's Argo CD health check: its test runner (`test`, behind test.sh) and the generator of its test
cases from states the integration tests captured (`capture`, behind capture.sh).

Cases live in Argo CD's own layout, resource_customizations/lifeboat.dev/<Kind>/{health.lua,
health_test.yaml, testdata/*.yaml}, so the folder can go upstream as it is. Each case's expected status comes
from intended() below (the rule of deploy/README.md and tests/kstatus.rs), never from the Lua; only the
message is taken from what the Lua returned when the case was generated. The Lua has to agree with the rule.
"""
import os, re, shutil, subprocess, sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
GROUP = "lifeboat.dev"
KINDS = ("DatabaseEnvironment", "MigrationRun", "BackupSchedule", "RestoreDrill")
SCRIPT = os.path.join(HERE, "health.lua")
CUSTOMIZATIONS = os.path.join(HERE, "resource_customizations", GROUP)


class Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, as Argo CD sees them (JSON)."""


Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(path):
    with open(path) as f:
        return yaml.load(f, Loader=Loader)


def dump(value):
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=10**6)


# --- The intended health, written from the rule (not from the Lua) ---------------------------------------

def true_condition(status, type_):
    for c in status.get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def intended(obj):
    """(Argo CD health status, the rule that decided it), in the order of deploy/README.md's table:

    no status, or observedGeneration behind generation      Progressing  (kstatus: InProgress; for kstatus
                                                                          no status at all is Current, a
                                                                          gap Argo CD's check closes)
    MigrationRun phase Succeeded                            Healthy
    MigrationRun phase Failed or RolledBack                 Degraded
    Stalled True                                            Degraded     (kstatus: Failed)
    BackupSchedule spec.suspend                             Suspended
    Reconciling True                                        Progressing  (kstatus: InProgress)
    RestoreDrill ObjectivesMet False                        Degraded
    Ready True                                              Healthy      (kstatus: Current)
    anything else                                           Progressing
    """
    status = obj.get("status") or {}
    if not status:
        return "Progressing", "no status"
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return "Progressing", "observedGeneration behind generation"
    kind = obj.get("kind")
    if kind == "MigrationRun" and status.get("phase") == "Succeeded":
        return "Healthy", "MigrationRun Succeeded"
    if kind == "MigrationRun" and status.get("phase") in ("Failed", "RolledBack"):
        return "Degraded", "MigrationRun " + status["phase"]
    if true_condition(status, "Stalled"):
        return "Degraded", "Stalled"
    if kind == "BackupSchedule" and (obj.get("spec") or {}).get("suspend") is True:
        return "Suspended", "suspended"
    if true_condition(status, "Reconciling"):
        return "Progressing", "Reconciling"
    if kind == "RestoreDrill" and any(c.get("type") == "ObjectivesMet" and c.get("status") == "False"
                                      for c in status.get("conditions") or []):
        return "Degraded", "ObjectivesMet False"
    if true_condition(status, "Ready"):
        return "Healthy", "Ready"
    return "Progressing", "neither Ready, Reconciling nor Stalled"


# --- Running the Lua as Argo CD does (global `obj`, the script returns a table) ---------------------------

def find_lua():
    if os.environ.get("LUA"):
        return os.environ["LUA"]
    for candidate in ("lua5.1", "lua5.4", "lua5.3", "lua", "luajit"):
        if shutil.which(candidate):
            return candidate
    sys.exit("healthcheck: no Lua interpreter found; install Debian's lua5.1 (or lua5.4) package")


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


DRIVER = """
obj = %s
local check = assert(loadfile(%s))
local hs = check()
io.write(tostring(hs.status), "\\0", tostring(hs.message))
"""


def run_lua(lua, script, obj):
    """(status, message) the script returns for obj; raises RuntimeError when the script fails."""
    proc = subprocess.run([lua, "-"], input=DRIVER % (lua_literal(obj), lua_literal(script)),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    status, message = proc.stdout.split("\0", 1)
    return status, message


# --- test -------------------------------------------------------------------------------------------------

def cmd_test(lua):
    passed = failed = 0

    def ok(text):
        nonlocal passed
        passed += 1
        print("ok   " + text)

    def fail(text):
        nonlocal failed
        failed += 1
        print("FAIL " + text)

    with open(SCRIPT, "rb") as f:
        source = f.read()

    def run_cases(folder, script, kind):
        """The cases of one health_test.yaml: the Lua must give the expected status and message, and the
        expected status must be the rule's."""
        tests = load(os.path.join(folder, "health_test.yaml"))["tests"]
        if not tests:
            fail("%s: no cases" % os.path.relpath(folder, HERE))
        for t in tests:
            name = os.path.relpath(os.path.join(folder, t["inputPath"]), HERE)
            obj = load(os.path.join(folder, t["inputPath"]))
            want = t["healthStatus"]
            if obj.get("kind") != kind or not str(obj.get("apiVersion", "")).startswith(GROUP + "/"):
                fail("%s: a %s %s in the folder of %s" % (name, obj.get("apiVersion"), obj.get("kind"), kind))
                continue
            rule, why = intended(obj)
            if want["status"] != rule:
                fail("%s: expects %s, but the rule says %s (%s)" % (name, want["status"], rule, why))
                continue
            try:
                status, message = run_lua(lua, script, obj)
            except RuntimeError as e:
                fail("%s: lua error: %s" % (name, e))
                continue
            if status == want["status"] and message == want.get("message", message):
                ok("%s: %s" % (name, status))
            else:
                fail("%s: got %s %r, want %s %r (the rule: %s)"
                     % (name, status, message, want["status"], want.get("message"), why))
        listed = set(os.path.normpath(t["inputPath"]) for t in tests)
        for file in sorted(os.listdir(os.path.join(folder, "testdata"))):
            if os.path.join("testdata", file) not in listed:
                fail("%s: not in health_test.yaml" % os.path.relpath(os.path.join(folder, "testdata", file), HERE))

    # Argo CD's layout: one folder per kind, each with a copy of health.lua and its own cases.
    for kind in KINDS:
        folder = os.path.join(CUSTOMIZATIONS, kind)
        copy = os.path.join(folder, "health.lua")
        if not os.path.exists(copy):
            fail("%s missing" % os.path.relpath(copy, HERE))
            continue
        with open(copy, "rb") as f:
            if f.read() == source:
                ok("%s is health.lua" % os.path.relpath(copy, HERE))
            else:
                fail("%s differs from health.lua (run capture.sh, or copy health.lua)" % os.path.relpath(copy, HERE))
        if os.path.exists(os.path.join(folder, "health_test.yaml")):
            run_cases(folder, copy, kind)
        else:
            fail("%s/health_test.yaml missing" % os.path.relpath(folder, HERE))
    for extra in sorted(os.listdir(CUSTOMIZATIONS)):
        if extra not in KINDS:
            fail("%s: not one of Lifeboat's kinds" % os.path.relpath(os.path.join(CUSTOMIZATIONS, extra), HERE))

    # The ConfigMap patch must carry the same script for every kind.
    data = load(os.path.join(HERE, "argocd-cm-patch.yaml"))["data"]
    for kind in KINDS:
        key = "resource.customizations.health.%s_%s" % (GROUP, kind)
        if data.get(key, "").encode() == source:
            ok("argocd-cm-patch.yaml: %s matches health.lua" % key)
        else:
            fail("argocd-cm-patch.yaml: %s differs from health.lua (regenerate the patch)" % key)

    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


# --- capture ----------------------------------------------------------------------------------------------

def state_key(obj):
    """What the rule reads (the same as tests/support/capture.rs's key)."""
    status = obj.get("status") or {}
    conditions = sorted("%s=%s/%s" % (c.get("type") or "", c.get("status") or "", c.get("reason") or "")
                        for c in status.get("conditions") or []
                        if c.get("status") == "True" or c.get("type") == "ObjectivesMet")
    caught_up = bool(status) and status.get("observedGeneration") == (obj.get("metadata") or {}).get("generation")
    return "%s status=%s caughtUp=%s conditions=[%s] phase=%s suspend=%s" % (
        obj.get("kind"), str(bool(status)).lower(), str(caught_up).lower(), ",".join(conditions),
        status.get("phase", "-"), str((obj.get("spec") or {}).get("suspend") is True).lower())


def lower_camel(text):
    words = [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]
    return "".join((w[0].lower() + w[1:]) if i == 0 else (w[0].upper() + w[1:]) for i, w in enumerate(words))


def describe(obj, why):
    """Names for a case, Argo CD style (progressing_noStatus): (what decided it and its reason, that and the
    reasons of the other conditions the rule reads)."""
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    parts, decider = [], None
    if why == "no status":
        parts.append("noStatus")
    elif why.startswith("observedGeneration"):
        parts.append("observedGenerationBehind")
    elif why.startswith("MigrationRun "):
        parts.append(status["phase"])
        decider = "Ready" if status["phase"] == "Succeeded" else "Stalled"
    elif why == "suspended":
        parts.append("suspended")
    else:
        decider = {"Stalled": "Stalled", "Reconciling": "Reconciling", "Ready": "Ready",
                   "ObjectivesMet False": "ObjectivesMet"}.get(why)
    reason = next((c.get("reason") or "" for c in conditions if c.get("type") == decider), "")
    if reason and reason.lower() not in (p.lower() for p in parts):
        parts.append(reason)
    # What decided: a MigrationRun's terminal phase whatever its reason, otherwise the deciding reason too.
    primary = parts[:1] if why.startswith("MigrationRun ") else list(parts)
    for c in sorted(conditions, key=lambda c: str(c.get("type"))):
        if c.get("type") != decider and (c.get("status") == "True" or c.get("type") == "ObjectivesMet"):
            if c.get("reason") and c["reason"].lower() not in (p.lower() for p in parts):
                parts.append(c["reason"])
    return lower_camel(" ".join(primary)), lower_camel(" ".join(parts) or why)


HAND_WRITTEN = "# hand-written"


def cmd_capture(lua, capture_dir, per_kind):
    found = {kind: {} for kind in KINDS}  # kind -> state key -> (obj, provenance)
    ignored = 0
    for name in sorted(os.listdir(capture_dir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(capture_dir, name)) as f:
            text = f.read()
        obj = yaml.load(text, Loader=Loader)
        kind = obj.get("kind")
        if kind not in found or not str(obj.get("apiVersion", "")).startswith(GROUP + "/"):
            ignored += 1
            continue
        provenance = [line for line in text.splitlines() if line.startswith("# captured from ")][:1]
        found[kind].setdefault(state_key(obj), (obj, provenance[0][2:] if provenance else "captured"))
    disagreements = []

    def case(kind, folder, key, obj):
        want, why = intended(obj)
        try:
            got, message = run_lua(lua, os.path.join(folder, "health.lua"), obj)
        except RuntimeError as e:
            got, message = "error", str(e)
        if got != want:
            disagreements.append("%s [%s]: the rule says %s (%s), the Lua says %s %r"
                                 % (kind, key, want, why, got, message))
        primary, name = describe(obj, why)
        return dict(status=want, primary=primary, name=name, key=key, obj=obj, message=message,
                    agrees=got == want)

    for kind in KINDS:
        folder = os.path.join(CUSTOMIZATIONS, kind)
        data = os.path.join(folder, "testdata")
        os.makedirs(data, exist_ok=True)
        shutil.copyfile(SCRIPT, os.path.join(folder, "health.lua"))
        if not found[kind]:
            print("%s: no state captured; its cases stay as they are" % kind)
            continue
        cases = []
        for key, (obj, provenance) in sorted(found[kind].items()):
            cases.append(dict(case(kind, folder, key, obj), provenance=provenance))
        # Hand-written cases (first line "# hand-written") stand for states no suite produces; they stay
        # until one does.
        hand = []
        for file in sorted(os.listdir(data)):
            with open(os.path.join(data, file)) as f:
                text = f.read()
            if not text.startswith(HAND_WRITTEN):
                continue
            obj = yaml.load(text, Loader=Loader)
            key = state_key(obj)
            if key in found[kind]:
                print("%s: testdata/%s is now captured; dropped" % (kind, file))
                continue
            hand.append(dict(case(kind, folder, key, obj), file=file, text=text))
        chosen = choose(cases, per_kind)
        shutil.rmtree(data)
        os.makedirs(data)
        tests, used = [], set(h["file"] for h in hand)
        for c in chosen:
            base = "%s_%s" % (c["status"].lower(), c["name"])
            file, n = base + ".yaml", 2
            while file in used:
                file, n = "%s_%d.yaml" % (base, n), n + 1
            used.add(file)
            with open(os.path.join(data, file), "w") as f:
                f.write("# %s\n# state: %s\n%s" % (c["provenance"], c["key"], dump(c["obj"])))
            c["file"] = file
        for h in hand:
            with open(os.path.join(data, h["file"]), "w") as f:
                f.write(h["text"])
        for c in chosen + hand:
            tests.append({"healthStatus": {"status": c["status"], "message": c["message"]},
                          "inputPath": "testdata/" + c["file"]})
        with open(os.path.join(folder, "health_test.yaml"), "w") as f:
            f.write(dump({"tests": tests}))
        counts = {}
        for c in chosen + hand:
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        print("%s: %d distinct states captured, %d kept, %d hand-written (%s)" % (
            kind, len(cases), len(chosen), len(hand), ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
    if ignored:
        print("%d captured objects of other kinds ignored" % ignored)
    for d in disagreements:
        print("DISAGREE " + d)
    return 1 if disagreements else 0


ORDER = ("Healthy", "Progressing", "Degraded", "Suspended")


def choose(cases, per_kind):
    """A handful of cases: every one where the Lua disagrees with the rule, then round robin over the health
    statuses, first one case for each thing that decides a status (no status and a generation behind first,
    then each deciding reason, the shortest message first, each in its plainest state), then the others to the
    status with the fewest, up to per_kind."""
    chosen = [c for c in cases if not c["agrees"]]
    special = {"noStatus": 0, "observedGenerationBehind": 1}
    groups = {}  # (status, what decided it) -> its cases, the plainest state (fewest conditions) first
    for c in sorted((c for c in cases if c["agrees"]), key=lambda c: (len(c["key"]), c["key"])):
        groups.setdefault((c["status"], c["primary"]), []).append(c)
    firsts, rest = {}, {}
    for (status, primary), group in sorted(
            groups.items(), key=lambda g: (special.get(g[0][1], 2), len(g[1][0]["message"]), g[0][1])):
        firsts.setdefault(status, []).append(group[0])
        rest.setdefault(status, []).extend(group[1:])

    def rank(status):
        return ORDER.index(status) if status in ORDER else len(ORDER)

    # The first tier in turn, the second to the status with the fewest cases so far.
    statuses = sorted(firsts, key=rank)
    while len(chosen) < per_kind and any(firsts[s] for s in statuses):
        for s in statuses:
            if firsts[s] and len(chosen) < per_kind:
                chosen.append(firsts[s].pop(0))
    while len(chosen) < per_kind and any(rest.values()):
        s = min((s for s in rest if rest[s]),
                key=lambda s: (sum(c["status"] == s for c in chosen), rank(s)))
        chosen.append(rest[s].pop(0))
    chosen.sort(key=lambda c: (rank(c["status"]), c["name"]))
    return chosen


def main(argv):
    lua = find_lua()
    if len(argv) >= 1 and argv[0] == "test":
        return cmd_test(lua)
    if len(argv) >= 2 and argv[0] == "capture":
        per_kind = int(argv[2]) if len(argv) > 2 else 8
        return cmd_capture(lua, argv[1], per_kind)
    sys.exit("usage: healthcheck.py test | capture CAPTURE_DIR [CASES_PER_KIND]")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
