#!/usr/bin/env bash
# SSH gateway benchmark: prints figures measured in one run, as ratios against direct OpenSSH.
#   bash bench/ssh.sh            (as root; installs openssh-server/sshpass when missing)
# Every comparison is measured with the same cipher (aes128-gcm@openssh.com) and the same key
# exchange (the one the gateway's own leg to the target negotiates) on both paths, in paired
# rounds whose ratios are given as medians; the default-settings figures (what stock `ssh`
# picks: chacha20-poly1305 and its own key exchange) are printed beside them.
# Env: BENCH_MB (bulk size, default 256), BENCH_ROUNDS (paired bulk rounds, default 5),
#      BENCH_SESSIONS (idle sessions for memory and the shared cuts, default 200),
#      BENCH_CUT_SESSIONS (sessions of the large cut, default 1000), BENCH_SETUP_RUNS
#      (default 30), BENCH_CUT_ROUNDS (cuts of BENCH_SESSIONS sharing both cores, whose
#      median p99 is the figure; default 3), BENCH_JSON (the figures as JSON, default
#      bench/results/ssh.json), BENCH_BINARY (a jitgate binary to measure instead of building `dist`), BENCH_PERF=DIR
#      (the gateway's `perf` profiles of one bulk run and of the large cut, for `perf report`),
#      BENCH_CALLGRIND=DIR (also count the instructions a gateway with recording on executes per
#      MB of bulk, under callgrind; DIR keeps the profiles; BENCH_CALLGRIND_MB, default 32).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${BENCH_MB:-256}
ROUNDS=${BENCH_ROUNDS:-5}
N=${BENCH_SESSIONS:-200}
BIG=${BENCH_CUT_SESSIONS:-1000}
RUNS=${BENCH_SETUP_RUNS:-30}
CUT_ROUNDS=${BENCH_CUT_ROUNDS:-3}
JSON_OUT=${BENCH_JSON:-bench/results/ssh.json}
CIPHER=aes128-gcm@openssh.com

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v sshpass >/dev/null || need+=(sshpass)
command -v python3 >/dev/null || need+=(python3)
if [ -n "${BENCH_PERF:-}" ]; then command -v perf >/dev/null || need+=(linux-perf); fi
if [ -n "${BENCH_CALLGRIND:-}" ]; then command -v valgrind >/dev/null || need+=(valgrind); fi
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
ulimit -n 65536 2>/dev/null || true

if [ -z "${BENCH_BINARY:-}" ]; then cargo build --profile dist --locked --quiet; fi
J=${BENCH_BINARY:-$PWD/target/dist/jitgate}
BUILD=dist
if [ -n "${BENCH_BINARY:-}" ]; then BUILD=$BENCH_BINARY; fi
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
write_config() { # $1 = file, $2 = record_terminal, $3 = the data folders' suffix (default $2)
    cat > "$1" <<CFG
[gateway]
public_name = "localhost"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
https_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "data-${3:-$2}"
certs_dir = "certs"
recordings_dir = "recordings-${3:-$2}"
record_terminal = $2
admission_failures_per_minute = 1000
[store]
url = "sqlite://data-${3:-$2}/j.db"
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

start_gateway() { # $1 config, $2 ticket suffix, then what to run it under -> sets GW_PID API SSH_PORT TOKEN
    local config=$1 ticket=$2 out="$W/$(basename "$1").out"
    shift 2
    "$@" "$J" --config "$config" serve > "$out" 2> "$out.err" & GW_PID=$!
    PIDS+=("$GW_PID")
    for _ in $(seq 600); do grep -q "SSH gateway listening" "$out" 2>/dev/null && break; sleep 0.1; done
    API=$(sed -n 's/^jitgate API listening on //p' "$out")
    SSH_PORT=$(sed -n 's/^jitgate SSH gateway listening on .*://p' "$out")
    [ -n "$SSH_PORT" ] || { echo "the gateway ($config) did not start:"; cat "$out.err"; exit 1; }
    grant_token "$config" "BENCH-$ticket"
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

secs() { python3 -c 'import sys,time,subprocess; t=time.perf_counter(); subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); print("%.4f" % (time.perf_counter()-t))' "$@"; }
bulk() { secs "$@" "head -c ${MB}M /dev/zero"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { python3 -c "print('%.2f' % ($1/$2))"; }

FIG=$W/figures   # "key value" lines, written to JSON_OUT at the end
fig() { echo "$1 $2" >> "$FIG"; }   # $2 a number, or a name
echo "jitgate SSH benchmark: $MB MB bulk x $ROUNDS paired rounds, $RUNS set-ups, $N idle sessions, a $BIG-session cut (2 cores, loopback; $BUILD)"
start_gateway "$W/on.toml" on
GW_ON_PID=$GW_PID; SSH_ON=$SSH_PORT; TOKEN_ON=$TOKEN; API_ON=$API
start_gateway "$W/off.toml" off
GW_OFF_PID=$GW_PID; SSH_OFF=$SSH_PORT; TOKEN_OFF=$TOKEN

# Which key exchange each path negotiates: one `ssh -v` per path for the client's side, and the
# target's log for the gateway's own leg to it.
kex_in() { # $1 an OpenSSH debug log, $2 lines of it to skip: the first key exchange it names
    awk -v skip="${2:-0}" 'NR > skip && /kex: algorithm: / && k == "" {
        k = $0; sub(/.*kex: algorithm: /, "", k); sub(/ .*/, "", k) }
        END { print (k == "" ? "unknown" : k) }' "$1"
}
cipher_in() { # $1 an OpenSSH debug log: the first cipher it names (client to server)
    awk '/kex: client->server cipher: / && c == "" { c = $0; sub(/.*cipher: /, "", c); sub(/ .*/, "", c) }
        END { print (c == "" ? "unknown" : c) }' "$1"
}
"${DIRECT[0]}" -v "${DIRECT[@]:1}" true 2> "$W/kex.direct"
KEX_DIRECT=$(kex_in "$W/kex.direct"); CIPHER_DIRECT=$(cipher_in "$W/kex.direct")
from=$(wc -l < "$W/sshd.log")
sshpass -p "$TOKEN_ON" ssh -v "${SSHO[@]}" -o PreferredAuthentications=password -p "$SSH_ON" alice@127.0.0.1 true 2> "$W/kex.gw"
KEX_GW_CLIENT=$(kex_in "$W/kex.gw"); CIPHER_GW_CLIENT=$(cipher_in "$W/kex.gw")
KEX_GW_TARGET=$(kex_in "$W/sshd.log" "$from")
CIPHER_GW_TARGET=$(awk -v skip="$from" 'NR > skip && /kex: client->server cipher: / && c == "" {
    c = $0; sub(/.*cipher: /, "", c); sub(/ .*/, "", c) } END { print (c == "" ? "unknown" : c) }' "$W/sshd.log")
# The comparisons use the gateway's own leg's key exchange on every leg.
KEX=$KEX_GW_TARGET
[ "$KEX" = unknown ] && KEX=curve25519-sha256
SAME=(-c "$CIPHER" -o "KexAlgorithms=$KEX")
echo "defaults: direct $KEX_DIRECT + $CIPHER_DIRECT; gateway: client leg $KEX_GW_CLIENT + $CIPHER_GW_CLIENT, target leg $KEX_GW_TARGET + $CIPHER_GW_TARGET"
echo "compared with the same settings on every leg: $KEX + $CIPHER"
fig kex_same "$KEX"; fig cipher_same "$CIPHER"
fig kex_default_direct "$KEX_DIRECT"; fig cipher_default_direct "$CIPHER_DIRECT"
fig kex_default_gateway_client "$KEX_GW_CLIENT"; fig kex_default_gateway_target "$KEX_GW_TARGET"
start_target ERROR

# A technician's ssh through each gateway (sshpass answers the token prompt).
GW_ON=(sshpass -p "$TOKEN_ON" ssh "${SSHO[@]}" -o PreferredAuthentications=password -p "$SSH_ON")
GW_OFF=(sshpass -p "$TOKEN_OFF" ssh "${SSHO[@]}" -o PreferredAuthentications=password -p "$SSH_OFF")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, all threads
TICK=$(getconf CLK_TCK)

# Bulk throughput: ROUNDS paired rounds, every path once per round; each round's ratios are
# taken within it, and the medians of those are the figures (load affects a round's paths alike).
: > "$W/bulk"
cpu_on=0; cpu_off=0
for r in $(seq "$ROUNDS"); do
    line="$r"
    for path in direct direct_default on off jump; do
        case $path in
            direct) t=$(bulk "${DIRECT[0]}" "${SAME[@]}" "${DIRECT[@]:1}") ;;
            direct_default) t=$(bulk "${DIRECT[@]}") ;;
            jump) t=$(bulk "${JUMP[0]}" "${SAME[@]}" -o "ProxyCommand=ssh ${SSHO[*]} ${SAME[*]} -i $W/client -p $BASTION_PORT -W %h:%p $ACCOUNT@127.0.0.1" "${JUMP[@]:1}") ;;
            on) c0=$(cpu_ticks "$GW_ON_PID")
                t=$(bulk "${GW_ON[@]}" "${SAME[@]}" alice@127.0.0.1)
                cpu_on=$(( cpu_on + $(cpu_ticks "$GW_ON_PID") - c0 )) ;;
            off) c0=$(cpu_ticks "$GW_OFF_PID")
                t=$(bulk "${GW_OFF[@]}" "${SAME[@]}" alice@127.0.0.1)
                cpu_off=$(( cpu_off + $(cpu_ticks "$GW_OFF_PID") - c0 )) ;;
        esac
        line="$line $t"
    done
    echo "$line" >> "$W/bulk"
done
if [ -n "${BENCH_PERF:-}" ]; then
    mkdir -p "$BENCH_PERF"
    perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$GW_ON_PID" -o "$BENCH_PERF/bulk.data" > /dev/null 2>&1 & PERF_PID=$!
    sleep 0.5
    bulk "${GW_ON[@]}" "${SAME[@]}" alice@127.0.0.1 > /dev/null
    kill -INT "$PERF_PID"; wait "$PERF_PID" || true
fi
python3 - "$W/bulk" "$MB" "$cpu_on" "$cpu_off" "$TICK" "$ROUNDS" "$FIG" <<'PY'
import statistics as st, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1])]
mb, cpu_on, cpu_off, tick, rounds, fig = (int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                          int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
direct, default, on, off, jump = (list(c) for c in zip(*rows))
med = lambda xs: st.median(xs)
ratio = lambda a, b: med([x / y for x, y in zip(a, b)])   # time b / time a = throughput a / b
gb = mb * rounds / 1024
out = {
    "bulk_mb": mb, "bulk_rounds": rounds,
    "bulk_direct_s": med(direct), "bulk_direct_default_s": med(default),
    "bulk_gateway_on_s": med(on), "bulk_gateway_off_s": med(off), "bulk_proxyjump_s": med(jump),
    "throughput_on_over_direct": ratio(direct, on), "throughput_off_over_direct": ratio(direct, off),
    "throughput_proxyjump_over_direct": ratio(direct, jump),
    "throughput_on_over_direct_default": ratio(default, on),
    "gateway_cpu_s_per_gb_on": cpu_on / tick / gb, "gateway_cpu_s_per_gb_off": cpu_off / tick / gb,
}
print(f"bulk {mb} MB, medians of {rounds} rounds: direct {out['bulk_direct_s']:.2f} s "
      f"(default settings {out['bulk_direct_default_s']:.2f} s), gateway recording on "
      f"{out['bulk_gateway_on_s']:.2f} s, off {out['bulk_gateway_off_s']:.2f} s, ProxyJump {out['bulk_proxyjump_s']:.2f} s")
print(f"throughput gateway/direct, same cipher, recording on:  {out['throughput_on_over_direct']:.2f}  (goal >= 0.95)")
print(f"throughput gateway/direct, same cipher, recording off: {out['throughput_off_over_direct']:.2f}")
print(f"throughput ProxyJump/direct, same cipher:              {out['throughput_proxyjump_over_direct']:.2f}")
print(f"throughput gateway/direct, default settings:           {out['throughput_on_over_direct_default']:.2f}")
print(f"gateway CPU per GB moved: recording on {out['gateway_cpu_s_per_gb_on']:.2f} s, off {out['gateway_cpu_s_per_gb_off']:.2f} s")
with open(fig, "a") as f:
    for k, v in out.items():
        f.write(f"{k} {round(v, 4)}\n")
PY
# The profile beside the figure: the functions that took most of the gateway's CPU in the
# profiled bulk run (self time).
profile_top() { # $1 perf data, $2 what it covers
    echo "profile of the gateway, $2 (perf, self time; perf report -i $1):"
    perf report -i "$1" --no-children --sort dso,symbol --stdio -g none 2>/dev/null \
        | awk '/^ +[0-9.]+%/ && n++ < 8 {printf "    %s %s %s\n", $1, $2, $4}'
}
if [ -n "${BENCH_PERF:-}" ]; then profile_top "$BENCH_PERF/bulk.data" "one bulk run, recording on"; fi

# Instructions per MB of bulk (callgrind): the gateway's user-space work, counted rather than
# timed, so the figure does not move with the machine. A third gateway (recording on, a store of
# its own) runs under valgrind; two bulk runs of different sizes are counted, each from before
# its session's set-up to its end, and their difference over the difference in size is the
# figure, the set-ups cancelling out. The kernel's work (the sockets' copies) is not counted.
if [ -n "${BENCH_CALLGRIND:-}" ]; then
    mkdir -p "$BENCH_CALLGRIND"
    CG_MB=${BENCH_CALLGRIND_MB:-32}
    CG_SMALL=$(( CG_MB / 4 ))
    write_config "$W/cg.toml" true cg
    start_gateway "$W/cg.toml" cg valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$BENCH_CALLGRIND/gateway.out"
    CG_PID=$GW_PID; CG_SSH=$SSH_PORT
    cg_bulk() { # $1 MB, $2 the dump's name: one counted bulk run through the gateway under callgrind
        callgrind_control -z "$CG_PID" > /dev/null 2>&1
        callgrind_control -i on "$CG_PID" > /dev/null 2>&1
        sshpass -p "$TOKEN" ssh "${SSHO[@]}" -o PreferredAuthentications=password -p "$CG_SSH" \
            "${SAME[@]}" alice@127.0.0.1 "head -c ${1}M /dev/zero" > /dev/null
        callgrind_control -i off "$CG_PID" > /dev/null 2>&1
        callgrind_control -d "$2" "$CG_PID" > /dev/null 2>&1
    }
    cg_bulk "$CG_SMALL" small
    cg_bulk "$CG_MB" large
    kill "$CG_PID"; wait "$CG_PID" 2>/dev/null || true
    cg_dump() { grep -l "^desc: Trigger: dump $1$" "$BENCH_CALLGRIND"/gateway.out.* | head -1; }
    # A dump's total, and its parts (self cost) in SHA-256, AES-GCM, and memcpy and memset.
    cg_parts() {
        callgrind_annotate --inclusive=no "$1" 2>/dev/null | python3 -c '
import re, sys
total = sha = aes = mem = 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
    if not m:
        continue
    ir, name = int(m.group(1).replace(",", "")), m.group(2)
    if "PROGRAM TOTALS" in name:
        total = ir
    elif "sha256" in name:
        sha += ir
    elif "aesni" in name or "ghash" in name or "gcm128" in name or "aes_hw" in name:
        aes += ir
    elif "memmove" in name or "memcpy" in name or "memset" in name:
        mem += ir
print(total, sha, aes, mem)'
    }
    # shellcheck disable=SC2046 # each cg_parts prints four numbers
    python3 - "$CG_SMALL" "$CG_MB" "$BENCH_CALLGRIND" "$FIG" $(cg_parts "$(cg_dump small)") $(cg_parts "$(cg_dump large)") <<'PY'
import sys
small, large, out, fig = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
a, b = list(map(int, sys.argv[5:9])), list(map(int, sys.argv[9:13]))
total, sha, aes, mem = ((y - x) / (large - small) for x, y in zip(a, b))
rest = total - sha - aes - mem
print(f"instructions per MB of bulk through the gateway, recording on (callgrind, user space): {total:,.0f}: "
      f"SHA-256 {sha:,.0f}, AES-GCM {aes:,.0f}, memcpy and memset {mem:,.0f}, the rest {rest:,.0f}")
print(f"    callgrind_annotate {out}/gateway.out.N (the dumps named small, {small} MB, and large, {large} MB)")
with open(fig, "a") as f:
    for key, v in (("", total), ("_sha256", sha), ("_aes_gcm", aes), ("_memcpy_memset", mem), ("_rest", rest)):
        f.write(f"callgrind_ir_per_mb{key} {round(v)}\n")
PY
fi

# Session set-up: `ssh ... true`, median of RUNS, interleaved; with the same key exchange on
# every leg, and with each side's defaults.
: > "$W/setup.direct"; : > "$W/setup.gw"; : > "$W/setup.direct_default"; : > "$W/setup.gw_default"
for _ in $(seq "$RUNS"); do
    secs "${DIRECT[0]}" "${SAME[@]}" "${DIRECT[@]:1}" true >> "$W/setup.direct"
    secs "${GW_ON[@]}" "${SAME[@]}" alice@127.0.0.1 true >> "$W/setup.gw"
    secs "${DIRECT[@]}" true >> "$W/setup.direct_default"
    secs "${GW_ON[@]}" alice@127.0.0.1 true >> "$W/setup.gw_default"
done
sd=$(median < "$W/setup.direct"); sg=$(median < "$W/setup.gw")
sdd=$(median < "$W/setup.direct_default"); sgd=$(median < "$W/setup.gw_default")
echo "set-up median, $KEX on every leg: direct ${sd} s, gateway ${sg} s; gateway/direct $(ratio "$sg" "$sd")  (goal <= 1.1)"
echo "set-up median, default settings: direct ${sdd} s ($KEX_DIRECT), gateway ${sgd} s ($KEX_GW_CLIENT, then $KEX_GW_TARGET); gateway/direct $(ratio "$sgd" "$sdd")"
fig setup_direct_s "$sd"; fig setup_gateway_s "$sg"; fig setup_ratio "$(ratio "$sg" "$sd")"
fig setup_direct_default_s "$sdd"; fig setup_gateway_default_s "$sgd"; fig setup_ratio_default "$(ratio "$sgd" "$sdd")"

# Memory per idle interactive session, then ticket closes cutting all of them.
export JITGATE_URL=$API_ON
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
live_count() {
    JITGATE_API_KEY=$API_KEY_B "$J" --config "$W/on.toml" --json sessions --live --limit 5000 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}
open_idle_sessions() { # $1 token, $2 count: idle interactive sessions, waits until they are live
    # From 50 technician addresses (the gateway caps unauthenticated connections per source),
    # in steps of 20, each once the gateway has taken most of the last.
    local i
    for i in $(seq "$2"); do
        sshpass -p "$1" ssh "${SSHO[@]}" -o PreferredAuthentications=password -tt -p "$SSH_PORT" \
            -b "127.0.1.$(( i % 50 + 1 ))" alice@127.0.0.1 "exec -a jitgate-bench-idle sleep 3600" \
            < /dev/null > /dev/null 2>&1 &
        IDLE+=($!)
        if (( i % 20 == 0 )); then
            for _ in $(seq 60); do
                (( $(live_count) >= i - 5 )) && break
                sleep 0.25
            done
        fi
    done
    for _ in $(seq 120); do
        live=$(live_count)
        [ "$live" -ge "$2" ] && break
        sleep 0.5
    done
}
# The peers of the sessions: ssh clients (and their sshpass), sshd's per-connection processes,
# the idle shells.
peers() { pgrep -f 'jitgate-bench-idle|sshd-session|sshd-auth|sshd: |^sshpass ' | grep -v "^$$\$" || true; }
# `taskset -a` and `chrt -a` set each of the gateway's threads in turn and fail when one exits
# meanwhile (its blocking threads end after 10 s idle): tried again, each time on every thread.
gateway_threads() { # $@ the command, ending in the gateway's pid
    local _
    for _ in 1 2 3 4 5; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    "$@" >/dev/null
}
cut_round() { # $1 ticket, $2 label, $3 "apart" to give the gateway cpu 0 and the peers cpu 1, $4 goal, $5 figure key
    local from from_log
    from=$(wc -l < "$W/data-true/audit.jsonl")
    from_log=$(wc -l < "$W/on.toml.out.err")
    if [ "${3:-}" = apart ]; then
        for p in $(peers); do taskset -a -p -c 1 "$p" >/dev/null 2>&1 || true; done
        gateway_threads taskset -a -p -c 0 "$GW_ON_PID"
    fi
    local perf_pid=
    if [ -n "${BENCH_PERF:-}" ] && [ "${3:-}" = apart ]; then
        perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -m 4M -p "$GW_ON_PID" -o "$BENCH_PERF/cut.data" > /dev/null 2>&1 & perf_pid=$!
        sleep 1
    fi
    # The gateway's threads from the close until every end is recorded (each end record's
    # file and database syncs run on its blocking threads), every 50 ms by one process.
    local threads_before sampler
    threads_before=$(awk '/^Threads:/ {print $2}' "/proc/$GW_ON_PID/status")
    rm -f "$W/threads" "$W/threads.stop"
    python3 - "$GW_ON_PID" "$W/threads" <<'PY' &
import os, sys, time
pid, out = sys.argv[1], sys.argv[2]
peak = 0
while not os.path.exists(out + ".stop"):
    with open(f"/proc/{pid}/status") as f:
        peak = max([peak] + [int(l.split()[1]) for l in f if l.startswith("Threads:")])
    time.sleep(0.05)
open(out, "w").write(f"{peak}\n")
PY
    sampler=$!
    JITGATE_API_KEY=$API_KEY_B "$J" --config "$W/on.toml" ticket close "$1" >/dev/null
    if [ -n "$perf_pid" ]; then sleep 1.5; kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    # The gateway times each cut itself; the first look at how far it is waits, so that the
    # looking does not take CPU from the cuts it measures.
    sleep 2
    for _ in $(seq 100); do
        [ "$(live_count)" -eq 0 ] && break
        sleep 0.5
    done
    if [ "${3:-}" = apart ]; then
        gateway_threads taskset -a -p -c 0-1 "$GW_ON_PID"
    fi
    # Sessions leave the live list when cut; their end records follow. Wait for all of them
    # (at most 20 s), so that the figures cover every session that was live.
    for _ in $(seq 100); do
        [ "$(tail -n +"$((from + 1))" "$W/data-true/audit.jsonl" | grep -c '"event":"session.ended"')" -ge "$live" ] && break
        sleep 0.2
    done
    touch "$W/threads.stop"; wait "$sampler" || true
    local threads_peak rss_after
    threads_peak=$(cat "$W/threads" 2>/dev/null || echo 0)
    rss_after=$(rss "$GW_ON_PID")
    # A client that has not closed its side 500 ms after its disconnect has its socket cut
    # (timing::CLIENT_CLOSE_WAIT). The latency ends before, when the gateway shut its side down
    # after writing the disconnect, unless it could not write it.
    local forced
    forced=$(tail -n +"$((from_log + 1))" "$W/on.toml.out.err" | grep -c "did not take the disconnect" || true)
    python3 - "$W/data-true/audit.jsonl" "$from" "$2" "${4:-}" "$live" "$5" "$FIG" <<'PY'
import json, sys
path, start, label, goal, live, key, fig = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
records = [json.loads(l) for l in open(path).readlines()[start:]]
lat = sorted(r["kill_latency_ms"] for r in records
             if r.get("event") == "session.ended" and r.get("cause") == "ticket" and r.get("kill_latency_ms") is not None)
if not lat:
    print(f"ticket close ({label}): no sessions were cut"); sys.exit(0)
p99 = lat[min(len(lat) - 1, int(round(0.99 * len(lat))) - 1)]
print(f"ticket close cut {len(lat)} of {live} live sessions ({label}): p50 {lat[len(lat)//2]} ms, p99 {p99} ms, max {lat[-1]} ms{goal}")
with open(fig, "a") as f:
    f.write(f"{key}_sessions {len(lat)}\n{key}_live {live}\n{key}_p50_ms {lat[len(lat)//2]}\n"
            f"{key}_p99_ms {p99}\n{key}_max_ms {lat[-1]}\n")
PY
    echo "  gateway threads: $threads_before before the close, at most $threads_peak until every end was recorded; RSS then $rss_after KiB"
    fig "${5}_threads_max" "$threads_peak"
    if [ "$forced" -gt 0 ]; then
        echo "  ($forced of these clients had not closed their side 500 ms after their disconnect; the gateway cut those sockets)"
    fi
}

sleep 1
SSH_PORT=$SSH_ON
before=$(rss "$GW_ON_PID")
open_idle_sessions "$TOKEN_ON" "$N"
sleep 2
after=$(rss "$GW_ON_PID")
if [ "$live" -gt 0 ]; then
    echo "idle sessions live: $live; gateway RSS $before KiB -> $after KiB: $(( (after - before) / live )) KiB per idle session  (goal <= 64 KiB)"
    fig idle_sessions "$live"; fig idle_kib_per_session "$(( (after - before) / live ))"
else
    echo "idle sessions: none became live; see $W/on.toml.out.err"
fi
# Everything sharing both cores at default priority: hundreds of exiting processes, each in
# its own scheduling group, compete with the gateway for the CPU.
# One such cut's p99 moves with the machine's speed by a factor of two from run to run, so the
# figure is the median of CUT_ROUNDS cuts, each of N fresh sessions.
cut_round BENCH-on "$live sessions; gateway, clients and sshd sharing both cores; cut 1 of $CUT_ROUNDS" "" "" cut_shared_1
for c in $(seq 2 "$CUT_ROUNDS"); do
    API=$API_ON grant_token "$W/on.toml" "BENCH-shared-$c"
    sleep 1
    open_idle_sessions "$TOKEN" "$N"
    sleep 2
    cut_round "BENCH-shared-$c" "$live sessions; sharing both cores; cut $c of $CUT_ROUNDS" "" "" "cut_shared_$c"
done
python3 - "$FIG" "$CUT_ROUNDS" <<'PY'
import statistics, sys
fig, rounds = sys.argv[1], int(sys.argv[2])
values = dict(line.rstrip("\n").split(" ", 1) for line in open(fig))
p99 = [int(values[k]) for k in (f"cut_shared_{c}_p99_ms" for c in range(1, rounds + 1)) if k in values]
if p99:
    median = statistics.median_low(p99)
    print(f"ticket close cut, sharing both cores: median p99 of {len(p99)} cuts {median} ms "
          f"(each: {', '.join(map(str, p99))} ms)  (goal p99 <= 100 ms)")
    with open(fig, "a") as f:
        f.write(f"cut_shared_p99_ms {median}\n")
PY

# The cut at scale: BIG sessions, the gateway on one core and the clients and sshd sessions on
# the other, as when clients and targets are other machines (they still run and exit as it cuts).
API=$API_ON grant_token "$W/on.toml" BENCH-big
sleep 1
open_idle_sessions "$TOKEN" "$BIG"
sleep 2
cut_round BENCH-big "$live sessions; gateway on cpu 0, clients and sshd on cpu 1" apart "  (goal p99 <= 50 ms)" cut_apart

# The shared cut with the gateway's threads at the lowest real-time priority (as `chrt -r 1`
# or systemd's CPUSchedulingPolicy=rr give it): how a deployment keeps cuts prompt on a host
# shared with busy processes.
if gateway_threads chrt -a -r -p 1 "$GW_ON_PID" 2>/dev/null; then
    API=$API_ON grant_token "$W/on.toml" BENCH-rr
    sleep 1
    open_idle_sessions "$TOKEN" "$N"
    sleep 2
    cut_round BENCH-rr "$live sessions; sharing both cores, gateway at real-time priority rr 1" "" "" cut_rr
else
    echo "ticket close cut (gateway at real-time priority): skipped, chrt could not set SCHED_RR"
fi

mkdir -p "$(dirname "$JSON_OUT")"
python3 - "$FIG" "$JSON_OUT" "$BUILD" <<'PY'
import json, sys
figures = {"build": sys.argv[3]}
for line in open(sys.argv[1]):
    k, v = line.rstrip("\n").split(" ", 1)
    try:
        figures[k] = json.loads(v)   # a number
    except ValueError:
        figures[k] = v               # a name
json.dump(figures, open(sys.argv[2], "w"), indent=2)
print(f"figures written to {sys.argv[2]}")
PY
