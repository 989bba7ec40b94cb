# syntax=docker/dockerfile:1
# Lifeboat operator image: a release build of the `lifeboat` binary on Debian bookworm-slim with the PostgreSQL 18
# client tools (pg_dump, pg_restore, psql) it spawns for backups and restores.
#
#   docker build -t ghcr.io/lifeboat-dev/lifeboat:0.1.0 .

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG PG_MAJOR=18

# ---------------------------------------------------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# The caches keep the registry and dependency builds across image builds; the binary is copied out of the cached
# target directory inside the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lifeboat \
 && install -D -m 0755 target/release/lifeboat /out/lifeboat

# -------------------------------------------------------------------------------------------------------- runtime
FROM debian:${DEBIAN_RELEASE}-slim
ARG DEBIAN_RELEASE
ARG PG_MAJOR

# PostgreSQL client tools from the PGDG apt repository (Debian bookworm itself only ships version 15, and pg_dump
# must be at least as new as the server it dumps).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    install -d -m 0755 /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${DEBIAN_RELEASE}-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}"; \
    apt-get purge -y --auto-remove curl gnupg; \
    rm -rf /var/lib/apt/lists/*; \
    "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" --version

# Non-root user 65532 with a passwd entry (libpq looks the user up when no user name is given).
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot

COPY --from=builder /out/lifeboat /usr/local/bin/lifeboat

# The versioned client binaries come first so no wrapper script chooses among versions. The root filesystem is
# meant to be read-only: backups keep only a passfile in /tmp (an emptyDir in the Deployment); dumps are streamed.
ENV PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}" \
    TMPDIR=/tmp

LABEL org.opencontainers.image.title="lifeboat" \
      org.opencontainers.image.description="Kubernetes operator for the whole life of an application's databases" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lifeboat"]
CMD ["run"]
