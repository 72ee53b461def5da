#!/bin/bash
# corral test kit: our own run.sh (runner-contract §4.2): runs a fresh copy of
# run-helper.sh in a loop, restarting only when it returns 2.

source_path="${BASH_SOURCE[0]}"
while [ -h "$source_path" ]; do
    link_dir="$(cd -P "$(dirname "$source_path")" && pwd)"
    source_path="$(readlink "$source_path")"
    [[ $source_path != /* ]] && source_path="$link_dir/$source_path"
done
runner_dir="$(cd -P "$(dirname "$source_path")" && pwd)"

run_once() {
    # Re-copied every time so an update's new template takes effect.
    cp -f "$runner_dir"/run-helper.sh.template "$runner_dir"/run-helper.sh
    "$runner_dir"/run-helper.sh "$@"
}

if [[ -n "$RUNNER_MANUALLY_TRAP_SIG" ]]; then
    # Forward INT/TERM to the helper's whole process group (official image behaviour).
    set -m
    trap 'kill -INT -$helper_pid 2>/dev/null' INT TERM
fi

while :; do
    if [[ -n "$RUNNER_MANUALLY_TRAP_SIG" ]]; then
        run_once "$@" &
        helper_pid=$!
        wait $helper_pid
        return_code=$?
        if [[ $return_code -gt 128 ]]; then
            wait $helper_pid
            exit $return_code
        fi
    else
        run_once "$@"
        return_code=$?
    fi
    if [[ $return_code -eq 2 ]]; then
        echo "Restarting runner..."
    elif [[ $return_code -eq 7 && "${ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE,,}" == "true" ]]; then
        exit 7
    else
        echo "Exiting runner..."
        exit 0
    fi
done
