#!/usr/bin/env bash
# Makes, with no container registry, every image the Dockerfile's FROM lines name, tagged with
# exactly those names, so that the Dockerfile users build is the one CI builds, unchanged:
#
#   debian:bookworm-slim   a minimal Debian bookworm root made by debootstrap, trimmed as the
#                          official slim image is (no docs, man pages or locales), imported with
#                          `docker import`;
#   rust:1-bookworm        that image plus a C compiler (ring, the linker), this machine's
#                          Rust toolchain (`rustc --print sysroot`, docs left out) and its local
#                          CA certificates (/usr/local/share/ca-certificates), so that cargo in
#                          the build reaches crates.io as it does here. Debian bookworm's own
#                          rustc (1.63) is older than corral's rust-version: the machine's
#                          toolchain must be 1.85 or newer.
#
#   sudo docker/make-images.sh [--refresh]
#
# Idempotent: an image the engine already has is kept as it is. The debootstrap tarball is
# cached in $CORRAL_IMAGES_CACHE (default /var/cache/corral-images), so a new engine gets
# its images in seconds; --refresh makes a new tarball and replaces both images.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), RUSTC (default rustc).
# Needs root (debootstrap), a Docker engine, and Debian's package archive.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${CORRAL_IMAGES_CACHE:-/var/cache/corral-images}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rustc=${RUSTC:-rustc}
suite=bookworm
min_rust=1.85
refresh=false
case "${1:-}" in
    "") ;;
    --refresh) refresh=true ;;
    *) echo "usage: $0 [--refresh]" >&2; exit 2 ;;
esac

say() { echo "make-images: $*" >&2; }
die() { say "$*"; exit 1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "no Docker engine answers (docker version failed)"
# One run at a time on this machine: parallel runs would debootstrap twice.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# The Debian root: debootstrap (minbase), then what makes an image "slim" and apt behave in
# a container, packed as a tarball kept in the cache.
make_rootfs() {
    local tarball=$1 root
    command -v debootstrap >/dev/null 2>&1 || {
        say "installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
    }
    root=$(mktemp -d /var/tmp/corral-rootfs.XXXXXX)
    # shellcheck disable=SC2064 # expand $root now: it is local
    trap "rm -rf '$root'" EXIT
    say "debootstrap $suite from $mirror (a few minutes; cached afterwards)"
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
    rm -f "$root.log"
    slim "$root"
    tar -C "$root" --numeric-owner -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$root"
    trap - EXIT
}

slim() {
    local root=$1
    # The package sources an image of bookworm uses: the release, its updates, security.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Packages installed later leave no docs, man pages or translations (copyright stays).
    cat >"$root/etc/dpkg/dpkg.cfg.d/corral-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
    # A container's package installs need no fsync, no translations and no kept archives.
    echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/corral-unsafe-io"
    cat >"$root/etc/apt/apt.conf.d/corral-container" <<'EOF'
Acquire::Languages "none";
Acquire::GzipIndexes "true";
APT::AutoRemove::SuggestsImportant "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Binary::apt::APT::Keep-Downloaded-Packages "false";
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    rm -rf "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache
    # Docker provides these at run time.
    rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
    : >"$root/etc/machine-id"
}

make_debian() {
    local tarball="$cache/debian-$suite-slim-rootfs.tar"
    if ! $refresh && have_image debian:bookworm-slim; then
        say "debian:bookworm-slim exists; kept"
        return
    fi
    if $refresh || [ ! -s "$tarball" ]; then
        make_rootfs "$tarball"
    else
        say "using the cached root file system $tarball"
    fi
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $suite (corral docker/make-images.sh)" \
        "$tarball" debian:bookworm-slim >/dev/null
    say "made debian:bookworm-slim"
}

# "1.95.0" >= "1.85"?
version_at_least() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]
}

make_rust() {
    if ! $refresh && have_image rust:1-bookworm; then
        say "rust:1-bookworm exists; kept"
        return
    fi
    local sysroot version work
    command -v "$rustc" >/dev/null 2>&1 || die "no Rust toolchain: install one with rustup ($min_rust or newer)"
    sysroot=$("$rustc" --print sysroot)
    version=$("$rustc" --version | awk '{print $2}')
    version_at_least "$version" "$min_rust" \
        || die "rustc $version at $sysroot is older than corral's rust-version $min_rust"
    [ -x "$sysroot/bin/cargo" ] && [ "$sysroot" != /usr ] \
        || die "$sysroot is not a self-contained toolchain with cargo (use rustup's; Debian's rustc is too old)"
    work=$(mktemp -d)
    # shellcheck disable=SC2064 # expand $work now: it is local
    trap "rm -rf '$work'" EXIT
    # As the official rust image: cargo's home at /usr/local/cargo, its binaries on PATH.
    cat >"$work/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make pkg-config git \
    && rm -rf /var/lib/apt/lists/*
# This machine's own trust anchors (a TLS-inspecting egress proxy's CA, say), so that cargo
# inside the build reaches crates.io as cargo on the machine does; none on most machines.
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
COPY rust /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && rustc --version && cargo --version
EOF
    mkdir "$work/ca"
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$work/ca/"
    fi
    say "rust:1-bookworm with rustc $version from $sysroot"
    # The context streamed as one tar: the Dockerfile, ca/, and the toolchain as rust/ (no copy).
    tar -c -C "$work" Dockerfile ca \
        -C "$sysroot" --exclude=./share/doc --transform 's,^\./,rust/,;s,^\.$,rust,' . \
        | docker build -q -t rust:1-bookworm - >/dev/null
    rm -rf "$work"
    trap - EXIT
    say "made rust:1-bookworm"
}

# Every FROM of the Dockerfile must be one this script knows how to make.
for image in $(awk 'toupper($1) == "FROM" { print $2 }' Dockerfile | sort -u); do
    case "$image" in
        debian:bookworm-slim | rust:1-bookworm) ;;
        *) die "the Dockerfile names $image, which this script cannot make" ;;
    esac
done
make_debian
make_rust
