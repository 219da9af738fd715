#!/usr/bin/env bash
# SSH gateway benchmark: prints figures measured in one run, as ratios against direct OpenSSH.
#   bash bench/ssh.sh            (as root; installs openssh-server/sshpass when missing)
# Env: BENCH_MB (bulk size, default 256), BENCH_SESSIONS (idle/kill sessions, default 200),
#      BENCH_SETUP_RUNS (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${BENCH_MB:-256}
N=${BENCH_SESSIONS:-200}
RUNS=${BENCH_SETUP_RUNS:-30}

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v sshpass >/dev/null || need+=(sshpass)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
ulimit -n 65536 2>/dev/null || true

cargo build --profile dist --locked --quiet
J=$PWD/target/dist/jitgate
W=$(mktemp -d /tmp/jitgate-bench.XXXXXX)
# sshd reads the principals file as the login user.
chmod 755 "$W"
PIDS=()   # sshds and gateways
IDLE=()   # the idle sessions' clients (sshpass; its ssh ends with it)
cleanup() {
    # Stop only what this script started, by process id, and only those still running (`jobs
    # -pr`): the pid of a client that was cut and exited may belong to someone else by now.
    local running
    running=" $(jobs -pr | tr '\n' ' ') "
    for p in "${IDLE[@]}" "${PIDS[@]}"; do
        if [[ $running == *" $p "* ]]; then kill "$p" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ACCOUNT=jitgate-bench
id "$ACCOUNT" >/dev/null 2>&1 || { useradd -m -s /bin/bash "$ACCOUNT"; usermod -p '*' "$ACCOUNT"; }
mkdir -p /run/sshd "$W/principals"
echo "$ACCOUNT" > "$W/principals/$ACCOUNT"
ssh-keygen -q -t ed25519 -N '' -f "$W/hostkey"

API_KEY_A=jgk_bench_alice_$RANDOM$RANDOM
API_KEY_B=jgk_bench_bob_$RANDOM$RANDOM
SSHD_PORT=$(free_port)
BASTION_PORT=$(free_port)
write_config() { # $1 = file, $2 = record_terminal
    cat > "$1" <<CFG
[gateway]
public_name = "localhost"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
https_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "data-$2"
certs_dir = "certs"
recordings_dir = "recordings-$2"
record_terminal = $2
admission_failures_per_minute = 1000
[store]
url = "sqlite://data-$2/j.db"
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
allow = ["pty", "shell", "exec", "sftp"]
max_ttl = "2h"
CFG
}
write_config "$W/on.toml" true
write_config "$W/off.toml" false
"$J" --config "$W/on.toml" init >/dev/null

sshd_conf() { # $1 port, $2 LogLevel (default ERROR)
    cat <<CFG
Port $1
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
LogLevel ${2:-ERROR}
CFG
}
listening() { grep -q "^ *[0-9]*: 0100007F:$(printf %04X "$1") 00000000:0000 0A" /proc/net/tcp; }
start_target() { # $1 LogLevel: (re)start the target sshd on SSHD_PORT, wait until it listens
    if [ -n "${TARGET_PID:-}" ]; then
        kill "$TARGET_PID"
        wait "$TARGET_PID" 2>/dev/null || true
    fi
    sshd_conf "$SSHD_PORT" "$1" > "$W/sshd_config"
    /usr/sbin/sshd -D -f "$W/sshd_config" -E "$W/sshd.log" & TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    for _ in $(seq 100); do listening "$SSHD_PORT" && break; sleep 0.05; done
}
# sshd names the key exchange from LogLevel DEBUG1 on: the target logs at that level until the
# key exchanges are probed (below), then starts again at ERROR for the measurements.
start_target DEBUG1
sshd_conf "$BASTION_PORT" > "$W/bastion_config"
/usr/sbin/sshd -D -f "$W/bastion_config" -E "$W/bastion.log" & PIDS+=($!)

# A client certificate for direct and ProxyJump runs, signed by the same user CA.
ssh-keygen -q -t ed25519 -N '' -f "$W/client"
ssh-keygen -q -s "$W/certs/ssh_user_ca" -I bench-direct -n "$ACCOUNT" -V -5m:+2h "$W/client.pub"
SSHO=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
DIRECT=(ssh "${SSHO[@]}" -o BatchMode=yes -i "$W/client" -p "$SSHD_PORT" "$ACCOUNT@127.0.0.1")
JUMP=(ssh "${SSHO[@]}" -o BatchMode=yes -i "$W/client" -o "ProxyCommand=ssh ${SSHO[*]} -i $W/client -p $BASTION_PORT -W %h:%p $ACCOUNT@127.0.0.1" -p "$SSHD_PORT" "$ACCOUNT@127.0.0.1")
sleep 0.5

start_gateway() { # $1 config, $2 ticket suffix -> sets GW_PID API SSH_PORT TOKEN
    local out="$W/$(basename "$1").out"
    "$J" --config "$1" serve > "$out" 2> "$out.err" & GW_PID=$!
    PIDS+=("$GW_PID")
    for _ in $(seq 100); do grep -q "SSH gateway listening" "$out" 2>/dev/null && break; sleep 0.1; done
    API=$(sed -n 's/^jitgate API listening on //p' "$out")
    SSH_PORT=$(sed -n 's/^jitgate SSH gateway listening on .*://p' "$out")
    grant_token "$1" "BENCH-$2"
}
grant_token() { # $1 config, $2 ticket -> sets TOKEN (a 2 h grant on a new open ticket)
    export JITGATE_URL=$API JITGATE_CA=$W/certs/ca.pem
    JITGATE_API_KEY=$API_KEY_B "$J" --config "$1" ticket open "$2" --assignee alice >/dev/null
    local req
    req=$(JITGATE_API_KEY=$API_KEY_A "$J" --config "$1" --json request --task bench --target bench \
        --ticket "$2" --ttl 2h --reason "benchmark run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    JITGATE_API_KEY=$API_KEY_B "$J" --config "$1" approve "$req" >/dev/null
    TOKEN=$(JITGATE_API_KEY=$API_KEY_A "$J" --config "$1" --json token "$req" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
}
gw_ssh() { sshpass -p "$TOKEN" ssh "${SSHO[@]}" -o PreferredAuthentications=password -p "$SSH_PORT" alice@127.0.0.1 "$@"; }

secs() { python3 -c 'import sys,time,subprocess; t=time.perf_counter(); subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); print("%.4f" % (time.perf_counter()-t))' "$@"; }
bulk() { secs "$@" "head -c ${MB}M /dev/zero"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { python3 -c "print('%.2f' % ($1/$2))"; }

echo "jitgate SSH benchmark: $MB MB bulk, $RUNS set-ups, $N idle sessions (2 cores, loopback)"
start_gateway "$W/on.toml" on
GW_ON_PID=$GW_PID; SSH_ON=$SSH_PORT; TOKEN_ON=$TOKEN; API_ON=$API
start_gateway "$W/off.toml" off
SSH_OFF=$SSH_PORT; TOKEN_OFF=$TOKEN

# Which key exchange each path negotiates: one `ssh -v` per path for the client's side, and the
# target's log for the gateway's own leg to it. The figures below are measured with these.
kex_in() { # $1 an OpenSSH debug log, $2 lines of it to skip: the first key exchange it names
    awk -v skip="${2:-0}" 'NR > skip && /kex: algorithm: / && k == "" {
        k = $0; sub(/.*kex: algorithm: /, "", k); sub(/ .*/, "", k) }
        END { print (k == "" ? "unknown" : k) }' "$1"
}
"${DIRECT[0]}" -v "${DIRECT[@]:1}" true 2> "$W/kex.direct"
KEX_DIRECT=$(kex_in "$W/kex.direct")
from=$(wc -l < "$W/sshd.log")
sshpass -p "$TOKEN_ON" ssh -v "${SSHO[@]}" -o PreferredAuthentications=password -p "$SSH_ON" alice@127.0.0.1 true 2> "$W/kex.gw"
KEX_GW_CLIENT=$(kex_in "$W/kex.gw")
KEX_GW_TARGET=$(kex_in "$W/sshd.log" "$from")
echo "key exchange: direct $KEX_DIRECT; gateway: client leg $KEX_GW_CLIENT, target leg $KEX_GW_TARGET"
start_target ERROR

# Bulk throughput: best of 3 each, interleaved so load affects all alike.
declare -A best
for _ in 1 2 3; do
    for path in direct jump on off; do
        case $path in
            direct) t=$(bulk "${DIRECT[@]}") ;;
            jump) t=$(bulk "${JUMP[@]}") ;;
            on) SSH_PORT=$SSH_ON TOKEN=$TOKEN_ON; t=$(secs sshpass -p "$TOKEN" ssh "${SSHO[@]}" -o PreferredAuthentications=password -p "$SSH_PORT" alice@127.0.0.1 "head -c ${MB}M /dev/zero") ;;
            off) SSH_PORT=$SSH_OFF TOKEN=$TOKEN_OFF; t=$(secs sshpass -p "$TOKEN" ssh "${SSHO[@]}" -o PreferredAuthentications=password -p "$SSH_PORT" alice@127.0.0.1 "head -c ${MB}M /dev/zero") ;;
        esac
        cur=${best[$path]:-999}
        best[$path]=$(python3 -c "print(min($cur, $t))")
    done
done
printf 'bulk %s MB: direct %.2f s, gateway (recording on) %.2f s, gateway (recording off) %.2f s, ProxyJump %.2f s\n' \
    "$MB" "${best[direct]}" "${best[on]}" "${best[off]}" "${best[jump]}"
echo "throughput gateway/direct, recording on:  $(ratio "${best[direct]}" "${best[on]}")  (goal >= 0.9)"
echo "throughput gateway/direct, recording off: $(ratio "${best[direct]}" "${best[off]}")"
echo "throughput ProxyJump/direct:              $(ratio "${best[direct]}" "${best[jump]}")"

# Session set-up: `ssh ... true`, median of RUNS, interleaved.
SSH_PORT=$SSH_ON TOKEN=$TOKEN_ON
: > "$W/setup.direct"; : > "$W/setup.gw"
for _ in $(seq "$RUNS"); do
    secs "${DIRECT[@]}" true >> "$W/setup.direct"
    secs sshpass -p "$TOKEN" ssh "${SSHO[@]}" -o PreferredAuthentications=password -p "$SSH_PORT" alice@127.0.0.1 true >> "$W/setup.gw"
done
sd=$(median < "$W/setup.direct"); sg=$(median < "$W/setup.gw")
echo "set-up median: direct ${sd} s (kex $KEX_DIRECT), gateway ${sg} s (kex $KEX_GW_CLIENT to the gateway, $KEX_GW_TARGET to the target); gateway/direct $(ratio "$sg" "$sd")  (goal <= 1.1)"

# Memory per idle interactive session, then one ticket close cutting all of them.
export JITGATE_URL=$API_ON
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
live_count() {
    JITGATE_API_KEY=$API_KEY_B "$J" --config "$W/on.toml" --json sessions --live | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}
open_idle_sessions() { # $1 token: N idle interactive sessions, waits until they are live
    for i in $(seq "$N"); do
        sshpass -p "$1" ssh "${SSHO[@]}" -o PreferredAuthentications=password -tt -p "$SSH_PORT" alice@127.0.0.1 "exec -a jitgate-bench-idle sleep 3600" < /dev/null > /dev/null 2>&1 &
        IDLE+=($!)
        if (( i % 20 == 0 )); then sleep 0.5; fi
    done
    for _ in $(seq 120); do
        live=$(live_count)
        [ "$live" -ge "$N" ] && break
        sleep 0.5
    done
}
# The peers of the sessions: ssh clients (and their sshpass), sshd's per-connection processes,
# the idle shells.
peers() { pgrep -f 'jitgate-bench-idle|sshd-session|sshd-auth|sshd: |^sshpass ' | grep -v "^$$\$" || true; }
cut_round() { # $1 ticket, $2 label, $3 "apart" to give the gateway cpu 0 and the peers cpu 1
    local from
    from=$(wc -l < "$W/data-true/audit.jsonl")
    if [ "${3:-}" = apart ]; then
        for p in $(peers); do taskset -a -p -c 1 "$p" >/dev/null 2>&1 || true; done
        taskset -a -p -c 0 "$GW_ON_PID" >/dev/null
    fi
    JITGATE_API_KEY=$API_KEY_B "$J" --config "$W/on.toml" ticket close "$1" >/dev/null
    for _ in $(seq 100); do
        [ "$(live_count)" -eq 0 ] && break
        sleep 0.2
    done
    if [ "${3:-}" = apart ]; then
        taskset -a -p -c 0-1 "$GW_ON_PID" >/dev/null
    fi
    # Sessions leave the live list when cut; their end records follow. Wait for all of them
    # (at most 10 s), so that the figures cover every session that was live.
    for _ in $(seq 50); do
        [ "$(tail -n +"$((from + 1))" "$W/data-true/audit.jsonl" | grep -c '"event":"session.ended"')" -ge "$live" ] && break
        sleep 0.2
    done
    python3 - "$W/data-true/audit.jsonl" "$from" "$2" "${4:-}" "$live" <<'PY'
import json, sys
path, start, label, goal, live = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
records = [json.loads(l) for l in open(path).readlines()[start:]]
lat = sorted(r["kill_latency_ms"] for r in records
             if r.get("event") == "session.ended" and r.get("cause") == "ticket" and r.get("kill_latency_ms") is not None)
if not lat:
    print(f"ticket close ({label}): no sessions were cut"); sys.exit(0)
p99 = lat[min(len(lat) - 1, int(round(0.99 * len(lat))) - 1)]
print(f"ticket close cut {len(lat)} of {live} live sessions ({label}): p50 {lat[len(lat)//2]} ms, p99 {p99} ms, max {lat[-1]} ms{goal}")
PY
}

sleep 1
before=$(rss "$GW_ON_PID")
open_idle_sessions "$TOKEN"
sleep 2
after=$(rss "$GW_ON_PID")
if [ "$live" -gt 0 ]; then
    echo "idle sessions live: $live; gateway RSS $before KiB -> $after KiB: $(( (after - before) / live )) KiB per idle session  (goal <= 96 KiB)"
else
    echo "idle sessions: none became live; see $W/on.toml.out.err"
fi
# The cut the goal is about: the gateway on one core, the 200 clients and sshd sessions on the
# other, as when clients and targets are other machines (they still run and exit as it cuts).
cut_round BENCH-on "gateway on cpu 0, clients and sshd on cpu 1" apart "  (goal p99 <= 100 ms)"

# The same cut with everything sharing both cores at default priority: hundreds of exiting
# processes, each in its own scheduling group, compete with the gateway for the CPU.
API=$API_ON grant_token "$W/on.toml" BENCH-shared
sleep 1
open_idle_sessions "$TOKEN"
sleep 2
cut_round BENCH-shared "gateway, clients and sshd sharing both cores"

# The same shared cut with the gateway's threads at the lowest real-time priority (as
# `chrt -r 1` or systemd's CPUSchedulingPolicy=rr give it): how a deployment keeps cuts prompt
# on a host shared with busy processes.
if chrt -a -r -p 1 "$GW_ON_PID" >/dev/null 2>&1; then
    API=$API_ON grant_token "$W/on.toml" BENCH-rr
    sleep 1
    open_idle_sessions "$TOKEN"
    sleep 2
    cut_round BENCH-rr "sharing both cores, gateway at real-time priority rr 1"
else
    echo "ticket close cut (gateway at real-time priority): skipped, chrt could not set SCHED_RR"
fi
