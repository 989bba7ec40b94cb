#!/usr/bin/env bash
# A real Kubernetes node on top of the running test platform (e2e/platform.sh): a private containerd
# (Debian's 1.6 + runc), CNI bridge networking, kube-scheduler, kubelet, kube-proxy (iptables mode) and
# CoreDNS as a host process, so pods really run, ClusterIP Services work from pods and from the host, and
# `<svc>.<ns>.svc[.cluster.local]` resolves inside pods. Images come from docker-archive tars (no registry).
#
# Used through e2e/platform.sh (node | node-down | node-check | node-tools | import-image TAR...), or sourced:
#   source e2e/lib/node.sh
#   node_import_image /path/to/image.tar      # into the node's containerd (namespace k8s.io)
#   node_build_image OUT.tar REF ROOTFS-DIR '["/bin/cmd"]' [ENV=VALUE...]   # a docker-archive from a dir
#   node_running && echo "the node is up"
# Pods then use the image's tag with imagePullPolicy IfNotPresent or Never.
#
# Sourced on its own it finds the platform by LIFEBOAT_PLATFORM_DIR / LIFEBOAT_CACHE like e2e/platform.sh.
#
# Everything lives in $STATE/node (containerd root/state/socket/runc state, kubelet root and certs, CNI
# config and IPAM, client certificates, Corefile); binaries are cached in $CACHE. Outside the state dir it
# touches, and `node_down` undoes: the bridge $NODE_BRIDGE (10.244.0.1/24) with a route for the Service
# range; iptables (kube-proxy's chains, the kubelet's KUBE-FIREWALL/canaries, LIFEBOAT-NODE which keeps pod
# traffic on this machine, LIFEBOAT-NODE-IN which keeps the kubelet's port to local processes); the CNI netns
# under /var/run/netns; the kubepods cgroups; net.ipv4.ip_forward (restored); and the few paths containerd
# 1.6 and the kubelet hardcode (/run/containerd/s/<shim socket>, /var/lib/kubelet/device-plugins,
# /var/log/containers links).

if [[ -z ${REPO:-} ]]; then REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd); fi
CACHE=${CACHE:-${LIFEBOAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat}}
STATE=${STATE:-${LIFEBOAT_PLATFORM_DIR:-$REPO/.platform}}
K8S_VERSION=${K8S_VERSION:-v1.36.3}
K8S_BIN=${K8S_BIN:-$CACHE/k8s-$K8S_VERSION/bin}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-${LIFEBOAT_PLATFORM_TIMEOUT:-120}}

COREDNS_VERSION=v1.15.0
PAUSE_IMAGE=registry.k8s.io/pause:3.10     # containerd's sandbox_image below asks for exactly this tag
TEST_IMAGE=lifeboat.local/busybox:1.35     # Debian's busybox-static (sh, nc, httpd, wget, nslookup, ...)
BUSYBOX_RECIPE=2                           # bump when the image's contents change (cached tar's name)
# The API server reaches the kubelet at the node's Hostname (localhost: 127.0.0.1 everywhere) or its
# InternalIP (the bridge's address; kubelet 1.36 refuses a loopback node IP: "nodeIP can't be loopback").
NODE_NAME=localhost
NODE_BRIDGE=lbnode0
POD_CIDR=10.244.0.0/24
NODE_GW=10.244.0.1             # the bridge's address: node IP; CoreDNS and the API forwarder listen here
SERVICE_CIDR=10.96.0.0/16      # the API server's --service-cluster-ip-range
NODE_COMPONENTS=(containerd coredns kube-scheduler kube-proxy kubelet api-forward pg-forward s3-forward)

NODE_DIR=$STATE/node
NODE_BIN=$CACHE/node-bin       # pause, images
COREDNS_BIN=$CACHE/coredns-$COREDNS_VERSION/bin
CTR_SOCK=$NODE_DIR/containerd/containerd.sock

if ! declare -F log >/dev/null; then
  log() { printf '[node] %s\n' "$*" >&2; }
  die() { printf '[node] ERROR: %s\n' "$*" >&2; exit 1; }
fi
nlog() { printf '[node] %s\n' "$*" >&2; }
if ! declare -F free_port >/dev/null; then
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fi

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }
ctr_k8s() { ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

# ---------------------------------------------------------------------------------------------- tools
node_tool_apt() {
  local need=() p
  for p in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables \
    conntrack:conntrack /bin/busybox:busybox-static socat:socat ip:iproute2 nsenter:util-linux; do
    local what=${p%%:*} pkg=${p#*:}
    if [[ $what == /* ]]; then [[ -e $what ]] || need+=("$pkg"); else command -v "$what" >/dev/null || need+=("$pkg"); fi
  done
  ((${#need[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "the node needs root and these Debian packages: ${need[*]}"
  nlog "installing ${need[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

node_tool_k8s() { bash "$REPO/e2e/lib/build-k8s.sh" "$CACHE" "$K8S_VERSION" kube-scheduler kubelet kube-proxy kubectl; }

# CoreDNS at an exact version from the Go module proxy, with only the plugins the node uses (the full
# plugin set pulls every cloud SDK; the directive order is CoreDNS's own, compiled into coremain).
node_tool_coredns() {
  [[ -x $COREDNS_BIN/coredns ]] && return
  nlog "building CoreDNS $COREDNS_VERSION from the Go module proxy"
  local src=$CACHE/coredns-$COREDNS_VERSION/src
  mkdir -p "$src" "$COREDNS_BIN"
  cat >"$src/main.go" <<'EOF'
// CoreDNS with the plugins Lifeboat's test node needs.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() { coremain.Run() }
EOF
  (
    cd "$src"
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod
    [[ -f go.mod ]] || go mod init lifeboat-coredns >/dev/null 2>&1
    go get "github.com/coredns/coredns@$COREDNS_VERSION"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$COREDNS_BIN/coredns.tmp" .
    mv "$COREDNS_BIN/coredns.tmp" "$COREDNS_BIN/coredns"
  )
}

# The sandbox ("pause") binary: static, PID 1 of each pod sandbox, reaps children, exits on SIGTERM/SIGINT.
node_tool_pause() {
  [[ -x $NODE_BIN/pause ]] && return
  nlog "building the pause binary (Go, static)"
  local src=$NODE_BIN/pause-src
  mkdir -p "$src"
  cat >"$src/main.go" <<'EOF'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	chld := make(chan os.Signal, 16)
	signal.Notify(chld, syscall.SIGCHLD)
	go func() {
		for range chld {
			for {
				var ws syscall.WaitStatus
				if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
	<-stop
	os.Exit(0)
}
EOF
  printf 'module pause\n\ngo 1.22\n' >"$src/go.mod"
  (cd "$src" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$NODE_BIN/pause.tmp" .)
  mv "$NODE_BIN/pause.tmp" "$NODE_BIN/pause"
}

# node_build_image OUT.tar REF ROOTFS-DIR CMD-JSON [ENV=VALUE...]
# Writes a docker-archive (what `docker save` writes: manifest.json, a config JSON, one layer tar) holding
# ROOTFS-DIR as its single layer, owned by root, with fixed timestamps (same input, same image ID).
node_build_image() {
  local out=$1 ref=$2 rootfs=$3 cmd=$4; shift 4
  python3 - "$out" "$ref" "$rootfs" "$cmd" "$@" <<'EOF'
import hashlib, io, json, os, sys, tarfile
out, ref, rootfs, cmd, env = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5:]
def add_tree(tar, root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [""] + sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name) if name else dirpath
            arc = os.path.relpath(path, root)
            if arc == ".":
                continue
            info = tar.gettarinfo(path, arc)
            info.uid = info.gid = 0; info.uname = info.gname = "root"; info.mtime = 0
            if info.isreg():
                with open(path, "rb") as f: tar.addfile(info, f)
            else:
                tar.addfile(info)
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    add_tree(t, rootfs)
layer = layer.getvalue()
diff_id = hashlib.sha256(layer).hexdigest()
env = env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
config = json.dumps({
    "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
    "config": {"Env": env, "Cmd": cmd, "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "lifeboat e2e/lib/node.sh"}],
}, sort_keys=True).encode()
config_id = hashlib.sha256(config).hexdigest()
manifest = json.dumps([{"Config": config_id + ".json", "RepoTags": [ref], "Layers": [diff_id + "/layer.tar"]}]).encode()
tmp = out + ".tmp"
with tarfile.open(tmp, mode="w") as t:
    for name, data in ((diff_id + "/layer.tar", layer), (config_id + ".json", config), ("manifest.json", manifest)):
        info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o644
        t.addfile(info, io.BytesIO(data))
os.replace(tmp, out)
EOF
}

node_tool_images() {
  mkdir -p "$NODE_BIN/images"
  local d
  if [[ ! -f $NODE_BIN/images/pause.tar ]]; then
    d=$(mktemp -d); install -m 0755 "$NODE_BIN/pause" "$d/pause"
    node_build_image "$NODE_BIN/images/pause.tar" "$PAUSE_IMAGE" "$d" '["/pause"]'
    rm -rf "$d"
  fi
  if [[ ! -f $NODE_BIN/images/busybox-$BUSYBOX_RECIPE.tar ]]; then
    d=$(mktemp -d); mkdir -p "$d"/{bin,etc,tmp,root,www,lib64,lib/x86_64-linux-gnu}; chmod 1777 "$d/tmp"
    install -m 0755 /bin/busybox "$d/bin/busybox"
    local applet lib
    for applet in $(/bin/busybox --list); do [[ $applet == busybox ]] || ln -s busybox "$d/bin/$applet"; done
    # Debian's busybox is static glibc: to resolve names (wget, nc, ping) it dlopens glibc's NSS modules,
    # which must be the very glibc it was built with (its Built-Using is the host's libc6) -- without them
    # it segfaults. nslookup works either way (it speaks DNS itself).
    for lib in libc.so.6 libresolv.so.2 libnss_dns.so.2 libnss_files.so.2 ld-linux-x86-64.so.2; do
      cp -L "/lib/x86_64-linux-gnu/$lib" "$d/lib/x86_64-linux-gnu/$lib"
    done
    ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$d/lib64/ld-linux-x86-64.so.2"
    printf 'hosts: files dns\npasswd: files\ngroup: files\n' >"$d/etc/nsswitch.conf"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$d/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$d/etc/group"
    echo 'hello from lifeboat' >"$d/www/index.html"
    node_build_image "$NODE_BIN/images/busybox-$BUSYBOX_RECIPE.tar" "$TEST_IMAGE" "$d" '["sh"]'
    rm -rf "$d"
  fi
}

node_tools() {
  node_tool_apt
  node_tool_k8s
  node_tool_coredns
  node_tool_pause
  node_tool_images
}

# ---------------------------------------------------------------------------------------------- helpers
node_pid_alive() { [[ -f $NODE_DIR/pids/$1 ]] && kill -0 "$(cat "$NODE_DIR/pids/$1")" 2>/dev/null; }
node_running() { local c; for c in "${NODE_COMPONENTS[@]}"; do node_pid_alive "$c" || return 1; done; [[ -f $NODE_DIR/env ]]; }

node_start_bg() { # name command...
  local name=$1; shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$NODE_DIR/pids/$name"
}

node_fail() { # name message
  nlog "$1 failed: $2"
  [[ -f $STATE/logs/$1.log ]] && { nlog "last lines of $STATE/logs/$1.log:"; tail -n 30 "$STATE/logs/$1.log" >&2; }
  exit 1
}

node_wait() { # name check-command...
  local name=$1; shift
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    [[ -f $NODE_DIR/pids/$name ]] && ! node_pid_alive "$name" && node_fail "$name" "process exited"
    ((SECONDS < deadline)) || node_fail "$name" "not ready after ${STARTUP_TIMEOUT}s"
    sleep 0.3
  done
}

# node_import_image TAR...: import docker-archive tars into the node's containerd (namespace k8s.io).
node_import_image() {
  [[ -S $CTR_SOCK ]] || die "the node's containerd is not running: run e2e/platform.sh node"
  local tar
  for tar in "$@"; do
    [[ -f $tar ]] || die "no such image archive: $tar"
    ctr_k8s images import --no-unpack=false "$tar" >/dev/null 2>"$NODE_DIR/import.err" ||
      { cat "$NODE_DIR/import.err" >&2; die "ctr images import $tar failed"; }
  done
}

# A client certificate from the platform's CA (the API server trusts it: --client-ca-file) and a kubeconfig.
node_client() { # name CN [O]
  local name=$1 cn=$2 org=${3:-} d=$NODE_DIR/pki subj
  subj="/CN=$cn"; [[ -n $org ]] && subj="/O=$org/CN=$cn"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subj" \
    -keyout "$d/$name.key" -out "$d/$name.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/client.ext" -out "$d/$name.crt" 2>/dev/null
  chmod 600 "$d/$name.key"
  cat >"$d/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lifeboat
  cluster:
    server: https://127.0.0.1:$(cat "$STATE/ports/kube-apiserver")
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $cn
  user:
    client-certificate: $d/$name.crt
    client-key: $d/$name.key
contexts:
- name: lifeboat
  context: {cluster: lifeboat, user: "$cn"}
current-context: lifeboat
EOF
  chmod 600 "$d/$name.kubeconfig"
}

# ---------------------------------------------------------------------------------------------- pieces
node_network_up() {
  cat /proc/sys/net/ipv4/ip_forward >"$NODE_DIR/ip_forward.orig"
  cat /proc/sys/net/bridge/bridge-nf-call-iptables >"$NODE_DIR/bridge-nf-call-iptables.orig" 2>/dev/null || true
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
  ip addr replace "$NODE_GW/${POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Service IPs route into the bridge: kube-proxy DNATs the live ones; a packet for an unused one ends
  # there too instead of following the default route off the machine.
  ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_GW"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables   # Service traffic between pods on the bridge
  # Pod traffic stays on this machine: nothing forwarded between the bridge and any other interface.
  iptables -w -N LIFEBOAT-NODE 2>/dev/null || iptables -w -F LIFEBOAT-NODE
  iptables -w -A LIFEBOAT-NODE -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -j DROP
  iptables -w -A LIFEBOAT-NODE -o "$NODE_BRIDGE" ! -i "$NODE_BRIDGE" -j DROP
  iptables -w -C FORWARD -j LIFEBOAT-NODE 2>/dev/null || iptables -w -I FORWARD 1 -j LIFEBOAT-NODE
  mkdir -p "$NODE_DIR/cni/net.d" "$NODE_DIR/cni/ipam"
  cat >"$NODE_DIR/cni/net.d/10-lifeboat.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "lifeboat",
  "plugins": [
    {
      "type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
}

node_start_containerd() {
  local d=$NODE_DIR/containerd
  mkdir -p "$d/root" "$d/state" "$d/opt"
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$CTR_SOCK"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # No CAP_SYS_RESOURCE here: the negative oom_score_adj the kubelet asks for sandboxes would fail.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$d/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
    max_conf_num = 1
EOF
  node_start_bg containerd containerd --config "$d/config.toml" --address "$CTR_SOCK" --root "$d/root" --state "$d/state"
  node_wait containerd ctr --address "$CTR_SOCK" version
  node_wait containerd bash -c "ctr --address '$CTR_SOCK' plugins ls | grep -E 'io.containerd.grpc.v1 +cri +.* ok'"
}

node_images() {
  local have; have=$(ctr_k8s images ls -q)
  grep -qxF "$PAUSE_IMAGE" <<<"$have" || node_import_image "$NODE_BIN/images/pause.tar"
  grep -qxF "$TEST_IMAGE" <<<"$have" || node_import_image "$NODE_BIN/images/busybox-$BUSYBOX_RECIPE.tar"
}

node_credentials() {
  mkdir -p "$NODE_DIR/pki"
  node_client kubelet "system:node:$NODE_NAME" system:nodes
  node_client kube-scheduler system:kube-scheduler
  node_client kube-proxy system:kube-proxy
  node_client coredns lifeboat:coredns
  # The platform authorizes with RBAC only (no Node authorizer): the kubelet gets the system:node role.
  kubectl_admin apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "lifeboat:node"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "lifeboat:coredns"}
rules:
- {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "lifeboat:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "lifeboat:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "lifeboat:coredns"}]
EOF
}

node_start_coredns() {
  local health ready; health=$(free_port); ready=$(free_port)
  echo "$ready" >"$NODE_DIR/ports/coredns-ready"
  cat >"$NODE_DIR/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_GW
    errors
    health 127.0.0.1:$health
    ready 127.0.0.1:$ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $NODE_DIR/pki/coredns.kubeconfig lifeboat
        pods insecure
    }
    cache 5
}
# Nothing is resolved off this machine: every other name is NXDOMAIN.
.:53 {
    bind $NODE_GW
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
  node_start_bg coredns "$COREDNS_BIN/coredns" -conf "$NODE_DIR/Corefile"
  node_wait coredns curl -fsS "http://127.0.0.1:$ready/ready"
}

node_start_scheduler() {
  local port; port=$(free_port); echo "$port" >"$NODE_DIR/ports/kube-scheduler"
  local kc=$NODE_DIR/pki/kube-scheduler.kubeconfig
  node_start_bg kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$kc" \
    --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$port" --leader-elect=false --v 1
  node_wait kube-scheduler curl -fsSk "https://127.0.0.1:$port/healthz"
}

node_start_proxy() {
  local health metrics; health=$(free_port); metrics=$(free_port)
  echo "$health" >"$NODE_DIR/ports/kube-proxy"
  cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $NODE_DIR/pki/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:$health
metricsBindAddress: 127.0.0.1:$metrics
clusterCIDR: $POD_CIDR
detectLocalMode: ClusterCIDR
nodePortAddresses: ["$NODE_GW/32"]
iptables:
  localhostNodePorts: false     # would set net.ipv4.conf.all.route_localnet
  minSyncPeriod: 0s
  syncPeriod: 30s
conntrack:                      # leave the machine's conntrack settings alone
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  node_start_bg kube-proxy "$K8S_BIN/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml" --v 1
  node_wait kube-proxy curl -fsS "http://127.0.0.1:$health/livez"
}

node_start_kubelet() {
  local port hport; port=$(free_port); hport=$(free_port)
  echo "$port" >"$NODE_DIR/ports/kubelet"
  mkdir -p "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs"
  # The kubelet listens on every address (the API server may dial localhost or the node IP) but is reached
  # from this machine's own processes only: not from pods (the bridge) nor from outside.
  iptables -w -N LIFEBOAT-NODE-IN 2>/dev/null || iptables -w -F LIFEBOAT-NODE-IN
  iptables -w -A LIFEBOAT-NODE-IN -p tcp --dport "$port" ! -i lo -j DROP
  iptables -w -C INPUT -j LIFEBOAT-NODE-IN 2>/dev/null || iptables -w -I INPUT 1 -j LIFEBOAT-NODE-IN
  cat >"$NODE_DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false              # this machine has cgroup v1 (hybrid)
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$CTR_SOCK
imageServiceEndpoint: unix://$CTR_SOCK
address: 0.0.0.0                 # reached from loopback only: LIFEBOAT-NODE-IN drops the rest
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $hport
# The API server (which has no kubelet client certificate) proxies logs/exec/port-forward; nothing else
# reaches this port (see node_start_kubelet).
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: ["$NODE_GW"]
resolvConf: ""                   # pods never get the host's resolver
podLogsDir: $NODE_DIR/pod-logs
volumePluginDir: $NODE_DIR/kubelet/volume-plugins
imageGCHighThresholdPercent: 100 # imported images cannot be pulled again: never collect them
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
maxPods: 110
serializeImagePulls: false
registerNode: true
nodeStatusUpdateFrequency: 10s
shutdownGracePeriod: 0s
EOF
  node_start_bg kubelet "$K8S_BIN/kubelet" --config "$NODE_DIR/kubelet/config.yaml" \
    --kubeconfig "$NODE_DIR/pki/kubelet.kubeconfig" --root-dir "$NODE_DIR/kubelet/root" \
    --cert-dir "$NODE_DIR/kubelet/pki" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_GW" --v 1
  node_wait kubelet curl -fsS "http://127.0.0.1:$hport/healthz"
  node_wait kubelet kubectl_admin wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
}

# Pods reach the API server as https://kubernetes.default.svc (10.96.0.1:443): the API server listens on
# loopback only, so a forwarder on the bridge address carries the connections, and the `kubernetes`
# Service (whose endpoints the platform does not reconcile) gets an EndpointSlice pointing at it.
node_start_api_forward() {
  local port; port=$(free_port); echo "$port" >"$NODE_DIR/ports/api-forward"
  node_start_bg api-forward socat "TCP-LISTEN:$port,bind=$NODE_GW,fork,reuseaddr" \
    "TCP:127.0.0.1:$(cat "$STATE/ports/kube-apiserver")"
  node_wait api-forward bash -c "echo >/dev/tcp/$NODE_GW/$port"
  kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-lifeboat-node
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: lifeboat-node}
addressType: IPv4
endpoints: [{addresses: ["$NODE_GW"], conditions: {ready: true}}]
ports: [{name: https, port: $port, protocol: TCP}]
EOF
}

# Pods reach the platform's PostgreSQL 18 (loopback only) through a forwarder on the bridge address;
# the host reaches it there too, so an admin Secret naming it works for the operator on the host, for
# the operator in a pod, and for the connection Secrets handed to pods (MigrationRun's container runner).
node_start_pg_forward() {
  local port; port=$(free_port); echo "$port" >"$NODE_DIR/ports/pg-forward"
  node_start_bg pg-forward socat "TCP-LISTEN:$port,bind=$NODE_GW,fork,reuseaddr" \
    "TCP:127.0.0.1:$(cat "$STATE/ports/pg18")"
  node_wait pg-forward bash -c "echo >/dev/tcp/$NODE_GW/$port"
}

# The same for the platform's S3 server: an operator in a pod backs up to and restores from it there.
node_start_s3_forward() {
  local port; port=$(free_port); echo "$port" >"$NODE_DIR/ports/s3-forward"
  node_start_bg s3-forward socat "TCP-LISTEN:$port,bind=$NODE_GW,fork,reuseaddr" \
    "TCP:127.0.0.1:$(cat "$STATE/ports/s3")"
  node_wait s3-forward bash -c "echo >/dev/tcp/$NODE_GW/$port"
}

node_write_env() {
  cat >"$NODE_DIR/env" <<EOF
export LIFEBOAT_NODE_NAME='$NODE_NAME'
export LIFEBOAT_PG_NODE_HOST='$NODE_GW'
export LIFEBOAT_PG_NODE_PORT=$(cat "$NODE_DIR/ports/pg-forward")
export LIFEBOAT_S3_NODE_ENDPOINT=http://$NODE_GW:$(cat "$NODE_DIR/ports/s3-forward")
export LIFEBOAT_CONTAINERD_ADDRESS='$CTR_SOCK'
export LIFEBOAT_TEST_IMAGE='$TEST_IMAGE'
export LIFEBOAT_PAUSE_IMAGE='$PAUSE_IMAGE'
EOF
}

# ---------------------------------------------------------------------------------------------- lifecycle
node_up() {
  [[ $(id -u) -eq 0 ]] || die "the node needs root (containerd, network namespaces, iptables)"
  [[ -f $STATE/env && -f $STATE/kubeconfig ]] && kubectl_admin get --raw /readyz >/dev/null 2>&1 ||
    die "the platform is not up: run e2e/platform.sh up first (or up --with-node)"
  if node_running; then nlog "already running ($NODE_NAME)"; return; fi
  [[ -d $NODE_DIR ]] && { nlog "cleaning up a stale or partial node"; node_down; }
  node_tools
  local t0=$SECONDS
  mkdir -p "$NODE_DIR"/{pids,ports} "$STATE/logs"
  trap 'nlog "node start failed; run: e2e/platform.sh node-down"' ERR
  local steps=() step t
  for step in network_up start_containerd images credentials start_coredns start_scheduler start_kubelet \
    start_proxy start_api_forward start_pg_forward start_s3_forward write_env; do
    t=$(date +%s.%N); "node_$step"; steps+=("${step#start_} $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s")
  done
  trap - ERR
  nlog "node $NODE_NAME Ready in $((SECONDS - t0))s (images: $PAUSE_IMAGE, $TEST_IMAGE)"
  nlog "steps: ${steps[*]}"
}

# Gone, or a zombie (the components are orphans: PID 1 reaps them when it gets to it).
node_pid_gone() { [[ ! -e /proc/$1 ]] || [[ $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) == Z ]]; }

node_stop_pid() { # name... : SIGTERM each component's process group, wait up to 5 s, then SIGKILL
  local name f pid pids=()
  for name in "$@"; do
    f=$NODE_DIR/pids/$name
    [[ -f $f ]] || continue
    pid=$(cat "$f"); pids+=("$pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do node_pid_gone "$pid" && break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  for name in "$@"; do rm -f "$NODE_DIR/pids/$name"; done
}

# PIDs of processes whose command line names this node's containerd socket (its shims), by /proc.
node_shim_pids() {
  local p
  for p in /proc/[0-9]*; do
    [[ $(cat "$p/comm" 2>/dev/null) == containerd-shim* ]] || continue
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "-address $CTR_SOCK " && echo "${p#/proc/}"
  done
  return 0
}

node_down() {
  [[ -d $NODE_DIR ]] || return 0
  local errexit=0; [[ $- == *e* ]] && errexit=1
  set +e   # best effort from here: every step runs even if an earlier one finds nothing to undo
  if [[ -f $STATE/kubeconfig ]] && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
    kubectl_admin delete node "$NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1
    kubectl_admin -n default delete endpointslice kubernetes-lifeboat-node --ignore-not-found >/dev/null 2>&1
  fi
  node_stop_pid kubelet api-forward pg-forward s3-forward kube-proxy kube-scheduler coredns
  # Sandboxes' network namespaces, read before their containers go.
  local netns=()
  if [[ -S $CTR_SOCK ]] && node_pid_alive containerd; then
    local id
    mapfile -t netns < <(for id in $(ctr_k8s containers ls -q 2>/dev/null); do
      ctr_k8s containers info "$id" 2>/dev/null | python3 -c '
import json, sys
for ns in json.load(sys.stdin).get("Spec", {}).get("linux", {}).get("namespaces", []):
    if ns.get("type") == "network" and ns.get("path"): print(ns["path"])' 2>/dev/null
    done | sort -u)
    # Kill every task, then delete it (so its shim exits and removes its socket and runc state).
    local ids; ids=$(ctr_k8s tasks ls -q 2>/dev/null)
    for id in $ids; do ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1; done
    for id in $ids; do ctr_k8s tasks delete -f "$id" >/dev/null 2>&1; done
    ctr_k8s containers ls -q >"$NODE_DIR/containers.list" 2>/dev/null
  fi
  node_stop_pid containerd
  # Anything left in the pods' cgroups, then the shims of this containerd.
  local cg pid
  for cg in /sys/fs/cgroup/*/kubepods; do
    [[ -d $cg ]] || continue
    find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | while read -r pid; do kill -KILL "$pid" 2>/dev/null; done
  done
  for pid in $(node_shim_pids); do kill -KILL "$pid" 2>/dev/null; done
  sleep 0.5
  # Mounts: container rootfs and shm, kubelet volumes; then the sandboxes' network namespaces.
  findmnt -rn -o TARGET | grep -F "$NODE_DIR/" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  local ns
  for ns in "${netns[@]}"; do
    [[ $ns == /var/run/netns/* || $ns == /run/netns/* ]] || continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null; rm -f "$ns"
  done
  for cg in /sys/fs/cgroup/*/kubepods; do [[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null; done
  # iptables: kube-proxy's chains (its own cleanup), and this node's fence.
  [[ -x $K8S_BIN/kube-proxy ]] && "$K8S_BIN/kube-proxy" --cleanup >"$STATE/logs/kube-proxy-cleanup.log" 2>&1
  iptables -w -D FORWARD -j LIFEBOAT-NODE 2>/dev/null
  iptables -w -F LIFEBOAT-NODE 2>/dev/null; iptables -w -X LIFEBOAT-NODE 2>/dev/null
  iptables -w -D INPUT -j LIFEBOAT-NODE-IN 2>/dev/null
  # ... and the kubelet's own chains (the localnet firewall, its canaries), which nothing else removes.
  local ipt t ch
  for ipt in iptables ip6tables; do
    $ipt -w -D INPUT -j KUBE-FIREWALL 2>/dev/null; $ipt -w -D OUTPUT -j KUBE-FIREWALL 2>/dev/null
    for t in filter nat mangle; do
      for ch in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        $ipt -w -t $t -F $ch 2>/dev/null && $ipt -w -t $t -X $ch 2>/dev/null
      done
    done
  done
  iptables -w -F LIFEBOAT-NODE-IN 2>/dev/null; iptables -w -X LIFEBOAT-NODE-IN 2>/dev/null
  ip link del "$NODE_BRIDGE" 2>/dev/null
  [[ -f $NODE_DIR/ip_forward.orig ]] && cat "$NODE_DIR/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward
  [[ -f $NODE_DIR/bridge-nf-call-iptables.orig ]] && cat "$NODE_DIR/bridge-nf-call-iptables.orig" >/proc/sys/net/bridge/bridge-nf-call-iptables
  local l
  for l in /var/log/containers/*.log; do [[ -L $l && $(readlink "$l") == "$NODE_DIR"/* ]] && rm -f "$l"; done
  rm -f /var/lib/cni/results/lifeboat-* 2>/dev/null
  # containerd 1.6 puts shim sockets in /run/containerd/s/<sha256(address/namespace/id)>, whatever --state says.
  if [[ -f $NODE_DIR/containers.list ]]; then
    while read -r id; do
      [[ -n $id ]] && rm -f "/run/containerd/s/$(printf '%s' "$CTR_SOCK/k8s.io/$id" | sha256sum | cut -d' ' -f1)"
    done <"$NODE_DIR/containers.list"
  fi
  # The kubelet's device-plugin socket lives in /var/lib/kubelet whatever --root-dir says.
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet /var/lib/cni/results /var/lib/cni \
    /var/log/containers /var/run/netns 2>/dev/null   # those that are empty
  rm -rf "$NODE_DIR"
  if ((errexit)); then set -e; fi
  nlog "node down"
}

node_status() {
  local c rc=0
  for c in "${NODE_COMPONENTS[@]}"; do
    if node_pid_alive "$c"; then printf '%-24s running  pid %s\n' "node/$c" "$(cat "$NODE_DIR/pids/$c")"
    else printf '%-24s stopped\n' "node/$c"; rc=1; fi
  done
  return $rc
}

# Resident memory of the node's processes (each component's process group, plus the containerd shims).
node_rss() {
  local c pid total=0 kb
  for c in "${NODE_COMPONENTS[@]}"; do
    node_pid_alive "$c" || continue
    pid=$(cat "$NODE_DIR/pids/$c")
    kb=$(ps -o rss= -g "$pid" | awk '{s+=$1} END {print s+0}')
    printf '%-16s %7d KiB\n' "$c" "$kb"; total=$((total + kb))
  done
  local shims; shims=$(node_shim_pids | tr '\n' ',' | sed 's/,$//')
  if [[ -n $shims ]]; then
    kb=$(ps -o rss= -p "$shims" | awk '{s+=$1} END {print s+0}')
    printf '%-16s %7d KiB (%s)\n' "shims" "$kb" "$(node_shim_pids | wc -l) processes"; total=$((total + kb))
  fi
  printf '%-16s %7d KiB\n' "total" "$total"
}

# ---------------------------------------------------------------------------------------------- check
# node_check: a pod runs to completion and its log comes back; exec works; a pod resolves a Service by
# DNS and reaches the pod behind it through its ClusterIP; the host reaches the ClusterIP; a pod reaches
# the API server through the `kubernetes` Service. Exits non-zero naming what failed.
node_check() {
  node_running || die "the node is not running: run e2e/platform.sh node"
  local ns=lifeboat-node-check-$$ t0=$SECONDS failed=0
  ok() { printf '[node-check] ok   %s\n' "$*" >&2; }
  bad() { printf '[node-check] FAIL %s\n' "$*" >&2; failed=1; }
  k() { kubectl_admin -n "$ns" "$@"; }
  finished() { # pod: wait until it Succeeded (0) or Failed (1), 120 s at most
    local phase deadline=$((SECONDS + 120))
    while ((SECONDS < deadline)); do
      phase=$(k get pod "$1" -o jsonpath='{.status.phase}' 2>/dev/null) || true
      [[ $phase == Succeeded ]] && return 0
      [[ $phase == Failed ]] && return 1
      sleep 0.5
    done
    return 1
  }
  kubectl_admin create namespace "$ns" >/dev/null
  local deadline=$((SECONDS + 60))
  until k get serviceaccount default >/dev/null 2>&1; do ((SECONDS < deadline)) || break; sleep 0.3; done

  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: httpd
    image: $TEST_IMAGE
    imagePullPolicy: Never
    command: [httpd, -f, -p, "8080", -h, /www]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
  terminationGracePeriodSeconds: 0
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  restartPolicy: Never
  containers:
  - name: hello
    image: $TEST_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'echo "hello from pod \$(hostname)"']
EOF
  if finished hello; then
    local out; out=$(k logs hello 2>&1) || true
    [[ $out == "hello from pod hello" ]] && ok "pod ran to completion; kubectl logs: $out" || bad "kubectl logs hello: '$out'"
  else
    bad "pod hello did not succeed: $(k get pod hello -o jsonpath='{.status.phase} {.status.containerStatuses[0].state}')"
  fi
  if k wait --for=condition=Ready pod/web --timeout=120s >/dev/null; then
    local out; out=$(k exec web -- sh -c 'echo "exec in $(hostname) as $(id -u)"' 2>&1) || true
    [[ $out == "exec in web as 0" ]] && ok "kubectl exec: $out" || bad "kubectl exec web: '$out'"
  else
    bad "pod web not Ready: $(k get pod web -o jsonpath='{.status.phase} {.status.containerStatuses[0].state}')"
  fi
  local ip; ip=$(k get service web -o jsonpath='{.spec.clusterIP}') || true
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: $TEST_IMAGE
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      set -e
      cat /etc/resolv.conf
      nslookup web.$ns.svc.cluster.local
      # kube-proxy programs the Service about a second after its pod turns Ready.
      for i in 1 2 3 4 5 6 7 8 9 10; do timeout 5 wget -q -O /dev/null http://web.$ns.svc.cluster.local/ && break; sleep 1; done
      echo "fqdn: \$(timeout 10 wget -q -O- http://web.$ns.svc.cluster.local/)"
      echo "svc: \$(timeout 10 wget -q -O- http://web.$ns.svc/)"
      echo "short: \$(timeout 10 wget -q -O- http://web/)"
      # busybox's TLS cannot talk to the API server's ciphers; plain HTTP to its TLS port proves the path.
      echo "api: \$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 10 nc kubernetes.default.svc 443 | tail -n 1)"
EOF
  if finished client; then
    local log; log=$(k logs client 2>&1) || true
    grep -q "^fqdn: hello from lifeboat$" <<<"$log" && ok "pod -> web.$ns.svc.cluster.local ($ip) -> pod web: $(grep '^fqdn' <<<"$log")" || bad "fqdn: $log"
    grep -q "^svc: hello from lifeboat$" <<<"$log" && ok "pod -> web.$ns.svc: $(grep '^svc' <<<"$log")" || bad "svc: $log"
    grep -q "^short: hello from lifeboat$" <<<"$log" && ok "pod -> web (search path)" || bad "short: $log"
    grep -q "^api: Client sent an HTTP request to an HTTPS server" <<<"$log" &&
      ok "pod -> kubernetes.default.svc:443 -> API server: $(grep '^api:' <<<"$log")" || bad "api: $log"
  else
    bad "pod client failed: $(k logs client 2>&1 | tail -n 15)"
  fi
  local host; host=$(curl -fsS -m 5 "http://$ip/" 2>&1) || true
  [[ $host == "hello from lifeboat" ]] && ok "host -> ClusterIP $ip:80: $host" || bad "host -> $ip: $host"
  kubectl_admin delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  printf '[node-check] %s in %ss\n' "$( ((failed)) && echo FAILED || echo passed)" "$((SECONDS - t0))" >&2
  return $failed
}
