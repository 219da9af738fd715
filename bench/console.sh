#!/usr/bin/env bash
# Session index benchmark: prints the server time of session-list pages over a large index.
#   bash bench/console.sh        (needs curl and python3)
# Fills a fresh gateway's database with BENCH_SESSIONS ended sessions (default 100000: varied
# users, targets, tasks, protocols and end causes, start times spread over 90 days), written
# with python3's sqlite3 while the gateway is stopped, then measures BENCH_CALLS calls (default
# 200) of each query with an admin's API key: the first page, a filtered page, and a deep page
# (`before` the last session of page 100). Server time is curl's time to the first byte of the
# answer minus its time until the request could be sent (%{time_starttransfer} -
# %{time_pretransfer}), so TLS set-up and transfer are left out. Prints the median and p99 of
# each and whether p99 is under 50 ms; the console's /sessions pages likewise once they exist.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_SESSIONS:-100000}
CALLS=${BENCH_CALLS:-200}
GOAL_MS=50

for c in curl python3; do
    command -v "$c" >/dev/null || { echo "bench/console.sh needs $c" >&2; exit 1; }
done

cargo build --profile dist --locked --quiet
J=$PWD/target/dist/jitgate
W=$(mktemp -d /tmp/jitgate-bench-console.XXXXXX)
SERVE_PID=
cleanup() {
    # Only the gateway this script started, by its process id.
    if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port)
SSH_PORT=$(free_port)
HTTPS_PORT=$(free_port)
METRICS_PORT=$(free_port)
ADMIN_KEY=jgk_bench_admin_$RANDOM$RANDOM$RANDOM
HOST_KEY="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLS/fN5CcMLkyFXgymTgElYtx/VQk33mhW2ohI88KzN"
TARGETS=40

TARGET_LIST=$(for i in $(seq -w 1 "$TARGETS"); do printf '"srv-%s", ' "$i"; done)
TARGET_LIST=${TARGET_LIST%, }
{
    cat <<CFG
[gateway]
public_name = "localhost"
api_listen = "127.0.0.1:$API_PORT"
ssh_listen = "127.0.0.1:$SSH_PORT"
https_listen = "127.0.0.1:$HTTPS_PORT"
metrics_listen = "127.0.0.1:$METRICS_PORT"
data_dir = "data"
certs_dir = "certs"
recordings_dir = "recordings"
[store]
url = "sqlite://data/jitgate.db"
[[users]]
name = "admin"
roles = ["admin"]
api_key_sha256 = "$(printf %s "$ADMIN_KEY" | sha256sum | cut -c1-64)"
CFG
    # 30 technicians, the last four of them a vendor's.
    for i in $(seq -w 1 30); do
        printf '[[users]]\nname = "tech%s"\nroles = ["technician"]\n' "$i"
        if ((10#$i > 26)); then printf 'vendor = "acme"\n'; fi
    done
    for i in $(seq -w 1 "$TARGETS"); do
        printf '[[targets]]\nname = "srv-%s"\nkind = "ssh"\naddress = "127.0.0.1:1"\nhost_key = "%s"\n' "$i" "$HOST_KEY"
    done
    # Nothing dials the targets; the HTTPS one trusts the test peers' CA.
    printf '[[targets]]\nname = "idp-admin"\nkind = "https"\nurl = "https://127.0.0.1:1"\nserver_ca = "%s"\n' \
        "$PWD/config/targets/idp-ca.pem"
    for t in reset-credential endpoint-remediation patch-agent collect-logs; do
        printf '[[tasks]]\nname = "%s"\ntargets = [%s]\nprincipal = "ops"\nallow = ["pty", "shell", "exec"]\nmax_ttl = "1h"\n' \
            "$t" "$TARGET_LIST"
    done
    printf '[[tasks]]\nname = "unlock-account"\ntargets = ["idp-admin"]\nhttp_allow = ["GET /*"]\nmax_ttl = "15m"\n'
} > "$W/jitgate.toml"

"$J" --config "$W/jitgate.toml" init >/dev/null

API=
start_serve() {
    : > "$W/serve.out"
    "$J" --config "$W/jitgate.toml" serve > "$W/serve.out" 2>> "$W/serve.err" &
    SERVE_PID=$!
    for _ in $(seq 1 300); do
        API=$(sed -n 's/^jitgate API listening on //p' "$W/serve.out")
        if [ -n "$API" ] && grep -q '^jitgate HTTPS gateway listening on ' "$W/serve.out"; then return; fi
        kill -0 "$SERVE_PID" 2>/dev/null || { cat "$W/serve.err" >&2; exit 1; }
        sleep 0.1
    done
    echo "jitgate serve did not start:" >&2
    cat "$W/serve.err" >&2
    exit 1
}
stop_serve() {
    kill -TERM "$SERVE_PID"
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=
}

# A first start creates the schema (migrations run at start); the sessions go in while stopped.
start_serve
stop_serve
DEEP_ID=$(python3 - "$W/data/jitgate.db" "$N" "$TARGETS" <<'PY'
import json, random, sqlite3, sys, time
db, n, ntargets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(20261201)
alphabet = "abcdefghijklmnopqrstuvwxyz234567"
def ident(prefix):
    return prefix + "".join(rng.choice(alphabet) for _ in range(16))
users = ["tech%02d" % i for i in range(1, 31)]
ssh_targets = ["srv-%02d" % i for i in range(1, ntargets + 1)]
ssh_tasks = ["reset-credential", "endpoint-remediation", "patch-agent", "collect-logs"]
causes = (["client"] * 50 + ["expired"] * 18 + ["completed"] * 10 + ["killed"] * 8
          + ["revoked"] * 6 + ["ticket"] * 5 + ["target", "recording", "error"])
now = int(time.time())
rows = []
for i in range(n):
    user = rng.choice(users)
    https = rng.random() < 0.15
    target = "idp-admin" if https else rng.choice(ssh_targets)
    task = "unlock-account" if https else rng.choice(ssh_tasks)
    started = now - rng.randrange(90 * 86400)
    cause = rng.choice(causes)
    ended = started + rng.randrange(30, 3600)
    bg = rng.random() < 0.02
    vendor = "acme" if int(user[4:]) > 26 else None
    sid = ident("ses_")
    rec = {
        "id": sid, "protocol": "https" if https else "ssh", "user": user, "vendor": vendor,
        "grant": ident("gr_"), "request": ident("req_"),
        "kind": "break-glass" if bg else "normal", "ticket": "INC-%d" % rng.randrange(1, 5000),
        "task": task, "target": target, "principal": None if https else "helpdesk",
        "approvers": [] if bg else ["bob"], "source": "10.0.%d.%d" % (rng.randrange(256), rng.randrange(1, 255)),
        "started_at": started, "expires_at": started + 3600, "ended_at": ended,
        "end_cause": cause, "end_reason": "%s (benchmark)" % cause, "kill_latency_ms": 4 if cause == "killed" else None,
        "dir": "recordings/%s" % sid,
        "files": [{"name": "0.cast" if not https else "http.jsonl", "sha256": "0" * 64, "bytes": rng.randrange(1, 1 << 20)}],
        "bytes_in": rng.randrange(1 << 20), "bytes_out": rng.randrange(1 << 24),
    }
    rows.append((sid, user, rec["grant"], rec["ticket"], started, ended, target, task,
                 rec["protocol"], cause, int(bg), vendor, json.dumps(rec)))
c = sqlite3.connect(db)
c.executemany(
    "INSERT INTO sessions (id, user, grant_id, ticket, started_at, ended_at, target, task, protocol,"
    " end_cause, break_glass, vendor, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
c.commit()
# The last session of page 100 (50 a page), in the index's order.
rows.sort(key=lambda r: (r[4], r[0]), reverse=True)
print(rows[min(len(rows), 100 * 50) - 1][0])
PY
)
start_serve
CA=$W/certs/ca.pem

# One curl for all calls of a query: the connection is reused, and each call prints its status,
# time before sending and time to the first byte.
measure() { # $1 label, $2 path, $3... extra curl arguments
    local label=$1 path=$2
    shift 2
    local args=()
    for _ in $(seq 1 "$CALLS"); do args+=(-o /dev/null "$API$path"); done
    curl -s --http1.1 --cacert "$CA" "$@" -w '%{http_code} %{time_pretransfer} %{time_starttransfer}\n' \
        "${args[@]}" | python3 -c '
import sys
label, goal = sys.argv[1], float(sys.argv[2])
ms, bad = [], []
for line in sys.stdin:
    code, pre, start = line.split()
    if code != "200":
        bad.append(code)
    ms.append((float(start) - float(pre)) * 1000)
if bad:
    sys.exit("%s: %d calls answered %s" % (label, len(bad), sorted(set(bad))))
ms.sort()
med = ms[len(ms) // 2] if len(ms) % 2 else (ms[len(ms) // 2 - 1] + ms[len(ms) // 2]) / 2
p99 = ms[min(len(ms) - 1, -(-len(ms) * 99 // 100) - 1)]
print("%-44s median %7.2f ms   p99 %7.2f ms   p99 < %g ms: %s"
      % (label, med, p99, goal, "yes" if p99 < goal else "NO"))
' "$label" "$GOAL_MS"
}

FILTER_TARGET=srv-07
echo "jitgate session index: $N ended sessions over 90 days, $CALLS calls per query ($(nproc) cores)"
AUTH=(-H "Authorization: Bearer $ADMIN_KEY")
measure "GET /api/v1/sessions?limit=50" "/api/v1/sessions?limit=50" "${AUTH[@]}"
measure "  ?target=$FILTER_TARGET&end_cause=killed&limit=50" \
    "/api/v1/sessions?target=$FILTER_TARGET&end_cause=killed&limit=50" "${AUTH[@]}"
measure "  ?before=<last of page 100>&limit=50" "/api/v1/sessions?before=$DEEP_ID&limit=50" "${AUTH[@]}"

# The console's pages, signed in as admin through a one-time link.
status=$(curl -s --http1.1 --cacert "$CA" -o /dev/null -w '%{http_code}' "$API/sessions")
if [ "$status" = 404 ]; then
    echo "console /sessions: not built yet"
else
    link=$(curl -s --http1.1 --cacert "$CA" "${AUTH[@]}" -H 'Content-Type: application/json' \
        --data '{"user":"admin"}' "$API/api/v1/auth/links")
    token=$(printf %s "$link" | python3 -c 'import json, sys, urllib.parse as u
q = u.parse_qs(u.urlparse(json.load(sys.stdin)["url"]).query)
print(q["token"][0])')
    cookie=$(curl -s --http1.1 --cacert "$CA" -o /dev/null -D - -X POST -H "Origin: $API" \
        --data-urlencode "token=$token" "$API/auth/link" \
        | sed -n 's/^[Ss]et-[Cc]ookie: \(__Host-jitgate-console=[^;]*\).*/\1/p' | tr -d '\r')
    if [ -z "$cookie" ]; then
        echo "console /sessions: the sign-in link gave no console cookie" >&2
        exit 1
    fi
    COOKIE=(-H "Cookie: $cookie")
    measure "console GET /sessions" "/sessions" "${COOKIE[@]}"
    measure "  /sessions?target=$FILTER_TARGET&end_cause=killed" \
        "/sessions?target=$FILTER_TARGET&end_cause=killed" "${COOKIE[@]}"
fi
stop_serve
