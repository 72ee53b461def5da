#!/bin/bash
# corral test kit: our own config.sh, written to behave like the official one
# (reference/runner-contract.md §3): root refusal, dependency checks, then the Listener.

if [ "$(id -u)" -eq 0 ] && [ -z "$RUNNER_ALLOW_RUNASROOT" ]; then
    echo "Must not run with sudo"
    exit 1
fi

# Like the official script, these checks run before the cd, relative to the caller's cwd.
if [ "$(uname -s)" = "Linux" ]; then
    if ! command -v ldd >/dev/null 2>&1; then
        echo "Can not find 'ldd'. Please install 'ldd' and try again."
        exit 1
    fi
    for lib in libcoreclr.so libSystem.Security.Cryptography.Native.OpenSsl.so libSystem.IO.Compression.Native.so; do
        # A missing or non-ELF file only complains on stderr; only "not found" fails.
        if ldd "./bin/$lib" 2>/dev/null | grep -q 'not found'; then
            echo "Dependencies is missing for Dotnet Core 6.0"
            echo "Execute sudo ./bin/installdependencies.sh to install any missing Dotnet Core 6.0 dependencies."
            exit 1
        fi
    done
    ldconfig_cmd="$(command -v ldconfig || echo /sbin/ldconfig)"
    if ! "$ldconfig_cmd" -NXv 2>/dev/null | grep -q libicu; then
        echo "Libicu's dependencies is missing for Dotnet Core 6.0"
        echo "Execute sudo ./bin/installdependencies.sh to install any missing Dotnet Core 6.0 dependencies."
        exit 1
    fi
fi

# Find our own directory through any chain of symlinks; cd -P gives the physical path.
source_path="${BASH_SOURCE[0]}"
while [ -h "$source_path" ]; do
    link_dir="$(cd -P "$(dirname "$source_path")" && pwd)"
    source_path="$(readlink "$source_path")"
    [[ $source_path != /* ]] && source_path="$link_dir/$source_path"
done
runner_dir="$(cd -P "$(dirname "$source_path")" && pwd)"
cd "$runner_dir" || exit 1

# shellcheck source=/dev/null
source ./env.sh

shopt -s nocasematch
if [[ "$1" == "remove" ]]; then
    ./bin/Runner.Listener "$@"
else
    ./bin/Runner.Listener configure "$@"
fi
