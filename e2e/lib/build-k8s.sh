#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kubectl of one Kubernetes version from the
# Go module proxy, caching the binaries by version. Recipe: shared TESTING.md, "Building Kubernetes
# binaries from the Go module proxy".
# Usage: build-k8s.sh <cache-dir> <version, e.g. v1.36.3> [binary...]
# The binaries default to the control plane's (kube-apiserver kube-controller-manager kubectl); the node
# (e2e/lib/node.sh) asks for kube-scheduler kubelet kube-proxy. All share one module dir and Go build cache.
set -euo pipefail
cache="$1"; version="$2"; shift 2
out="$cache/k8s-$version"
bins=("$@")
((${#bins[@]})) || bins=(kube-apiserver kube-controller-manager kubectl)
have_all() { for b in "${bins[@]}"; do [[ -x "$out/bin/$b" ]] || return 1; done; }
if have_all; then exit 0; fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$out/src" "$out/bin"
cd "$out/src"
# One build at a time in this module dir (the platform and the node may both ask for binaries).
exec 9>"$out/.lock"; flock 9
if have_all; then exit 0; fi
[[ -f go.mod ]] || go mod init platform >/dev/null 2>&1
staging_version="v0.${version#v1.}"
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[[ -n "$gomod" ]] || { echo "build-k8s: could not download k8s.io/kubernetes@$version" >&2; exit 1; }
# Every staging module that k8s.io/kubernetes replaces with ./staging/... is pinned to its published version.
grep -oE 'k8s.io/[a-z0-9-]+ => \./staging/src/k8s.io/[a-z0-9-]+' "$gomod" | awk '{print $1}' | sort -u |
  while read -r mod; do go mod edit "-replace=$mod=$mod@$staging_version"; done
go get "k8s.io/kubernetes@$version"
for b in "${bins[@]}"; do
  [[ -x "$out/bin/$b" ]] && continue
  echo "build-k8s: building $b $version (several minutes on 2 cores)" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=$version \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$(echo "$version" | cut -d. -f2) \
    -X k8s.io/client-go/pkg/version.gitVersion=$version" \
    -o "$out/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b"
  mv "$out/bin/$b.tmp" "$out/bin/$b"
done
