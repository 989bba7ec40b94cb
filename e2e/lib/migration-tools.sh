# shellcheck shell=bash
# Installers for the real migration tools that Lifeboat's ledger adapters are checked against.
# Source this file; it defines functions only and has no side effects when sourced.
#
#   source e2e/lib/migration-tools.sh
#   sqlx=$(tool_sqlx)                   # sqlx-cli 0.9.0        (cargo install)
#   migrate=$(tool_golang_migrate)      # golang-migrate v4.20.1 (go install, -tags postgres)
#   dbmate=$(tool_dbmate)               # dbmate v2.35.0        (go build of the module from the Go proxy)
#   diesel=$(tool_diesel)               # diesel_cli 2.3.14     (cargo install, postgres only, needs libpq)
#   flyway=$(tool_flyway)               # Flyway 13.12.1        (flyway-core from Maven Central + a small CLI)
#
# Each function prints exactly one line on stdout: the absolute path of a runnable executable.
# Progress and build output go to stderr. Everything is cached by version under
# ${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat/<tool>-<version>/, so a second call only checks a file.
# Installs are atomic: a tool is built into a temporary directory and moved into place at the end,
# so an interrupted install is retried on the next call instead of leaving a half-built cache.
# Only registries are used: crates.io (cargo), the Go module proxy (go), Maven Central (mvn) and
# Debian's packages (apt-get, for libpq-dev).

# Versions: each can be overridden with the environment variable named in its function
# (LIFEBOAT_SQLX_CLI_VERSION, LIFEBOAT_GOLANG_MIGRATE_VERSION, LIFEBOAT_DBMATE_VERSION,
# LIFEBOAT_DIESEL_CLI_VERSION, LIFEBOAT_FLYWAY_VERSION, LIFEBOAT_PGJDBC_VERSION).

_mt_cache_root() {
  printf '%s\n' "${LIFEBOAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat}"
}

_mt_log() {
  printf 'migration-tools: %s\n' "$*" >&2
}

# _mt_stage <final dir>: make an empty staging dir beside <final dir> (same filesystem, so the
# final rename is atomic) and print its path.
_mt_stage() {
  local final="$1"
  local stage
  mkdir -p "$(dirname "$final")" || return 1
  stage=$(mktemp -d "$(dirname "$final")/.$(basename "$final").partial.XXXXXX") || return 1
  chmod 755 "$stage" && printf '%s\n' "$stage"
}

# _mt_publish <staging dir> <final dir>: move a finished install into place.
_mt_publish() {
  local staging="$1" final="$2"
  if [[ -e "$final" ]]; then
    # An earlier interrupted or foreign install left something behind; the staging copy is complete.
    rm -rf "$final.old.$$" && mv "$final" "$final.old.$$" || return 1
  fi
  mv "$staging" "$final" || return 1
  rm -rf "$final.old.$$"
}

# _mt_cargo_install <crate> <version> <final dir> <binary> <cargo install args...>
_mt_cargo_install() {
  local crate="$1" version="$2" final="$3" bin="$4"
  shift 4
  if [[ -x "$final/bin/$bin" ]]; then
    printf '%s\n' "$final/bin/$bin"
    return 0
  fi
  command -v cargo >/dev/null 2>&1 || { _mt_log "cargo not found on PATH"; return 1; }
  local tmp stage rc=0
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-$crate.XXXXXX") || return 1
  stage=$(_mt_stage "$final") || { rm -rf "$tmp"; return 1; }
  _mt_log "installing $crate $version from crates.io (several minutes on 2 cores)"
  # The project's own target directory is never used: the build goes to a throwaway dir.
  CARGO_TARGET_DIR="$tmp/target" nice -n 10 cargo install "$crate" --version "$version" --locked \
    --root "$stage" "$@" 1>&2 || rc=$?
  rm -rf "$tmp"
  if [[ $rc -ne 0 || ! -x "$stage/bin/$bin" ]]; then
    _mt_log "cargo install $crate $version failed (exit $rc)"
    rm -rf "$stage"
    return 1
  fi
  rm -f "$stage/.crates.toml" "$stage/.crates2.json"
  _mt_publish "$stage" "$final" || { rm -rf "$stage"; return 1; }
  printf '%s\n' "$final/bin/$bin"
}

# _mt_go_install <final dir> <binary> <go install args...>
_mt_go_install() {
  local final="$1" bin="$2"
  shift 2
  if [[ -x "$final/bin/$bin" ]]; then
    printf '%s\n' "$final/bin/$bin"
    return 0
  fi
  command -v go >/dev/null 2>&1 || { _mt_log "go not found on PATH"; return 1; }
  local stage rc=0
  stage=$(_mt_stage "$final") || return 1
  mkdir -p "$stage/bin"
  _mt_log "go install $* (a minute or more on 2 cores)"
  # Run outside any module so no go.mod plays a part: pkg@version pins everything.
  (cd "$stage" && GOTOOLCHAIN=local GOBIN="$stage/bin" nice -n 10 go install "$@") 1>&2 || rc=$?
  if [[ $rc -ne 0 || ! -x "$stage/bin/$bin" ]]; then
    _mt_log "go install $* failed (exit $rc)"
    rm -rf "$stage"
    return 1
  fi
  _mt_publish "$stage" "$final" || { rm -rf "$stage"; return 1; }
  printf '%s\n' "$final/bin/$bin"
}

# tool_sqlx: sqlx-cli (postgres + rustls only).
tool_sqlx() {
  local v="${LIFEBOAT_SQLX_CLI_VERSION:-0.9.0}"
  _mt_cargo_install sqlx-cli "$v" "$(_mt_cache_root)/sqlx-cli-$v" sqlx \
    --no-default-features --features postgres,rustls
}

# tool_golang_migrate: the golang-migrate CLI with only the postgres driver (and the file source,
# which the CLI always includes).
tool_golang_migrate() {
  local v="${LIFEBOAT_GOLANG_MIGRATE_VERSION:-v4.20.1}"
  _mt_go_install "$(_mt_cache_root)/golang-migrate-$v" migrate \
    -tags postgres -ldflags "-X main.Version=${v#v}" "github.com/golang-migrate/migrate/v4/cmd/migrate@$v"
}

# tool_dbmate: dbmate v2 built from its module source on the Go module proxy, with the module's
# own go.mod/go.sum (the same build `go install ...@version` makes). Pinned to v2.35.0: the proxy
# refuses the module's version list (403 "This module version is not available"), so @latest does
# not resolve, and `go install github.com/amacneil/dbmate/v2@v2.35.0` fails too, because it reads
# that list to look for a deprecation notice; for v2.36.0, the newest release, the proxy serves
# .info and .mod but refuses the source zip (403). So the pinned module is downloaded with
# `go mod download` and built in its module directory. CGO_ENABLED=0 leaves out only the SQLite
# driver (main_cgo.go); PostgreSQL is pure Go.
tool_dbmate() {
  local v="${LIFEBOAT_DBMATE_VERSION:-v2.35.0}" final
  final="$(_mt_cache_root)/dbmate-$v"
  if [[ -x "$final/bin/dbmate" ]]; then
    printf '%s\n' "$final/bin/dbmate"
    return 0
  fi
  command -v go >/dev/null 2>&1 || { _mt_log "go not found on PATH"; return 1; }
  local stage dir rc=0
  stage=$(_mt_stage "$final") || return 1
  mkdir -p "$stage/bin"
  _mt_log "building dbmate $v from the Go module proxy (a minute or more on 2 cores)"
  dir=$(cd "$stage" && GOTOOLCHAIN=local go mod download -json "github.com/amacneil/dbmate/v2@$v" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || rc=$?
  if [[ $rc -ne 0 || -z "$dir" || ! -f "$dir/main.go" ]]; then
    _mt_log "go mod download github.com/amacneil/dbmate/v2@$v failed"
    rm -rf "$stage"
    return 1
  fi
  (cd "$dir" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 \
    go build -trimpath -ldflags "-s -w" -o "$stage/bin/dbmate" .) 1>&2 || rc=$?
  if [[ $rc -ne 0 || ! -x "$stage/bin/dbmate" ]]; then
    _mt_log "go build of dbmate $v failed (exit $rc)"
    rm -rf "$stage"
    return 1
  fi
  _mt_publish "$stage" "$final" || { rm -rf "$stage"; return 1; }
  printf '%s\n' "$final/bin/dbmate"
}

# _mt_ensure_libpq: diesel_cli's postgres backend links against libpq (pq-sys).
_mt_ensure_libpq() {
  if dpkg -s libpq-dev >/dev/null 2>&1; then
    return 0
  fi
  _mt_log "installing Debian's libpq-dev (needed by diesel_cli)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q libpq-dev 1>&2; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q 1>&2 || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libpq-dev 1>&2 || return 1
  fi
}

# tool_diesel: diesel_cli with the postgres backend only.
tool_diesel() {
  local v="${LIFEBOAT_DIESEL_CLI_VERSION:-2.3.14}" final
  final="$(_mt_cache_root)/diesel_cli-$v"
  if [[ -x "$final/bin/diesel" ]]; then
    printf '%s\n' "$final/bin/diesel"
    return 0
  fi
  _mt_ensure_libpq || { _mt_log "could not install libpq-dev"; return 1; }
  _mt_cargo_install diesel_cli "$v" "$final" diesel --no-default-features --features postgres
}

# tool_flyway: the real Flyway engine (flyway-core + flyway-database-postgresql + the PostgreSQL
# JDBC driver, with their transitive runtime dependencies, from Maven Central) behind a tiny Java
# command line compiled here, plus a `flyway` wrapper script:
#
#   flyway <jdbc-url> <user> <password> <migrations-dir> [migrate|info|validate|repair]
#
# Flyway's own command line (org.flywaydb:flyway-commandline, class org.flywaydb.commandline.Main)
# is on Maven Central at 13.12.1 but cannot run from it: it needs org.flywaydb:flyway-core-utilities
# and org.flywaydb:flyway-command-mcp 13.12.1, which Maven Central does not have (without the
# latter, Main fails with NoClassDefFoundError: org/flywaydb/mcp/McpConfigurationLoader).
tool_flyway() {
  local v="${LIFEBOAT_FLYWAY_VERSION:-13.12.1}" pgjdbc="${LIFEBOAT_PGJDBC_VERSION:-42.7.14}" final
  final="$(_mt_cache_root)/flyway-$v"
  if [[ -x "$final/flyway" && -f "$final/lib/lifeboat-flyway-cli.jar" ]]; then
    printf '%s\n' "$final/flyway"
    return 0
  fi
  local m
  for m in java javac jar mvn; do
    command -v "$m" >/dev/null 2>&1 || { _mt_log "$m not found on PATH"; return 1; }
  done
  local tmp stage rc=0
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-flyway.XXXXXX") || return 1
  stage=$(_mt_stage "$final") || { rm -rf "$tmp"; return 1; }
  mkdir -p "$stage/lib" "$tmp/src/lifeboat/e2e" "$tmp/classes"
  cat >"$tmp/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.lifeboat.e2e</groupId>
  <artifactId>flyway-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.flywaydb</groupId>
      <artifactId>flyway-core</artifactId>
      <version>$v</version>
    </dependency>
    <dependency>
      <groupId>org.flywaydb</groupId>
      <artifactId>flyway-database-postgresql</artifactId>
      <version>$v</version>
    </dependency>
    <dependency>
      <groupId>org.postgresql</groupId>
      <artifactId>postgresql</artifactId>
      <version>$pgjdbc</version>
    </dependency>
  </dependencies>
</project>
POM
  cat >"$tmp/src/lifeboat/e2e/FlywayCli.java" <<'JAVA'
package lifeboat.e2e;

import org.flywaydb.core.Flyway;
import org.flywaydb.core.api.FlywayException;
import org.flywaydb.core.api.MigrationInfo;
import org.flywaydb.core.api.output.MigrateResult;

/** Minimal command line over the real Flyway API (written by e2e/lib/migration-tools.sh). */
public final class FlywayCli {
  public static void main(String[] args) {
    if (args.length < 4 || args.length > 5) {
      System.err.println("usage: flyway <jdbc-url> <user> <password> <migrations-dir> [migrate|info|validate|repair]");
      System.exit(2);
    }
    String command = args.length == 5 ? args[4] : "migrate";
    Flyway flyway = Flyway.configure()
        .dataSource(args[0], args[1], args[2])
        .locations("filesystem:" + args[3])
        .load();
    try {
      switch (command) {
        case "migrate": {
          MigrateResult r = flyway.migrate();
          System.out.println("migrate: " + r.migrationsExecuted + " migration(s) applied, schema version "
              + (r.targetSchemaVersion == null ? "<none>" : r.targetSchemaVersion));
          break;
        }
        case "info":
          for (MigrationInfo i : flyway.info().all()) {
            System.out.println(i.getVersion() + "\t" + i.getDescription() + "\t" + i.getType() + "\t" + i.getState());
          }
          break;
        case "validate":
          flyway.validate();
          System.out.println("validate: ok");
          break;
        case "repair":
          flyway.repair();
          System.out.println("repair: ok");
          break;
        default:
          System.err.println("flyway: unknown command " + command);
          System.exit(2);
      }
    } catch (FlywayException e) {
      System.err.println("ERROR: " + e.getMessage());
      System.exit(1);
    }
  }
}
JAVA
  _mt_log "fetching Flyway $v and PostgreSQL JDBC $pgjdbc from Maven Central"
  { (cd "$tmp" && mvn -B -q -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$stage/lib") &&
    javac -nowarn -d "$tmp/classes" -cp "$stage/lib/*" "$tmp/src/lifeboat/e2e/FlywayCli.java" &&
    jar cf "$stage/lib/lifeboat-flyway-cli.jar" -C "$tmp/classes" .; } 1>&2 || rc=$?
  rm -rf "$tmp"
  if [[ $rc -ne 0 || ! -f "$stage/lib/flyway-core-$v.jar" || ! -f "$stage/lib/lifeboat-flyway-cli.jar" ]]; then
    _mt_log "installing Flyway $v failed (exit $rc)"
    rm -rf "$stage"
    return 1
  fi
  # The wrapper finds its own directory, so the cache can move. Flyway logs through
  # java.util.logging to stderr, one line a message.
  cat >"$stage/flyway" <<'WRAPPER'
#!/usr/bin/env bash
# Real Flyway (flyway-core from Maven Central) behind lifeboat.e2e.FlywayCli; written by
# e2e/lib/migration-tools.sh. Usage: flyway <jdbc-url> <user> <password> <dir> [migrate|info|validate|repair]
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${JAVA:-java}" -Djava.util.logging.SimpleFormatter.format='%4$s: %5$s%6$s%n' \
  -cp "$here/lib/*" lifeboat.e2e.FlywayCli "$@"
WRAPPER
  chmod +x "$stage/flyway"
  _mt_publish "$stage" "$final" || { rm -rf "$stage"; return 1; }
  printf '%s\n' "$final/flyway"
}

# tool_all: install every tool, one path a line in the order sqlx, golang-migrate, dbmate, diesel, flyway.
tool_all() {
  tool_sqlx && tool_golang_migrate && tool_dbmate && tool_diesel && tool_flyway
}
