#!/usr/bin/env python3
"""Helpers of e2e/lib/images.sh that are easier in Python than in shell.

  archive.py write OUT CONFIG.json TAG LAYER.tar [LAYER.tar...]
      Write a docker-archive (the `docker save` layout that `docker load` and `ctr images import` read):
      manifest.json, repositories, <config digest>.json and <diff id>/layer.tar per layer. CONFIG.json
      holds the image's runtime config (the "config" object of the image config); the rootfs diff ids,
      history, os and architecture are filled in here.
  archive.py config ARCHIVE
      Print the image config (JSON) of a docker-archive, with its RepoTags under "RepoTags".
  archive.py layers ARCHIVE
      Print the archive's layer paths, one a line, bottom first.
  archive.py dockerfile DOCKERFILE
      Print (JSON) the runtime facts of the Dockerfile's last stage: its base, the config a build would
      give the image (Env, User, Entrypoint, Cmd, ExposedPorts, Labels, ...), the files it copies in, the
      users it creates, the apt packages it keeps, and any instruction this parser does not model.
  archive.py chart VALUES.yaml CHART.yaml
      Print the chart's default operator image (image.repository:image.tag, the tag defaulting to appVersion).
"""

import hashlib
import io
import json
import os
import re
import shlex
import sys
import tarfile

# The environment of debian:<release>-slim, which the Dockerfile's runtime stage starts from.
DEBIAN_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
CREATED = "1970-01-01T00:00:00Z"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write(out, config_path, tag, layers):
    with open(config_path) as f:
        runtime = json.load(f)
    diff_ids = [sha256_file(layer) for layer in layers]
    image = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d in diff_ids]},
        "history": [
            {"created": CREATED, "created_by": "e2e/lib/images.sh: " + os.path.basename(layer)}
            for layer in layers
        ],
    }
    config = json.dumps(image, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    repo, _, version = tag.rpartition(":")
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [d + "/layer.tar" for d in diff_ids]}]
    tmp = out + ".partial"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for digest, layer in zip(diff_ids, layers):
            info = tar.gettarinfo(layer, arcname=digest + "/layer.tar")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            info.mtime = 0
            with open(layer, "rb") as f:
                tar.addfile(info, f)
        add_bytes(tar, config_name, config)
        add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
        add_bytes(tar, "repositories", json.dumps({repo: {version: diff_ids[-1]}}).encode())
    os.replace(tmp, out)


def read_manifest(archive):
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]
        config = json.load(tar.extractfile(manifest["Config"]))
    return manifest, config


# ------------------------------------------------------------------------------------------- Dockerfile
def logical_lines(text):
    """Instructions of a Dockerfile: continuation lines joined, comments and blank lines dropped."""
    out, cur = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not cur and (not line or line.startswith("#")):
            continue
        if cur and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    if cur.strip():
        out.append(cur.strip())
    return out


def expand(value, scope):
    def sub(m):
        name = m.group(1) or m.group(2)
        return scope.get(name, "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, value)


def key_values(rest, scope):
    """ENV/LABEL arguments: k=v pairs (quotes allowed), or the legacy `ENV key value` form."""
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        return [(words[0], expand(" ".join(words[1:]), scope))]
    pairs = []
    for w in words:
        k, _, v = w.partition("=")
        pairs.append((k, expand(v, scope)))
    return pairs


def exec_form(rest):
    rest = rest.strip()
    if rest.startswith("["):
        return json.loads(rest)
    return ["/bin/sh", "-c", rest]


def dockerfile(path):
    lines = logical_lines(open(path).read())
    global_args, stages = {}, []
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append([line])
        elif not stages:
            if word == "ARG":
                k, _, v = rest.strip().partition("=")
                global_args[k] = v.strip('"')
        else:
            stages[-1].append(line)
    final = stages[-1]
    base = expand(final[0].split()[1], global_args)
    args, env, labels = {}, dict(DEBIAN_BASE_ENV), {}
    facts = {"base": base, "copies": [], "users": [], "groups": [], "apt_installed": [], "apt_purged": [],
             "unmodelled": []}
    config = {"Env": None, "Labels": None}
    for line in final[1:]:
        word, _, rest = line.partition(" ")
        word = word.upper()
        scope = {**args, **env}
        if word == "ARG":
            k, eq, v = rest.strip().partition("=")
            args[k] = v.strip('"') if eq else global_args.get(k, "")
        elif word == "ENV":
            for k, v in key_values(rest, scope):
                env[k] = v
                scope[k] = v
        elif word == "LABEL":
            for k, v in key_values(rest, scope):
                labels[k] = v
        elif word == "USER":
            config["User"] = expand(rest.strip(), scope)
        elif word == "EXPOSE":
            ports = config.setdefault("ExposedPorts", {})
            for p in expand(rest, scope).split():
                ports[p if "/" in p else p + "/tcp"] = {}
        elif word == "ENTRYPOINT":
            config["Entrypoint"] = exec_form(rest)
        elif word == "CMD":
            config["Cmd"] = exec_form(rest)
        elif word == "WORKDIR":
            config["WorkingDir"] = expand(rest.strip(), scope)
        elif word == "STOPSIGNAL":
            config["StopSignal"] = expand(rest.strip(), scope)
        elif word == "VOLUME":
            vols = json.loads(rest) if rest.strip().startswith("[") else rest.split()
            config.setdefault("Volumes", {}).update({v: {} for v in vols})
        elif word in ("COPY", "ADD"):
            words = shlex.split(rest)
            opts = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
            paths = [expand(w, scope) for w in words if not w.startswith("--")]
            facts["copies"].append({"instruction": word, "from": opts.get("from"), "sources": paths[:-1],
                                    "dest": paths[-1], "chmod": opts.get("chmod"), "chown": opts.get("chown")})
        elif word == "RUN":
            text = expand(rest, scope)
            for cmd in re.split(r"&&|;|\|\|", text):
                w = shlex.split(cmd.replace("\\", " "), comments=False) if cmd.strip() else []
                if not w:
                    continue
                if w[0] == "useradd":
                    facts["users"].append(parse_useradd(w[1:]))
                elif w[0] == "groupadd":
                    facts["groups"].append(parse_groupadd(w[1:]))
                elif w[:2] == ["apt-get", "install"]:
                    facts["apt_installed"] += [p for p in w[2:] if not p.startswith("-")]
                elif w[:2] == ["apt-get", "purge"]:
                    facts["apt_purged"] += [p for p in w[2:] if not p.startswith("-")]
        else:
            facts["unmodelled"].append(line)
    config["Env"] = [f"{k}={v}" for k, v in env.items()]
    config["Labels"] = labels
    facts["args"] = args
    facts["config"] = config
    facts["apt_kept"] = [p for p in facts["apt_installed"] if p not in facts["apt_purged"]]
    return facts


def parse_useradd(words):
    user, it = {}, iter(words)
    names = {"--uid": "uid", "-u": "uid", "--gid": "gid", "-g": "gid", "--home-dir": "home", "-d": "home",
             "--shell": "shell", "-s": "shell", "--comment": "comment", "-c": "comment"}
    for w in it:
        if w in names:
            user[names[w]] = next(it)
        elif w.startswith("-"):
            user.setdefault("flags", []).append(w)
        else:
            user["name"] = w
    return user


def parse_groupadd(words):
    group, it = {}, iter(words)
    for w in it:
        if w in ("--gid", "-g"):
            group["gid"] = next(it)
        elif not w.startswith("-"):
            group["name"] = w
    return group


def chart_image(values_path, chart_path):
    """image.repository and image.tag of values.yaml (two-space indent under `image:`), appVersion of Chart.yaml."""
    repo = tag = None
    in_image = False
    for line in open(values_path):
        if re.match(r"^image:\s*$", line):
            in_image = True
            continue
        if in_image and re.match(r"^\S", line):
            in_image = False
        if in_image:
            m = re.match(r"^  (repository|tag):\s*(.*?)\s*(#.*)?$", line)
            if m:
                value = m.group(2).strip('"\'')
                if m.group(1) == "repository":
                    repo = value
                else:
                    tag = value
    app_version = None
    for line in open(chart_path):
        m = re.match(r"^appVersion:\s*[\"']?([^\"'\s]+)", line)
        if m:
            app_version = m.group(1)
    if not repo or not (tag or app_version):
        sys.exit("could not read image.repository/image.tag or appVersion from the chart")
    return f"{repo}:{tag or app_version}"


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "write" and len(argv) >= 6:
        write(argv[2], argv[3], argv[4], argv[5:])
    elif cmd == "config" and len(argv) == 3:
        manifest, config = read_manifest(argv[2])
        config["RepoTags"] = manifest["RepoTags"]
        print(json.dumps(config, indent=2, sort_keys=True))
    elif cmd == "layers" and len(argv) == 3:
        print("\n".join(read_manifest(argv[2])[0]["Layers"]))
    elif cmd == "dockerfile" and len(argv) == 3:
        print(json.dumps(dockerfile(argv[2]), indent=2))
    elif cmd == "chart" and len(argv) == 4:
        print(chart_image(argv[2], argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
