# syntax=docker/dockerfile:1
#
# One image for every Airlock role: the central API (`airlock server`, the default command),
# the sidecar proxy (`airlock proxy …`) and the operator CLI (`airlock secret …`).
#
#   docker build -t airlock --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm airlock --help
#
#   docker volume create airlock-data
#   docker run --rm -v airlock-data:/var/lib/airlock airlock server init --data-dir /var/lib/airlock
#   docker run -d --name airlock -p 127.0.0.1:7878:7878 -v airlock-data:/var/lib/airlock airlock
#
# Examples of running it: examples/docker-compose.yml and examples/kubernetes/.

############################################################################################
# Build stage
############################################################################################
FROM rust:1-bookworm AS build
WORKDIR /src

# 1. Dependencies only, so that editing src/ does not rebuild them. Cargo wants the lib, the
#    bin and the [[bench]] target named in Cargo.toml to exist, so stand-ins are written for
#    all three; afterwards everything compiled for the `airlock` package itself is removed,
#    so that step 2 rebuilds it whatever the files' timestamps say.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo '' > src/lib.rs \
 && echo 'fn main() {}' > benches/substitute.rs \
 && cargo build --release --locked \
 && rm -rf src benches \
           target/release/airlock target/release/airlock.d target/release/libairlock.* \
           target/release/.fingerprint/airlock-* \
           target/release/deps/airlock-* target/release/deps/libairlock-*

# 2. The crate itself. policies/*.toml is include_str!'d from src/domain/policy.rs (by its
#    unit tests today; `airlock dev` is to embed the examples in the binary), so it is
#    copied before building. tests/ is not needed by `cargo build` (see .dockerignore).
COPY policies ./policies
COPY benches ./benches
COPY src ./src
RUN cargo build --release --locked \
 && install -m 0755 target/release/airlock /usr/local/bin/airlock \
 && /usr/local/bin/airlock --version

############################################################################################
# Runtime stage
############################################################################################
FROM debian:bookworm-slim

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="airlock" \
      org.opencontainers.image.description="Keeps credentials away from AI agents: central secret API and sidecar proxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

# ca-certificates: trust roots for upstream TLS (the proxy) and for a remote central API.
# curl: the HTTP client of HEALTHCHECK, the Kubernetes exec probes and the examples'
# CA-publishing step; a few MB with its libraries, recommends left out.
# Versions are not pinned: bookworm's security updates replace the exact versions, and a
# pinned version that left the archive would break the build; a rebuild picks up fixes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid, so volumes, fsGroup and secrets can be set up for it.
# /var/lib/airlock: the server's data (master.key, SQLite) or the proxy's (CA, spool).
# /etc/airlock/server-ca: where the examples publish the CA of the central API's HTTPS
# certificate (a volume mounted there starts owned by this user, so it can be written).
RUN groupadd --system --gid 10001 airlock \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
            --home-dir /var/lib/airlock --shell /usr/sbin/nologin airlock \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/airlock \
 && install -d -o 10001 -g 10001 -m 0755 /etc/airlock/server-ca

COPY --from=build /usr/local/bin/airlock /usr/local/bin/airlock
# The example policies. Their [agent] allowed_ips name loopback only, which fits a server
# and proxy on one host; in containers mount your own directory over this one.
COPY policies/ /etc/airlock/policies/

# No VOLUME: one-off CLI runs (`docker run airlock secret ls`) would each leave an
# anonymous volume behind. Mount a volume at /var/lib/airlock for the server and proxy.
WORKDIR /var/lib/airlock
USER 10001:10001

# 7878 central API, 7879 sidecar proxy.
EXPOSE 7878 7879

# Works for both roles: the server answers /healthz on 7878 (the default below); for the
# proxy set AIRLOCK_HEALTH_URL=http://127.0.0.1:7879/_airlock/healthz (or …/readyz). A server
# on HTTPS: AIRLOCK_HEALTH_URL=https://127.0.0.1:7878/healthz and AIRLOCK_HEALTH_CA=<its CA>.
ENV AIRLOCK_HEALTH_URL=http://127.0.0.1:7878/healthz
# A shell expands the variables at run time (exit 1 is Docker's "unhealthy", whatever curl said).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/bin/sh", "-c", "curl -fsS --max-time 4 ${AIRLOCK_HEALTH_CA:+--cacert \"$AIRLOCK_HEALTH_CA\"} -o /dev/null \"$AIRLOCK_HEALTH_URL\" || exit 1"]

ENTRYPOINT ["airlock"]
CMD ["server", "--listen", "0.0.0.0:7878", "--data-dir", "/var/lib/airlock", "--policies", "/etc/airlock/policies"]
