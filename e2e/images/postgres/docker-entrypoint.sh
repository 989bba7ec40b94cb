#!/usr/bin/env bash
# Entrypoint of the PostgreSQL test images that e2e/lib/images.sh builds (tagged postgres:<major>).
# It keeps the contract of the official image's entrypoint that Lifeboat's `instance` source relies on,
# written anew for these images:
#
#   - `postgres [args]` (also a first argument starting with "-") runs the server; anything else is exec'd.
#   - POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is the superuser's password, POSTGRES_USER (default
#     postgres) the superuser, POSTGRES_DB (default POSTGRES_USER) a database made on first start;
#     POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR and POSTGRES_HOST_AUTH_METHOD as in the official image.
#   - On the first start (no PGDATA/PG_VERSION) initdb fills PGDATA; the password is stored as the server's
#     password_encryption says (scram-sha-256), and pg_hba.conf gains `host all all all <that method>`.
#     listen_addresses = '*' comes from the image's postgresql.conf.sample. Scripts and SQL files in
#     /docker-entrypoint-initdb.d run against a socket-only server before the real one starts.
#   - A later start finds PG_VERSION and keeps the data.
#   - Started as root, it makes PGDATA and the socket directory the postgres user's (uid 999) and runs itself
#     again as that user (setpriv); started as uid 999 (the operator's pod) it just runs.
#   - The server is exec'd in the foreground (PID 1 of the container; the image's stop signal is SIGINT).
# It writes only to PGDATA, POSTGRES_INITDB_WALDIR and /var/run/postgresql, so a read-only root works.
set -Eeuo pipefail

say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

# secret_env VAR [DEFAULT]: VAR from itself, else from the file named by VAR_FILE, else DEFAULT.
secret_env() {
  local var=$1 file_var="${1}_FILE" value=${2:-}
  if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
    say "both $var and $file_var are set; set one"
    exit 1
  fi
  if [[ -n ${!var:-} ]]; then
    value=${!var}
  elif [[ -n ${!file_var:-} ]]; then
    value=$(<"${!file_var}")
  fi
  export "$var=$value"
  unset "$file_var"
}

# wants_exit ARGS...: the server would only print something and exit (help, version, config dump).
wants_exit() {
  local a
  for a in "$@"; do
    case $a in -'?' | --help | --describe-config | -V | --version) return 0 ;; esac
  done
  return 1
}

make_dirs() {
  mkdir -p "$PGDATA"
  # 00700 also clears a set-group-ID bit inherited from an fsGroup volume; a directory the user cannot
  # chmod is left as it is (the server then says what is wrong with it).
  chmod 00700 "$PGDATA" 2>/dev/null || true
  mkdir -p /var/run/postgresql 2>/dev/null || true
  chmod 3775 /var/run/postgresql 2>/dev/null || true
  if [[ -n ${POSTGRES_INITDB_WALDIR:-} ]]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    chmod 00700 "$POSTGRES_INITDB_WALDIR"
  fi
  if [[ $(id -u) == 0 ]]; then
    local d
    for d in "$PGDATA" /var/run/postgresql ${POSTGRES_INITDB_WALDIR:+"$POSTGRES_INITDB_WALDIR"}; do
      find "$d" ! -user postgres -exec chown postgres:postgres {} +
    done
  fi
}

# sql ARGS...: psql against the socket-only setup server, stopping at the first error.
sql() {
  PGHOST=/var/run/postgresql PGHOSTADDR='' PGPORT=${PGPORT:-5432} \
    psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" "$@"
}

init_cluster() {
  if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
    say "the database is not initialised and POSTGRES_PASSWORD is empty: set POSTGRES_PASSWORD" \
      "(or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without a password)"
    exit 1
  fi
  [[ $POSTGRES_HOST_AUTH_METHOD == trust ]] && say "WARNING: POSTGRES_HOST_AUTH_METHOD=trust: no password is asked"
  ls /docker-entrypoint-initdb.d/ >/dev/null # unreadable: fail before initdb, not half-way

  local -a initdb_args=(--username="$POSTGRES_USER")
  [[ -n ${POSTGRES_INITDB_WALDIR:-} ]] && initdb_args+=(--waldir="$POSTGRES_INITDB_WALDIR")
  local -a extra=()
  # POSTGRES_INITDB_ARGS is shell words (quotes allowed), as in the official image.
  [[ -n $POSTGRES_INITDB_ARGS ]] && eval "extra=($POSTGRES_INITDB_ARGS)"
  # initdb refuses an empty password file, hence the newline.
  initdb "${initdb_args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${extra[@]}"

  # Network connections use the server's password_encryption unless told otherwise.
  local server_args=("$@")
  [[ ${server_args[0]:-} == postgres ]] && server_args=("${server_args[@]:1}")
  local method=$POSTGRES_HOST_AUTH_METHOD
  [[ -n $method ]] || method=$(postgres -C password_encryption "${server_args[@]}")
  printf '\n# Added by the image entrypoint: every network client authenticates.\nhost all all all %s\n' \
    "$method" >>"$PGDATA/pg_hba.conf"

  export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
  # A server on the socket only, for the setup steps.
  PGUSER=${PGUSER:-$POSTGRES_USER} pg_ctl -D "$PGDATA" -w start \
    -o "$(printf '%q ' "${server_args[@]}" -c listen_addresses= -c unix_socket_directories=/var/run/postgresql -p "${PGPORT:-5432}")"

  if [[ -z $(sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only --no-align \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'db'") ]]; then
    sql --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db"'
  fi
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    [[ -e $f ]] || continue
    case $f in
      *.sh)
        if [[ -x $f ]]; then say "running $f"; "$f"; else say "sourcing $f"; # shellcheck disable=SC1090
          . "$f"; fi ;;
      *.sql) say "running $f"; sql --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) say "running $f"; gzip -dc "$f" | sql --dbname "$POSTGRES_DB" ;;
      *) say "ignoring $f" ;;
    esac
  done

  PGUSER=${PGUSER:-$POSTGRES_USER} pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  say "PostgreSQL init process complete; ready for start up."
}

main() {
  if [[ ${1:-} == -* ]]; then set -- postgres "$@"; fi
  if [[ ${1:-} != postgres ]] || wants_exit "$@"; then exec "$@"; fi

  : "${PGDATA:?PGDATA is not set}"
  secret_env POSTGRES_PASSWORD
  secret_env POSTGRES_USER postgres
  secret_env POSTGRES_DB "$POSTGRES_USER"
  secret_env POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"

  make_dirs
  if [[ $(id -u) == 0 ]]; then
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
  fi

  if [[ -s $PGDATA/PG_VERSION ]]; then
    say "PGDATA ($PGDATA) holds a database; skipping initialization"
  else
    init_cluster "$@"
  fi
  exec "$@"
}

main "$@"
