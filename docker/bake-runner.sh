#!/bin/sh
# Bakes a verified runner release into STATE_DIR/bases/<version> with corral itself (download,
# SHA-256 check, safe extraction, read-only tree, manifest), as the Dockerfile does at build
# time. The test suite runs this same script against its fake GitHub (tests/ship_container.rs).
#
#   bake-runner.sh CORRAL STATE_DIR
#
# Environment: RUNNER_VERSION (empty: bake nothing), RUNNER_SHA256 (optional pinned digest),
# RUNNER_DOWNLOAD_URL (optional `{version}`/`{arch}` template, e.g. a mirror),
# GITHUB_API_URL (optional, for the release's digest: GHES or a mirror).
set -eu
corral=$1
state=$2
mkdir -p "$state/bases"
if [ -z "${RUNNER_VERSION:-}" ]; then
    echo "RUNNER_VERSION is empty: no runner release baked; corral downloads base.version at start"
    exit 0
fi
config=$(mktemp)
trap 'rm -f "$config"' EXIT
{
    echo "base:"
    echo "  version: \"$RUNNER_VERSION\""
    if [ -n "${RUNNER_SHA256:-}" ]; then echo "  sha256: \"$RUNNER_SHA256\""; fi
    if [ -n "${RUNNER_DOWNLOAD_URL:-}" ]; then echo "  download_url: \"$RUNNER_DOWNLOAD_URL\""; fi
    echo "state_dir: \"$state\""
    if [ -n "${GITHUB_API_URL:-}" ]; then
        echo "github:"
        echo "  api_url: \"$GITHUB_API_URL\""
    fi
} >"$config"
"$corral" base install "$RUNNER_VERSION" -c "$config"
