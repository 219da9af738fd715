#!/usr/bin/env bash
# Ticket-system reconcile benchmark: 1,000 tickets with live grants (BENCH_TICKETS) re-read from
# a real Request Tracker 5 on loopback; prints the time of one full reconcile pass and the
# requests it made (nothing changed; some tickets resolved in RT). Not a timed test.
#   bash bench/tickets.sh        (as root; RT and the test peers as scripts/test.sh installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg-query -W -f='${Status}' request-tracker5 2>/dev/null | grep -q 'install ok installed'; then
    echo "Request Tracker 5 is missing: run scripts/test.sh once (it installs it), then this again" >&2
    exit 1
fi
export BENCH_TICKETS=${BENCH_TICKETS:-1000}
echo "jitgate ticket reconcile benchmark: $BENCH_TICKETS tickets with live grants, Request Tracker 5 on loopback (2 cores; the test profile build)"
cargo test --locked --test it bench_reconcile_a_thousand_tickets_against_rt -- --ignored --nocapture 2>&1 \
    | grep -E '^(created|reconcile pass)|panicked|test result'
