#!/bin/bash
# corral test kit: our own env.sh (sourced by config.sh from the runner root): records
# selected variables in .env without duplicating them, and the current PATH in .path.

[ -f .env ] || touch .env

record_var() {
    local name="$1"
    local value="${!name}"
    [ -n "$value" ] || return 0
    grep -q "^${name}=" .env && return 0
    echo "${name}=${value}" >> .env
}

for var_name in LANG JAVA_HOME ANT_HOME M2_HOME ANDROID_HOME ANDROID_SDK_ROOT GRADLE_HOME NVM_BIN NVM_PATH LD_LIBRARY_PATH PERL5LIB; do
    record_var "$var_name"
done

echo "$PATH" > .path
