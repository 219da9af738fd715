#!/usr/bin/env bash
# Cluster benchmark: two gateway nodes on one PostgreSQL behind HAProxy (round-robin,
# send-proxy-v2), BENCH_SESSIONS (default 200) live SSH sessions on each, one ticket close
# through node A; prints the p50/p99/max from the close to each session's cut, per node (each
# session's kill latency: node B's includes the notification from A). Not a timed test.
#   bash bench/cluster.sh        (as root; installs postgresql, haproxy, openssh-server, sshpass)
# BENCH_FAVOUR_NODES=1 runs the technicians' ssh clients and the target's sshd at nice 19:
# in a deployment they are other machines, here they share the two cores with the nodes, and
# 400 clients waking up to their cut compete with the cuts still to come. BENCH_JSON=FILE
# writes the figures there as well (default: bench/results/cluster.json). BENCH_LOGS=DIR keeps
# the nodes' logs, HAProxy's and PostgreSQL's there (the work directory is removed at exit).
# BENCH_PIN=1 runs both nodes on CPU 0 and PostgreSQL, HAProxy, sshd and the clients on CPU 1
# (taskset), as when those are other machines: the nodes' cuts then wait for no one else.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_SESSIONS:-200}
FAVOUR=${BENCH_FAVOUR_NODES:-0}
JSON_OUT=${BENCH_JSON:-bench/results/cluster.json}
PIN=${BENCH_PIN:-0}
PEER=() NODE=() OTHERS=()
if [ "$PIN" = 1 ]; then NODE=(taskset -c 0) OTHERS=(taskset -c 1) PEER=(taskset -c 1); fi
if [ "$FAVOUR" = 1 ]; then PEER+=(nice -n 19); fi

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v sshpass >/dev/null || need+=(sshpass)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
ulimit -n 65536 2>/dev/null || true

if [ -z "${BENCH_BINARY:-}" ]; then cargo build --profile dist --locked --quiet; fi
J=${BENCH_BINARY:-$PWD/target/dist/jitgate}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
W=$(mktemp -d /tmp/jitgate-bench-cluster.XXXXXX)
chmod 755 "$W"
PIDS=()   # sshd, PostgreSQL, the nodes, HAProxy
IDLE=()   # the sessions' clients
cleanup() {
    # Stop only what this script started, by process id, and only those still running.
    local running
    running=" $(jobs -pr | tr '\n' ' ') "
    for p in "${IDLE[@]}" "${PIDS[@]}"; do
        if [[ $running == *" $p "* ]]; then kill "$p" 2>/dev/null || true; fi
    done
    if [ -n "${PG_PID:-}" ]; then kill -INT "$PG_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    if [ -n "${BENCH_LOGS:-}" ]; then
        mkdir -p "$BENCH_LOGS"
        cp "$W"/*.out "$W"/*.err "$W/haproxy.log" "$W/pg/log" "$BENCH_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { grep -q "^ *[0-9]*: 0100007F:$(printf %04X "$1") 00000000:0000 0A" /proc/net/tcp; }
ACCOUNT=jitgate-bench
id "$ACCOUNT" >/dev/null 2>&1 || { useradd -m -s /bin/bash "$ACCOUNT"; usermod -p '*' "$ACCOUNT"; }
mkdir -p /run/sshd "$W/principals" "$W/recordings"
echo "$ACCOUNT" > "$W/principals/$ACCOUNT"
ssh-keygen -q -t ed25519 -N '' -f "$W/hostkey"

# PostgreSQL: a cluster of its own, as the unprivileged postgres user, on a free port.
PG_PORT=$(free_port)
PG_PASSWORD=jitgate-bench-db-password-$RANDOM$RANDOM
mkdir -p "$W/pg"
echo "$PG_PASSWORD" > "$W/pg/pwfile"
chown -R postgres:postgres "$W/pg"
setpriv --reuid=postgres --regid=postgres --init-groups --reset-env "$PGBIN/initdb" -D "$W/pg/data" \
    -U jitgate -A scram-sha-256 --pwfile="$W/pg/pwfile" --no-sync -E UTF8 --locale=C >/dev/null
"${OTHERS[@]}" setpriv --reuid=postgres --regid=postgres --init-groups --reset-env "$PGBIN/postgres" -D "$W/pg/data" \
    -k "$W/pg" -p "$PG_PORT" -c listen_addresses=127.0.0.1 -c max_connections=200 \
    > "$W/pg/log" 2>&1 & PG_PID=$!
for _ in $(seq 100); do "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.1; done
export JITGATE_BENCH_DB_PASSWORD=$PG_PASSWORD

API_KEY_A=jgk_bench_alice_$RANDOM$RANDOM
API_KEY_B=jgk_bench_bob_$RANDOM$RANDOM
SSHD_PORT=$(free_port)
write_config() { # $1 node name
    cat > "$W/$1.toml" <<CFG
[gateway]
public_name = "localhost"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
https_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "data-$1"
certs_dir = "certs"
recordings_dir = "recordings"
admission_failures_per_minute = 1000
proxy_protocol_from = ["127.0.0.2/32"]
[store]
url = "postgres://jitgate@127.0.0.1:$PG_PORT/postgres"
password = "env:JITGATE_BENCH_DB_PASSWORD"
[cluster]
node = "$1"
[[users]]
name = "alice"
roles = ["technician"]
api_key_sha256 = "$(printf %s "$API_KEY_A" | sha256sum | cut -c1-64)"
[[users]]
name = "bob"
roles = ["approver", "admin"]
api_key_sha256 = "$(printf %s "$API_KEY_B" | sha256sum | cut -c1-64)"
[[targets]]
name = "bench"
kind = "ssh"
address = "127.0.0.1:$SSHD_PORT"
host_key = "$(cut -d' ' -f1,2 "$W/hostkey.pub")"
[[tasks]]
name = "bench"
targets = ["bench"]
principal = "$ACCOUNT"
allow = ["pty", "shell", "exec"]
max_ttl = "2h"
CFG
}
write_config gw-a
write_config gw-b
"$J" --config "$W/gw-a.toml" init >/dev/null

cat > "$W/sshd_config" <<CFG
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $W/hostkey
PidFile none
TrustedUserCAKeys $W/certs/ssh_user_ca.pub
AuthorizedPrincipalsFile $W/principals/%u
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 1000
MaxSessions 1000
LogLevel ERROR
CFG
"${PEER[@]}" /usr/sbin/sshd -D -f "$W/sshd_config" -E "$W/sshd.log" & PIDS+=($!)
for _ in $(seq 100); do listening "$SSHD_PORT" && break; sleep 0.05; done

declare -A API SSH PID
for node in gw-a gw-b; do
    out="$W/$node.out"
    "${NODE[@]}" "$J" --config "$W/$node.toml" serve > "$out" 2> "$out.err" & PID[$node]=$!
    PIDS+=("${PID[$node]}")
    for _ in $(seq 200); do grep -q "SSH gateway listening" "$out" 2>/dev/null && break; sleep 0.1; done
    API[$node]=$(sed -n 's/^jitgate API listening on //p' "$out")
    SSH[$node]=$(sed -n 's/^jitgate SSH gateway listening on //p' "$out")
    [ -n "${SSH[$node]}" ] || { echo "node $node did not start:"; cat "$out.err"; exit 1; }
done

HP_PORT=$(free_port)
cat > "$W/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend ssh
    bind 127.0.0.1:$HP_PORT
    default_backend nodes
backend nodes
    balance roundrobin
    server gw-a ${SSH[gw-a]} send-proxy-v2 source 127.0.0.2
    server gw-b ${SSH[gw-b]} send-proxy-v2 source 127.0.0.2
CFG
"${OTHERS[@]}" /usr/sbin/haproxy -db -f "$W/haproxy.cfg" > "$W/haproxy.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do listening "$HP_PORT" && break; sleep 0.05; done

export JITGATE_URL=${API[gw-a]} JITGATE_CA=$W/certs/ca.pem
cli() { local key=$1; shift; JITGATE_API_KEY=$key "$J" --config "$W/gw-a.toml" "$@"; }
cli "$API_KEY_B" ticket open BENCH-1 --assignee alice >/dev/null
req=$(cli "$API_KEY_A" --json request --task bench --target bench --ticket BENCH-1 --ttl 2h \
    --reason "benchmark run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
cli "$API_KEY_B" approve "$req" >/dev/null
TOKEN=$(cli "$API_KEY_A" --json token "$req" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

SSHO=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
live_on() { # $1 node: live sessions it holds, as the database shows them
    cli "$API_KEY_B" --json sessions --live --limit 5000 | python3 -c "import json,sys; print(sum(1 for s in json.load(sys.stdin) if s.get('node') == '$1'))"
}
PRIORITY="everything at default priority"
if [ "$FAVOUR" = 1 ]; then PRIORITY="ssh clients and sshd at nice 19"; fi
if [ "$PIN" = 1 ]; then PRIORITY="$PRIORITY; nodes on CPU 0, PostgreSQL, HAProxy, sshd and clients on CPU 1"; fi
BUILD=dist
if [ -n "${BENCH_BINARY:-}" ]; then BUILD=$BENCH_BINARY; fi
echo "jitgate cluster benchmark: 2 nodes on PostgreSQL behind HAProxy, $N sessions on each (2 cores, loopback; $BUILD; $PRIORITY)"
# From 50 technicians' addresses (the gateway caps unauthenticated connections per source).
for i in $(seq $((2 * N))); do
    "${PEER[@]}" sshpass -p "$TOKEN" ssh "${SSHO[@]}" -o PreferredAuthentications=password -tt -p "$HP_PORT" \
        -b "127.0.1.$(( i % 50 + 1 ))" \
        alice@127.0.0.1 "exec -a jitgate-bench-idle sleep 3600" < /dev/null > /dev/null 2>&1 &
    IDLE+=($!)
    # In steps of 20, each once the nodes have taken most of the last: two cores opening
    # hundreds of sessions at once (two SSH handshakes, a certificate and a fork each) fall
    # behind, and a login that waits too long for the database is refused (fail closed).
    if (( i % 20 == 0 )); then
        for _ in $(seq 60); do
            (( $(live_on gw-a) + $(live_on gw-b) >= i - 5 )) && break
            sleep 0.25
        done
    fi
done
for _ in $(seq 240); do
    a=$(live_on gw-a); b=$(live_on gw-b)
    [ "$a" -ge "$N" ] && [ "$b" -ge "$N" ] && break
    sleep 0.5
done
echo "live sessions: gw-a $a, gw-b $b"
sleep 2

# One ticket close, through node A (BENCH_PERF=FILE: the whole machine's profile over it).
if [ -n "${BENCH_PERF:-}" ]; then
    perf record -a -g -F 499 -o "$BENCH_PERF" -- sleep 3 > /dev/null 2>&1 & PERF_PID=$!
    sleep 0.5
fi
cli "$API_KEY_B" ticket close BENCH-1 >/dev/null
# The nodes time each cut themselves; asking them how far they are (a CLI, a TLS handshake
# and a query per look) would take CPU from the cuts it measures, so the first look waits.
sleep 3
for _ in $(seq 30); do
    [ "$(live_on gw-a)" -eq 0 ] && [ "$(live_on gw-b)" -eq 0 ] && break
    sleep 1
done
sleep 2
if [ -n "${PERF_PID:-}" ]; then wait "$PERF_PID" || true; fi
"$J" --config "$W/gw-a.toml" audit export -o "$W/chain.jsonl" >/dev/null
mkdir -p "$(dirname "$JSON_OUT")"
python3 - "$W/chain.jsonl" "$a" "$b" "$JSON_OUT" "$N" "$PRIORITY" <<'PY'
import json, sys
path, live = sys.argv[1], {"gw-a": int(sys.argv[2]), "gw-b": int(sys.argv[3])}
out, n, priority = sys.argv[4], int(sys.argv[5]), sys.argv[6]
ended = [json.loads(l) for l in open(path)]
ended = [r for r in ended if r.get("event") == "session.ended" and r.get("cause") == "ticket"
         and r.get("kill_latency_ms") is not None]
def pct(lat, q):
    return lat[min(len(lat) - 1, max(0, int(round(q * len(lat))) - 1))]
p99, figures = {}, {"sessions_per_node": n, "priority": priority, "nodes": {}}
for node in ("gw-a", "gw-b"):
    lat = sorted(r["kill_latency_ms"] for r in ended if r.get("node") == node)
    if not lat:
        print(f"{node}: no session was cut"); continue
    p99[node] = pct(lat, 0.99)
    figures["nodes"][node] = {"live": live[node], "cut": len(lat), "min_ms": lat[0],
                              "p50_ms": pct(lat, 0.5), "p99_ms": p99[node], "max_ms": lat[-1]}
    goal = "  (goal p99 <= 100 ms)" if node == "gw-b" else ""
    print(f"ticket close through gw-a cut {len(lat)} of {live[node]} sessions on {node}: "
          f"min {lat[0]} ms, p50 {pct(lat, 0.5)} ms, p99 {p99[node]} ms, max {lat[-1]} ms{goal}")
if len(p99) == 2 and p99["gw-a"] > 0:
    figures["p99_ratio_b_to_a"] = round(p99["gw-b"] / p99["gw-a"], 2)
    print(f"p99 gw-b / gw-a: {p99['gw-b'] / p99['gw-a']:.2f}  (goal <= 1.5)")
json.dump(figures, open(out, "w"), indent=2)
print(f"figures written to {out}")
PY
