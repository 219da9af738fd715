#!/usr/bin/env bash
# The whole test suite: installs what the tests need when it is missing, then runs every
# unit and integration test. Usage (as root on a fresh Debian machine): bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
if ((${#need[@]})); then
    echo "installing test dependencies: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo test --locked --all-targets 2>&1 | tee /tmp/jitgate-test.log
# Repeat the closing summary so the last line shows how many tests ran.
grep -E '^test result:' /tmp/jitgate-test.log | awk '
    { passed += $4; failed += $6; ignored += $8 }
    END { printf "all test binaries: %d passed, %d failed, %d ignored\n", passed, failed, ignored }'
