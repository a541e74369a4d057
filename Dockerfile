# syntax=docker/dockerfile:1
#
# arng: one image for every arng service of docker-compose.yml (ingest, api, sensor);
# the subcommand is the container's command. Two stages:
#   builder  the Rust toolchain; `cargo build --release --locked` (Cargo.lock is the
#            truth, a stale lock fails the build instead of drifting)
#   runtime  Debian slim with ca-certificates (mqtts:// and https:// InfluxDB) and curl
#            (the compose healthchecks of ingest and api), the binary, a non-root user
#
# Build alone: docker build -t arng:local .   Run: docker run --rm arng:local --help
# The builder and the runtime share one Debian release (trixie), so the binary finds
# the glibc it was linked against. RUST_VERSION is the toolchain the test suite runs
# with; every dependency in Cargo.lock builds with it.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-trixie AS builder
# The commit `arng --version` names: the context leaves .git/ out, so build.rs reads it
# from here (docker build --build-arg ARNG_GIT_COMMIT=$(git rev-parse --short=12 HEAD) .);
# without it, "unknown".
ARG ARNG_GIT_COMMIT=unknown
WORKDIR /src
COPY . .
# BuildKit caches (registry and target dir) make a rebuild after a source change take
# seconds instead of recompiling every dependency; they are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin arng \
 && install -D -m 0755 target/release/arng /out/arng \
 && /out/arng --version

FROM debian:trixie-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid so volume ownership is predictable. /var/lib/arng/spool exists in the
# image, owned by arng: Docker copies that ownership into a new named volume mounted
# there (ingest's disk spool), so the non-root process can write to it.
RUN groupadd --system --gid 10001 arng \
 && useradd --system --uid 10001 --gid arng --home-dir /var/lib/arng \
      --shell /usr/sbin/nologin arng \
 && install -d -o arng -g arng -m 0750 /var/lib/arng /var/lib/arng/spool
COPY --from=builder /out/arng /usr/local/bin/arng
USER arng:arng
WORKDIR /var/lib/arng
# Default state directory of arng (e.g. ingest's spool when --spool-dir is not given).
ENV XDG_STATE_HOME=/var/lib/arng
ENTRYPOINT ["arng"]
CMD ["--help"]
