#!/usr/bin/env bash
# Entrypoint of the Redis test image that e2e/lib/images.sh builds (tagged redis:7). It keeps the contract of
# the official image's entrypoint, written anew for this image:
#
#   - A first argument starting with "-" or ending in ".conf" is given to redis-server (`redis-server` is put
#     in front: `--appendonly yes`, `/etc/redis/redis.conf`); anything but redis-server is exec'd as it is.
#   - `redis-server [args]` started as root: what in the working directory (/data) is not the redis user's
#     becomes its, and the script runs itself again as redis (uid/gid 999; setpriv, where the official
#     image uses gosu). Started as uid 999 (runAsUser) it just runs.
#   - umask 0077 when it is 0022 (the official image's choice: dumps and AOF files private).
#   - Protected mode off by default: the official image's redis-server is compiled with protected-mode
#     defaulting to "no" (a container has no config file and listens on every address); Debian's binary
#     defaults to "yes", so `--protected-mode no` is added unless the arguments, or the config file given
#     as the first argument, set protected-mode themselves.
#   - The server is exec'd in the foreground (PID 1 of the container; SIGTERM stops it, as in the official
#     image). It writes only to its working directory, so a read-only root works.
set -Eeuo pipefail

# wants_exit ARGS...: redis-server would only print something and exit.
wants_exit() {
  case ${1:-} in -v | --version | -h | --help | --test-memory | --check-system) return 0 ;; esac
  return 1
}

# sets_protected_mode ARGS...: the arguments (or the config file named first) set protected-mode.
sets_protected_mode() {
  local a
  for a in "$@"; do [[ ${a,,} == --protected-mode ]] && return 0; done
  if [[ -n ${1:-} && $1 != -* ]]; then
    [[ $1 == - ]] && return 0 # the config comes on stdin: leave it alone
    [[ -r $1 ]] && grep -qiE '^[[:space:]]*protected-mode[[:space:]]' "$1" && return 0
  fi
  return 1
}

main() {
  if [[ ${1:-} == -* || ${1:-} == *.conf ]]; then set -- redis-server "$@"; fi
  if [[ ${1:-} != redis-server ]] || wants_exit "${@:2}"; then exec "$@"; fi

  if [[ $(id -u) == 0 ]]; then
    find . ! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "${BASH_SOURCE[0]}" "$@"
  fi

  if [[ $(umask) == 0022 ]]; then umask 0077; fi
  sets_protected_mode "${@:2}" || set -- "$@" --protected-mode no
  exec "$@"
}

main "$@"
