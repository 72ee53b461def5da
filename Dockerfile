# corral in one container: tini as PID 1, corral as root only so that it can drop privileges,
# every runner as the unprivileged `runner` user (uid 1001). See README.md "Docker".
#
#   docker build -t corral .
#   docker build -t corral --build-arg RUNNER_VERSION=2.336.0 --build-arg RUNNER_SHA256=<hex> .
#   docker build -t corral --build-arg RUNNER_VERSION= .       # bake nothing; download at start
#   docker build -t corral --build-arg RUNNER_DOWNLOAD_URL='https://mirror.example/actions-runner-linux-{arch}-{version}.tar.gz' \
#       --build-arg RUNNER_SHA256=<hex> .                      # bake from a mirror
#   docker build -t corral --build-arg RUNNER_GID=$(stat -c %g /var/run/docker.sock) .

# ---------------------------------------------------------------------------------------------
# Stage 1: corral from the locked dependencies, and the baked runner release.
FROM rust:1-bookworm AS build
WORKDIR /src
# The dependencies first, in a layer of their own, built against a stub `main`: a change to
# corral's sources then rebuilds corral alone, not its ~300 crates. Only the `corral` binary
# is built, so the other targets Cargo.toml names (tests, benches, examples) need not exist.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' >src/main.rs \
    && cargo build --release --locked --bin corral \
    && rm -rf src
COPY src ./src
# touch: the stub's build is newer than the sources' copied modification times.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin corral

# The runner release baked into the image, downloaded and verified by corral itself
# (`corral base install`: SHA-256 from RUNNER_SHA256, else the digest the releases API gives;
# safe extraction; read-only tree; a manifest that `corral base verify` checks later).
# It must equal `base.version` in docker/config/runners.yaml (a test keeps them equal), and be
# a pinned version: with `base.version: latest` corral asks the releases API at start anyway.
# RUNNER_DOWNLOAD_URL: where to download it from instead of github.com, a `base.download_url`
# template ({version}, {arch}) such as a mirror's; with a mirror and no way to reach
# api.github.com, give RUNNER_SHA256 too (the digest otherwise comes from the releases API).
ARG RUNNER_VERSION=2.336.0
ARG RUNNER_SHA256=
ARG RUNNER_DOWNLOAD_URL=
COPY docker/bake-runner.sh /usr/local/bin/bake-runner.sh
RUN RUNNER_VERSION="$RUNNER_VERSION" RUNNER_SHA256="$RUNNER_SHA256" \
    RUNNER_DOWNLOAD_URL="$RUNNER_DOWNLOAD_URL" \
    sh /usr/local/bin/bake-runner.sh target/release/corral /bake/state

# ---------------------------------------------------------------------------------------------
# Stage 2: a slim Debian with what the official runner needs (reference/runner-contract.md §3:
# ICU, Kerberos, zlib, LTTng, OpenSSL; ldd/ldconfig for config.sh's own checks), CA
# certificates, git and curl for jobs (curl also runs the HEALTHCHECK), and tini.
FROM debian:bookworm-slim
# Not pinned (DL3008): bookworm's point and security releases replace these versions, so a
# pin would break the build at the next update; the image takes what bookworm ships then.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl git libc-bin libicu72 libkrb5-3 liblttng-ust1 libssl3 zlib1g tini \
    && rm -rf /var/lib/apt/lists/*

# The runners' user. corral starts each runner with this user's primary group only, so to let
# jobs use a mounted Docker socket, build with RUNNER_GID set to the socket's group id
# (README.md "Docker access for jobs" explains what that costs).
ARG RUNNER_GID=1001
RUN (getent group "$RUNNER_GID" >/dev/null || groupadd --gid "$RUNNER_GID" runner) \
    && useradd --uid 1001 --gid "$RUNNER_GID" --create-home --shell /bin/bash runner \
    && mkdir -p /etc/corral /var/lib/corral

COPY --from=build /src/target/release/corral /usr/local/bin/corral

# Where the baked release goes, and why there: runner directories hard-link the base's files,
# and a hard link cannot cross file systems. A base at a read-only image path (say /opt) would
# sit on the image's overlay while runners live on the state volume, so every runner would get
# a private 50 MB copy of bin/. So the release is baked under the state directory itself,
# /var/lib/corral/bases/<version>: Docker seeds a new, empty named volume with the image's
# content at its mount point, corral finds the release installed there (`base.version` in the
# config) and downloads nothing. A volume that already exists keeps its content, and a bind
# mount is never seeded: then corral downloads and verifies the configured release at start,
# exactly as outside a container. This must stay above VOLUME: later changes to a volume path
# are discarded.
COPY --from=build /bake/state/bases /var/lib/corral/bases

# The default config; docker/docker-compose.yml mounts the config directory over /etc/corral.
# CORRAL_CONFIG makes it the default of every command: `docker run IMAGE check`, `plan`,
# `docker exec CONTAINER corral status` need no `-c`.
COPY docker/config/runners.yaml /etc/corral/runners.yaml
ENV CORRAL_CONFIG=/etc/corral/runners.yaml
VOLUME ["/var/lib/corral"]

# The status API that docker/config/runners.yaml enables on loopback (`api.listen`); /healthz
# answers while the controller runs. Keep `api.listen` in a mounted config, or override this.
ENV CORRAL_HEALTH_URL=http://127.0.0.1:9180/healthz
# Exec form (hadolint DL3025); `sh -c` expands CORRAL_HEALTH_URL at each check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["sh", "-c", "curl -fsS \"$CORRAL_HEALTH_URL\" || exit 1"]

# tini reaps the zombies a job leaves behind and forwards SIGTERM to corral, which lets busy
# runners finish (`shutdown_timeout`) and stops the rest; give `docker stop` at least that long
# (`stop_grace_period` in compose, `--time` for docker stop).
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/corral"]
CMD ["run", "-c", "/etc/corral/runners.yaml"]
