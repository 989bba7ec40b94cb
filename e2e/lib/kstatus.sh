# shellcheck shell=bash
# tool_kstatus: builds e2e/kstatus (the kstatus library of sigs.k8s.io/cli-utils, from the Go module
# proxy) once into ${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat/kstatus-<hash of its sources>/ and prints the
# binary's path. Functions only; sourcing it does nothing.
tool_kstatus() {
  local src here hash final stage
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../kstatus" && pwd)"
  hash=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-12)
  final="${LIFEBOAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat}/kstatus-$hash"
  if [[ -x "$final/kstatus" ]]; then
    printf '%s\n' "$final/kstatus"
    return 0
  fi
  mkdir -p "$(dirname "$final")"
  stage=$(mktemp -d "$final.partial.XXXX")
  echo "building kstatus (sigs.k8s.io/cli-utils) into $final (once)" >&2
  src="$stage/src"
  cp -r "$here" "$src"
  (cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -trimpath -o "$stage/kstatus" .) 1>&2 ||
    { rm -rf "$stage"; return 1; }
  rm -rf "$src"
  mv -T "$stage" "$final" 2>/dev/null || rm -rf "$stage"
  printf '%s\n' "$final/kstatus"
}
