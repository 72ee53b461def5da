#!/bin/bash
# corral test kit: our own safe_sleep.sh: sleep N seconds with whatever the host has.

seconds="${1:-1}"
if command -v sleep >/dev/null 2>&1; then
    sleep "$seconds"
elif command -v ping >/dev/null 2>&1; then
    ping -c $((seconds + 1)) 127.0.0.1 >/dev/null
else
    # Last resort: read with a timeout on a descriptor that never delivers data.
    read -rt "$seconds" <> <(:) || true
fi
