#!/usr/bin/env bash
# HTTPS gateway benchmark: prints figures measured in one run, as ratios against nginx.
#   bash bench/https.sh          (as root; installs nginx/wrk when missing)
# One nginx plays the admin console (TLS, `ssl_verify_client on` with jitgate's CA) and a
# second one the reference reverse proxy: the same server certificate as the gateway,
# an mTLS upstream with a client certificate from jitgate's CA, upstream keep-alive, and a
# buffered access log (jitgate records every exchange, so the proxy logs each request too).
# Env: BENCH_CONNS (wrk connections, default 32), BENCH_SECONDS (per wrk run, default 6),
#      BENCH_ROUNDS (paired jitgate/proxy rounds, default 5),
#      BENCH_MB (download size, default 512), BENCH_JSON (the figures as JSON, default
#      bench/results/https.json), BENCH_BINARY (a jitgate binary to measure instead of `dist`),
#      BENCH_PERF=DIR (also profile the gateway with `perf` under one wrk run, DIR/rps.data,
#      and one download, DIR/download.data, and print the top of each),
#      BENCH_CALLGRIND=DIR (also count the instructions the gateway and the proxy execute per
#      request and per MB downloaded, each under callgrind; DIR keeps the profiles;
#      BENCH_CALLGRIND_SECONDS, default 8, and BENCH_CALLGRIND_MB, default 64, size the load;
#      BENCH_ROUNDS=0 skips the timed rounds and downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${BENCH_CONNS:-32}
SECS=${BENCH_SECONDS:-6}
ROUNDS=${BENCH_ROUNDS:-5}
MB=${BENCH_MB:-512}
JSON_OUT=${BENCH_JSON:-bench/results/https.json}

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
if [ -n "${BENCH_PERF:-}" ]; then command -v perf >/dev/null || need+=(linux-perf); fi
if [ -n "${BENCH_CALLGRIND:-}" ]; then command -v valgrind >/dev/null || need+=(valgrind); fi
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n 65536 2>/dev/null || true

if [ -z "${BENCH_BINARY:-}" ]; then cargo build --profile dist --locked --quiet; fi
J=${BENCH_BINARY:-$PWD/target/dist/jitgate}
BUILD=dist
if [ -n "${BENCH_BINARY:-}" ]; then BUILD=$BENCH_BINARY; fi
W=$(mktemp -d /tmp/jitgate-bench-https.XXXXXX)
chmod 755 "$W"   # nginx workers (www-data) read the web root
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TARGET_PORT=$(free_port)
PROXY_PORT=$(free_port)
API_KEY_A=jgk_bench_alice_$RANDOM$RANDOM
API_KEY_B=jgk_bench_bob_$RANDOM$RANDOM

# The console's own CA and server certificate, as an appliance would have.
ossl() { openssl "$@" 2>/dev/null; }
EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
ossl req -x509 "${EC[@]}" -keyout "$W/console-ca.key" -out "$W/console-ca.pem" -days 2 -subj "/CN=bench console CA"
ossl req "${EC[@]}" -keyout "$W/console.key" -out "$W/console.csr" -subj /CN=127.0.0.1
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$W/console.ext"
ossl x509 -req -in "$W/console.csr" -CA "$W/console-ca.pem" -CAkey "$W/console-ca.key" -CAcreateserial \
    -days 2 -extfile "$W/console.ext" -out "$W/console.pem"

cat > "$W/jitgate.toml" <<CFG
[gateway]
public_name = "localhost"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
https_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "data"
certs_dir = "certs"
recordings_dir = "recordings"
admission_failures_per_minute = 1000
[store]
url = "sqlite://data/j.db"
[[users]]
name = "alice"
roles = ["technician"]
api_key_sha256 = "$(printf %s "$API_KEY_A" | sha256sum | cut -c1-64)"
[[users]]
name = "bob"
roles = ["approver", "admin"]
api_key_sha256 = "$(printf %s "$API_KEY_B" | sha256sum | cut -c1-64)"
[[targets]]
name = "console"
kind = "https"
url = "https://127.0.0.1:$TARGET_PORT"
server_ca = "console-ca.pem"
[[tasks]]
name = "bench"
targets = ["console"]
http_allow = ["GET /*"]
max_ttl = "2h"
CFG
"$J" --config "$W/jitgate.toml" init >/dev/null

# A client certificate from jitgate's TLS CA, for the reference proxy and for direct downloads.
ossl req "${EC[@]}" -keyout "$W/client.key" -out "$W/client.csr" -subj /CN=bench-proxy
printf 'extendedKeyUsage=clientAuth\n' > "$W/client.ext"
ossl x509 -req -in "$W/client.csr" -CA "$W/certs/tls_ca.pem" -CAkey "$W/certs/tls_ca.key" \
    -CAcreateserial -days 2 -extfile "$W/client.ext" -out "$W/client.pem"

mkdir -p "$W/www" "$W/nginx-tmp"
head -c 2048 /dev/urandom | base64 -w 100 > "$W/www/page.html"   # a ~2.7 KB page
head -c "${MB}M" /dev/urandom > "$W/www/big.bin"
# Two nginx instances: the console, and the reference reverse proxy in front of it. Separate
# processes, as jitgate and the console are: one instance serving both could hand a proxied
# request to the console inside the same worker, a shortcut no real deployment has.
nginx_conf() { # $1 name, $2 server block
    cat <<CFG
worker_processes auto;
pid $W/$1.pid;
error_log $W/$1-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $W/nginx-tmp/$1-body;
    proxy_temp_path $W/nginx-tmp/$1-proxy;
    fastcgi_temp_path $W/nginx-tmp/$1-fastcgi;
    uwsgi_temp_path $W/nginx-tmp/$1-uwsgi;
    scgi_temp_path $W/nginx-tmp/$1-scgi;
$2
}
CFG
}
# The console: trusts only client certificates from jitgate's CA.
nginx_conf console "
    server {
        listen 127.0.0.1:$TARGET_PORT ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $W/console.pem;
        ssl_certificate_key $W/console.key;
        ssl_client_certificate $W/certs/ca.pem;
        ssl_verify_client on;
        keepalive_requests 100000;
        root $W/www;
    }" > "$W/console.conf"
# The reference reverse proxy: the gateway's server certificate, mTLS to the console, and a
# buffered access log, as jitgate records every exchange in http.jsonl.
nginx_conf proxy "
    upstream console { server 127.0.0.1:$TARGET_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$PROXY_PORT ssl;
        # TLS 1.3 as the gateway offers it (nginx 1.22 defaults to TLS 1.2 at most).
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $W/certs/server.pem;
        ssl_certificate_key $W/certs/server.key;
        keepalive_requests 100000;
        access_log $W/proxy-access.log combined buffer=64k flush=1s;
        location / {
            proxy_pass https://console;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_ssl_certificate $W/client.pem;
            proxy_ssl_certificate_key $W/client.key;
            proxy_ssl_trusted_certificate $W/console-ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name 127.0.0.1;
            proxy_ssl_session_reuse on;
            proxy_buffering off;
        }
    }" > "$W/proxy.conf"
for n in console proxy; do
    "$NGINX" -p "$W" -e "$W/$n-error.log" -c "$W/$n.conf" -g 'daemon off;' & PIDS+=($!)
done

"$J" --config "$W/jitgate.toml" serve > "$W/serve.out" 2> "$W/serve.err" & GW_PID=$!
PIDS+=("$GW_PID")
for _ in $(seq 100); do grep -q "HTTPS gateway listening" "$W/serve.out" 2>/dev/null && break; sleep 0.1; done
API=$(sed -n 's/^jitgate API listening on //p' "$W/serve.out")
GW=$(sed -n 's/^jitgate HTTPS gateway listening on //p' "$W/serve.out")
[ -n "$GW" ] || { echo "the gateway did not start:"; cat "$W/serve.err"; exit 1; }
export JITGATE_URL=$API JITGATE_CA=$W/certs/ca.pem
JITGATE_API_KEY=$API_KEY_B "$J" --config "$W/jitgate.toml" ticket open BENCH-1 --assignee alice >/dev/null
REQ=$(JITGATE_API_KEY=$API_KEY_A "$J" --config "$W/jitgate.toml" --json request --task bench --target console \
    --ticket BENCH-1 --ttl 2h --reason "benchmark run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
JITGATE_API_KEY=$API_KEY_B "$J" --config "$W/jitgate.toml" approve "$REQ" >/dev/null
TOKEN=$(JITGATE_API_KEY=$API_KEY_A "$J" --config "$W/jitgate.toml" --json token "$REQ" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
AUTH="Authorization: Bearer $TOKEN"
PROXY=https://127.0.0.1:$PROXY_PORT
DIRECT=https://127.0.0.1:$TARGET_PORT
for _ in $(seq 50); do curl -s -o /dev/null --cacert "$W/certs/ca.pem" "$PROXY/page.html" && break; sleep 0.1; done

# Sanity: both paths serve the page (the gateway with the token, the proxy without).
for u in "$GW" "$PROXY"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/certs/ca.pem" -H "$AUTH" "$u/page.html")
    [ "$code" = 200 ] || { echo "$u/page.html answered $code"; cat "$W/serve.err" "$W/console-error.log" "$W/proxy-error.log"; exit 1; }
done

ratio() { python3 -c "print('%.2f' % ($1/$2))"; }
# wrk: "Requests/sec: N" and the 99% latency line (us/ms/s) -> "rps p99_ms".
load() { # $1 url
    wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H "$AUTH" "$1/page.html" > "$W/wrk.out"
    python3 - "$W/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
v, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", t, re.M).groups()
p99 = float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if errs:
    sys.exit(f"{errs.group(1)} non-2xx answers:\n{t}")
print(f"{rps:.0f} {p99:.2f}")
PY
}

# The timed part (BENCH_ROUNDS=0 skips it, for the instruction counts alone).
if ((ROUNDS > 0)); then
echo "jitgate HTTPS benchmark: wrk, $CONNS connections, $ROUNDS paired rounds of ${SECS} s, a ~2.7 KB page; $MB MB download (2 cores, loopback; $BUILD)"
wrk -t2 -c"$CONNS" -d2s -H "$AUTH" "$GW/page.html" > /dev/null    # warm-up
wrk -t2 -c"$CONNS" -d2s "$PROXY/page.html" > /dev/null
# Rounds of jitgate then the proxy, back to back so that both see the same machine; the ratio
# of each round's pair is taken, and the median of those ratios is the figure.
: > "$W/rounds"
for i in $(seq "$ROUNDS"); do
    read -r gw_rps gw_p99 <<< "$(load "$GW")"
    read -r px_rps px_p99 <<< "$(load "$PROXY")"
    echo "$gw_rps $px_rps $gw_p99 $px_p99" >> "$W/rounds"
    echo "  round $i: jitgate $gw_rps req/s, p99 $gw_p99 ms; nginx proxy $px_rps req/s, p99 $px_p99 ms"
done
FIG=$W/figures
python3 - "$W/rounds" "$FIG" <<'PY'
import json, statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
rps = statistics.median(g / p for g, p, _, _ in rows)
p99 = statistics.median(g / p for _, _, g, p in rows)
print(f"requests/s jitgate/nginx proxy, median of {len(rows)} paired rounds: {rps:.2f}  (goal >= 1.0)")
print(f"p99 latency jitgate/nginx proxy, median of {len(rows)} paired rounds: {p99:.2f}  (goal <= 1.0)")
json.dump({"rounds": len(rows),
           "rps_gateway": statistics.median(r[0] for r in rows),
           "rps_proxy": statistics.median(r[1] for r in rows),
           "p99_ms_gateway": statistics.median(r[2] for r in rows),
           "p99_ms_proxy": statistics.median(r[3] for r in rows),
           "rps_ratio": round(rps, 3), "p99_ratio": round(p99, 3)}, open(sys.argv[2], "w"))
PY

# Large download: paired rounds (direct, jitgate, the proxy, jitgate over HTTP/2 in each),
# the median of each round's ratios; and the gateway's CPU time per GB it moved. The console
# and the proxy speak HTTP/1.1 only, so the compared jitgate download does too
# (`--http1.1`); the HTTP/2 one is what curl and browsers pick with the gateway by default.
speed() { curl -s -o /dev/null -w '%{speed_download}' "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, all threads
: > "$W/downloads"
cpu=0
for _ in $(seq 3); do
    d=$(speed --cacert "$W/console-ca.pem" --cert "$W/client.pem" --key "$W/client.key" "$DIRECT/big.bin")
    c0=$(cpu_ticks "$GW_PID")
    g=$(speed --http1.1 --cacert "$W/certs/ca.pem" -H "$AUTH" "$GW/big.bin")
    cpu=$(( cpu + $(cpu_ticks "$GW_PID") - c0 ))
    p=$(speed --cacert "$W/certs/ca.pem" "$PROXY/big.bin")
    g2=$(speed --http2 --cacert "$W/certs/ca.pem" -H "$AUTH" "$GW/big.bin")
    echo "$d $g $p $g2" >> "$W/downloads"
done
python3 - "$W/downloads" "$MB" "$cpu" "$(getconf CLK_TCK)" "$FIG" "$JSON_OUT" "$BUILD" \
    "$(awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status")" <<'PY'
import json, os, statistics as st, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
mb, cpu, tick, fig, out, build, rss = (int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                       sys.argv[5], sys.argv[6], sys.argv[7], int(sys.argv[8]))
d, g, p, g2 = (list(c) for c in zip(*rows))
mbs = lambda xs: st.median(xs) / 1048576
gw = st.median(b / a for a, b in zip(d, g))
px = st.median(b / a for a, b in zip(d, p))
gw2 = st.median(b / a for a, b in zip(d, g2))
cpu_gb = cpu / tick / (mb * len(rows) / 1024)
print(f"download {mb} MB, medians of {len(rows)} paired rounds: direct {mbs(d):.0f} MB/s, jitgate {mbs(g):.0f} MB/s, nginx proxy {mbs(p):.0f} MB/s (HTTP/1.1); jitgate over HTTP/2 {mbs(g2):.0f} MB/s")
print(f"download throughput jitgate/direct, HTTP/1.1 on every leg: {gw:.2f}  (goal >= 0.8; nginx proxy/direct: {px:.2f})")
print(f"download throughput jitgate over HTTP/2 (curl's default with the gateway)/direct: {gw2:.2f}")
print(f"gateway CPU per GB downloaded (HTTP/1.1): {cpu_gb:.2f} s")
print(f"gateway resident memory after the run: {rss} KiB")
figures = {"build": build, **json.load(open(fig)), "download_mb": mb,
           "download_direct_mb_s": round(mbs(d)), "download_gateway_mb_s": round(mbs(g)),
           "download_proxy_mb_s": round(mbs(p)), "download_gateway_h2_mb_s": round(mbs(g2)),
           "download_ratio": round(gw, 3), "download_h2_ratio": round(gw2, 3),
           "download_proxy_ratio": round(px, 3), "gateway_cpu_s_per_gb": round(cpu_gb, 3),
           "gateway_rss_kib": rss}
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
json.dump(figures, open(out, "w"), indent=2)
print(f"figures written to {out}")
PY
fi   # the timed part

# The profile beside the figure: the functions that took most of the gateway's CPU (self time).
if [ -n "${BENCH_PERF:-}" ]; then
    mkdir -p "$BENCH_PERF"
    profiled() { # $1 name, then the command
        local name=$1; shift
        perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -m 4M -p "$GW_PID" -o "$BENCH_PERF/$name.data" > /dev/null 2>&1 & local perf_pid=$!
        sleep 1
        "$@" > /dev/null
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        echo "profile of the gateway, $name (perf, self time; perf report -i $BENCH_PERF/$name.data):"
        perf report -i "$BENCH_PERF/$name.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null \
            | awk '/^ +[0-9.]+%/ && n++ < 12 {printf "    %s %s %s\n", $1, $2, $4}'
    }
    profiled rps wrk -t2 -c"$CONNS" -d4s -H "$AUTH" "$GW/page.html"
    profiled download curl -s -o /dev/null --http1.1 --cacert "$W/certs/ca.pem" -H "$AUTH" "$GW/big.bin"
fi

# Instructions per request and per MB (callgrind): the user-space work of the gateway and of
# the reference proxy, counted rather than timed, so the figure does not move with the machine
# or a neighbour. Both run under valgrind one at a time with the same load; the kernel's work
# (the sockets' copies) is not counted.
if [ -n "${BENCH_CALLGRIND:-}" ]; then
    mkdir -p "$BENCH_CALLGRIND"
    CG_REQS_SECS=${BENCH_CALLGRIND_SECONDS:-8}
    CG_MB=${BENCH_CALLGRIND_MB:-64}
    head -c "${CG_MB}M" "$W/www/big.bin" > "$W/www/cg.bin"
    # $1 name, $2 pid under callgrind, $3 base URL, then curl's/wrk's extra arguments.
    counted() {
        local name=$1 pid=$2 url=$3; shift 3
        callgrind_control -i on "$pid" > /dev/null 2>&1
        wrk -t1 -c1 -d2s "$@" "$url/page.html" > /dev/null   # warm-up, not counted
        callgrind_control -z "$pid" > /dev/null 2>&1
        wrk -t1 -c1 -d"${CG_REQS_SECS}s" "$@" "$url/page.html" > "$W/cg-wrk.out"
        callgrind_control -d "requests" "$pid" > /dev/null 2>&1
        local reqs
        reqs=$(awk '/requests in/ {print $1}' "$W/cg-wrk.out")
        curl -s -o /dev/null --http1.1 --cacert "$W/certs/ca.pem" "$@" "$url/cg.bin"
        callgrind_control -z "$pid" > /dev/null 2>&1
        curl -s -o /dev/null --http1.1 --cacert "$W/certs/ca.pem" "$@" "$url/cg.bin"
        callgrind_control -d "download" "$pid" > /dev/null 2>&1
        local ir_req ir_dl
        ir_req=$(cg_total "$BENCH_CALLGRIND/$name.out" requests)
        ir_dl=$(cg_total "$BENCH_CALLGRIND/$name.out" download)
        echo "$name $reqs $ir_req $ir_dl" >> "$W/cg-figures"
    }
    # The total of the dump whose trigger was $2 (callgrind names each dump file NAME.N).
    cg_total() {
        grep -l "^desc: Trigger: dump $2$" "$1".* | head -1 | xargs awk '/^summary:/ {print $2}'
    }
    : > "$W/cg-figures"
    # The gateway, restarted under callgrind with the same configuration and store.
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$BENCH_CALLGRIND/gateway.out" \
        "$J" --config "$W/jitgate.toml" serve > "$W/serve-cg.out" 2> "$W/serve-cg.err" & CG_PID=$!
    PIDS+=("$CG_PID")
    for _ in $(seq 600); do grep -q "HTTPS gateway listening" "$W/serve-cg.out" 2>/dev/null && break; sleep 0.1; done
    CG_GW=$(sed -n 's/^jitgate HTTPS gateway listening on //p' "$W/serve-cg.out")
    [ -n "$CG_GW" ] || { echo "the gateway did not start under valgrind:"; cat "$W/serve-cg.err"; exit 1; }
    counted gateway "$CG_PID" "$CG_GW" -H "$AUTH"
    # The gateway's download over HTTP/2 as well (curl's and browsers' choice with it).
    curl -s -o /dev/null --http2 --cacert "$W/certs/ca.pem" -H "$AUTH" "$CG_GW/cg.bin"
    callgrind_control -z "$CG_PID" > /dev/null 2>&1
    curl -s -o /dev/null --http2 --cacert "$W/certs/ca.pem" -H "$AUTH" "$CG_GW/cg.bin"
    callgrind_control -d "download_h2" "$CG_PID" > /dev/null 2>&1
    cg_total "$BENCH_CALLGRIND/gateway.out" download_h2 > "$W/cg-h2"
    kill "$CG_PID"; wait "$CG_PID" 2>/dev/null || true
    # The reference proxy: the same server block in one nginx process (no master, one worker).
    kill "$(cat "$W/proxy.pid")" 2>/dev/null || true
    for _ in $(seq 50); do [ -e "$W/proxy.pid" ] || break; sleep 0.1; done
    sed -e 's/^worker_processes auto;/worker_processes 1; master_process off;/' \
        -e "s#pid $W/proxy.pid#pid $W/proxy-cg.pid#" "$W/proxy.conf" > "$W/proxy-cg.conf"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$BENCH_CALLGRIND/nginx.out" \
        "$NGINX" -p "$W" -e "$W/proxy-error.log" -c "$W/proxy-cg.conf" -g 'daemon off;' 2> "$W/nginx-cg.err" & NG_PID=$!
    PIDS+=("$NG_PID")
    for _ in $(seq 300); do curl -s -o /dev/null --cacert "$W/certs/ca.pem" "$PROXY/page.html" && break; sleep 0.1; done
    counted nginx "$NG_PID" "$PROXY"
    python3 - "$W/cg-figures" "$CG_MB" "$BENCH_CALLGRIND" "$W/cg-h2" <<'PY'
import sys
rows = {l.split()[0]: list(map(int, l.split()[1:])) for l in open(sys.argv[1])}
mb, out = int(sys.argv[2]), sys.argv[3]
h2 = int(open(sys.argv[4]).read()) / mb
per = {n: (ir / reqs, dl / mb) for n, (reqs, ir, dl) in rows.items()}
(gr, gd), (nr, nd) = per["gateway"], per["nginx"]
print(f"instructions per request (callgrind, one connection, user space): jitgate {gr:,.0f}, nginx proxy {nr:,.0f}: {gr / nr:.2f}")
print(f"instructions per MB downloaded (HTTP/1.1, {mb} MB): jitgate {gd:,.0f}, nginx proxy {nd:,.0f}: {gd / nd:.2f}")
print(f"instructions per MB downloaded through jitgate over HTTP/2: {h2:,.0f} ({h2 / gd:.2f} of HTTP/1.1)")
print(f"    callgrind_annotate {out}/gateway.out.N (the dumps named requests and download)")
PY
fi
