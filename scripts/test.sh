#!/usr/bin/env bash
# The whole test suite: installs what the tests need when it is missing, then runs every
# unit and integration test. Usage (as root on a fresh Debian machine): bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
# The SSH tests run a real sshd target and real OpenSSH clients (ssh, scp, sftp, ssh-agent,
# ssh-keygen), sshpass, rsync, asciinema (to validate recordings) and pgrep.
for c in ssh ssh-keygen ssh-agent scp sftp; do
    command -v "$c" >/dev/null || { need+=(openssh-client); break; }
done
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v sshpass >/dev/null || need+=(sshpass)
command -v asciinema >/dev/null || need+=(asciinema)
command -v rsync >/dev/null || need+=(rsync)
command -v pgrep >/dev/null || need+=(procps)
command -v script >/dev/null || need+=(bsdutils)
# The HTTPS tests run a real nginx as the admin console (the WebSocket echo service behind it is
# part of the test binary).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
# Third-party checkers: promtool (Debian's prometheus package) checks the metrics exposition;
# the fault tests mount a small tmpfs (mount, from util-linux) and lock the database from
# python3's sqlite3.
command -v promtool >/dev/null || need+=(prometheus)
command -v python3 >/dev/null || need+=(python3 python3-pip)
# The sign-in tests drive Debian's headless Chromium (through playwright-core, never a browser
# download) against a real OpenID provider, both on the machine's Node.js 20 (tests/peers/;
# Debian's own nodejs 18 is too old for oidc-provider 9).
[ -x /usr/bin/chromium ] || need+=(chromium)
# The cluster tests run several gateway nodes on a real PostgreSQL (a cluster of its own in a
# temporary directory, run as an unprivileged user) behind a real HAProxy.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
if ((${#need[@]})); then
    echo "installing test dependencies: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The ticket-system tests run a real Request Tracker 5 (Debian's, on SQLite, with its standalone
# server; tests/it/peers/rt.rs serves a copy of its database on loopback, nothing else serves
# it). Its install asks questions, so debconf gets the answers first.
rt_need=()
for p in request-tracker5 rt5-db-sqlite rt5-standalone; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || rt_need+=("$p")
done
if ((${#rt_need[@]})); then
    echo "installing Request Tracker 5 for the ticket-system tests: ${rt_need[*]}"
    debconf-set-selections <<'EOF'
request-tracker5 request-tracker5/dbconfig-install boolean true
request-tracker5 request-tracker5/database-type select sqlite3
request-tracker5 request-tracker5/initial-root-password password jitgate-test-root
request-tracker5 request-tracker5/rtname string jitgate-test
request-tracker5 request-tracker5/organization string jitgate.test
request-tracker5 request-tracker5/correspondaddress string rt@jitgate.test
request-tracker5 request-tracker5/commentaddress string rt-comment@jitgate.test
request-tracker5 request-tracker5/webbaseurl string http://127.0.0.1:8080
request-tracker5 request-tracker5/handle-siteconfig-permissions boolean true
request-tracker5 request-tracker5/install-cronjobs boolean false
EOF
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq -o DPkg::Lock::Timeout=600
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${rt_need[@]}"
fi
# ssh-audit audits the SSH gateway's algorithms; schemathesis checks the API against its
# OpenAPI document. Pinned, from PyPI.
pip_need=()
command -v ssh-audit >/dev/null || pip_need+=(ssh-audit==3.9.0)
command -v schemathesis >/dev/null || pip_need+=(schemathesis==4.32.5)
if ((${#pip_need[@]})); then
    echo "installing test tools from PyPI: ${pip_need[*]}"
    python3 -m pip install -q --disable-pip-version-check "${pip_need[@]}"
fi

# The test peers' Node packages, exactly as locked, whenever the lock file is newer.
if [ ! -d tests/peers/node_modules ] || [ tests/peers/package-lock.json -nt tests/peers/node_modules ]; then
    echo "installing the test peers' Node packages (tests/peers)"
    npm ci --prefix tests/peers --no-audit --no-fund
fi
# The web console's front-end packages (asciinema-player), exactly as locked: tests/it/web_assets.rs
# checks that the committed web/dist/ is what they give (scripts/web-assets.sh regenerates it).
if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules ]; then
    echo "installing the web console's Node packages (web)"
    npm ci --prefix web --no-audit --no-fund
fi

cargo test --locked --all-targets 2>&1 | tee /tmp/jitgate-test.log
# Repeat the closing summary so the last line shows how many tests ran.
grep -E '^test result:' /tmp/jitgate-test.log | awk '
    { passed += $4; failed += $6; ignored += $8 }
    END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }'
