# corral in one container: the controller as root (only to drop privileges), runners as the
# unprivileged `runner` user (uid 1001). Build: docker build -t corral .
#
# Stage 1: build corral from the locked dependencies.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin corral

# Stage 2: a slim Debian with what the official runner needs
# (reference/runner-contract.md §3: ICU, Kerberos, zlib, LTTng, OpenSSL), plus CA
# certificates, git and curl for jobs, and tini to reap zombies as PID 1.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl git libicu72 libkrb5-3 liblttng-ust1 libssl3 zlib1g tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1001 --create-home --shell /bin/bash runner \
    && mkdir -p /etc/corral /var/lib/corral
COPY --from=build /src/target/release/corral /usr/local/bin/corral
COPY docker/config/runners.yaml /etc/corral/runners.yaml
VOLUME ["/var/lib/corral"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/corral"]
# Until the controller (`corral run`) lands, the image validates the mounted config.
CMD ["check", "-c", "/etc/corral/runners.yaml"]
