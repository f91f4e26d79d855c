#!/usr/bin/env bash
# bench/net.sh - runs weft's network benchmarks side by side with their peers.
#
#     bench/net.sh [--runs N] [--quick] [bench ...]
#
# benches: http echo (default: both)
#   --runs N   runs of every server at every worker count, interleaved (default 3)
#   --quick    2 s of load and 1 run: a smoke test, not figures to publish
#
# Environment:
#   BUILD      build folder (default: build at the top of the repository)
#   WEFT_HTTP  weft's HTTP server (default: $BUILD/examples/http-server)
#   WEFT_ECHO  weft's echo server (default: $BUILD/examples/echo-server)
#   NGINX      the nginx program (default: nginx on PATH, else /usr/sbin/nginx)
#
# Every server, weft's and each peer's, is called as `PROG -p PORT -w WORKERS`,
# listens on 127.0.0.1:PORT and serves until SIGTERM, then exits 0; WORKERS is
# how many CPUs it may use (GOMAXPROCS for Go, threads with a loop and a
# SO_REUSEPORT socket each for libuv, worker_processes for nginx, whose config
# is written into a temporary folder).  The benches:
#
#   http  weft, Go net/http, libuv and nginx answering GET with a 13-byte body
#         on keep-alive connections, loaded by `wrk -t1 -c100 -d10s --latency`:
#         requests per second and the 99th percentile latency
#   echo  weft, Go and libuv echo servers, loaded by echo-load (200
#         connections, one 64-byte message at a time each, 10 s after 1 s of
#         warm-up; bench/peers/echo-load.c): round trips per second and p99
#
# Each server runs at 1 and 2 workers.  A run starts the server on a free
# port, waits until it accepts, checks one answer (a GET, an echo), loads it,
# and stops it with SIGTERM (SIGKILL after 5 s).  Each round runs every server
# at every worker count, so machine noise hits all alike; the tables show the
# medians and weft's best worker count divided by each row (req/s or round
# trips/s: above 1, weft is faster), and the http table ends with weft's goals
# against each peer.  The peers live in bench/peers/ and are built into
# $BUILD/bench-peers/ when their sources are newer than the binaries.  Result
# lines `result <bench> <server>@<workers> <value> <unit>` (benches http,
# http-p99, echo, echo-p99) are appended to $BUILD/bench-results.txt, after
# bench/run.sh's.  Exits 0 unless a weft server failed: a missing one is
# skipped, a peer that fails is shown as failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
command_line="bench/net.sh${*:+ $*}"
for var in BUILD WEFT_HTTP WEFT_ECHO NGINX; do
    if [[ -n ${!var:-} ]]; then command_line="$var=${!var} $command_line"; fi
done

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

all_benches=(http echo)
runs=""
quick=0
benches=()
while (($#)); do
    case "$1" in
        --runs)
            [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || {
                echo "net.sh: --runs needs a positive number" >&2
                exit 2
            }
            runs=$2
            shift 2
            ;;
        --runs=*)
            runs=${1#--runs=}
            [[ $runs =~ ^[1-9][0-9]*$ ]] || {
                echo "net.sh: --runs needs a positive number" >&2
                exit 2
            }
            shift
            ;;
        --quick)
            quick=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            echo "net.sh: unknown option $1" >&2
            usage >&2
            exit 2
            ;;
        *)
            if [[ " ${all_benches[*]} " != *" $1 "* ]]; then
                echo "net.sh: unknown bench '$1' (known: ${all_benches[*]})" >&2
                exit 2
            fi
            [[ " ${benches[*]} " == *" $1 "* ]] || benches+=("$1")
            shift
            ;;
    esac
done
((${#benches[@]})) || benches=("${all_benches[@]}")
if [[ -z $runs ]]; then
    if ((quick)); then runs=1; else runs=3; fi
fi
if ((quick)); then seconds=2; else seconds=10; fi
workers_list=(1 2)
wrk_threads=1 wrk_conns=100 echo_conns=200

abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}
BUILD=$(abspath "${BUILD:-$root/build}")
WEFT_HTTP=$(abspath "${WEFT_HTTP:-$BUILD/examples/http-server}")
WEFT_ECHO=$(abspath "${WEFT_ECHO:-$BUILD/examples/echo-server}")
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
peer_dir=$BUILD/bench-peers
results=$BUILD/bench-results.txt # bench/run.sh empties it; this script appends
mkdir -p "$peer_dir"
tmp=$(mktemp -d)
srv_pid=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [[ -n $srv_pid ]]; then stop_server >/dev/null 2>&1 || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

note() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------------------
# What runs where.

bench_servers() {
    case "$1" in
        http) echo "weft go libuv nginx" ;;
        echo) echo "weft go libuv" ;;
    esac
}

# the program a server runs as; nginx is the system's, weft's comes from CMake
server_prog() { # bench server
    case "$1:$2" in
        http:weft) echo "$WEFT_HTTP" ;;
        echo:weft) echo "$WEFT_ECHO" ;;
        http:go) echo "$peer_dir/go-httpd" ;;
        echo:go) echo "$peer_dir/go-echod" ;;
        http:libuv) echo "$peer_dir/httpd-libuv" ;;
        echo:libuv) echo "$peer_dir/echod-libuv" ;;
        http:nginx) echo "$NGINX" ;;
    esac
}

bench_peers() { # bench: the programs built from bench/peers/ it needs
    case "$1" in
        http) echo "go-httpd httpd-libuv" ;;
        echo) echo "go-echod echod-libuv echo-load" ;;
    esac
}

bench_title() {
    case "$1" in
        http) echo "wrk -t$wrk_threads -c$wrk_conns -d${seconds}s on GET /, keep-alive, 13-byte body" ;;
        echo) echo "echo-load -c $echo_conns -d $seconds, one 64-byte message at a time per connection" ;;
    esac
}

# ---------------------------------------------------------------------------
# Building the peers.

declare -A failed # program or "bench:server@workers" -> why it failed

peer_sources() { # program: sets srcs to the files its binary depends on
    local p=$1 s=$here/peers
    case "$p" in
        go-*) srcs=("$s/go/go.mod" "$s/go/${p#go-}/main.go") ;;
        *) srcs=("$here/net.sh" "$s/$p.c") ;;
    esac
}

build_peer() { # program: compiles it into $peer_dir, with -O3 as `make build` compiles weft
    local p=$1 s=$here/peers out=$peer_dir/$1 uv
    case "$p" in
        go-*) (cd "$s/go" && go build -o "$out" "./${p#go-}") ;;
        *-libuv)
            uv=$(pkg-config --cflags --libs libuv 2>/dev/null) || uv=-luv
            # shellcheck disable=SC2086 # the flags are words
            gcc -std=c11 -O3 -Wall -o "$out" "$s/$p.c" $uv
            ;;
        echo-load) gcc -std=c11 -O3 -Wall -pthread -o "$out" "$s/$p.c" ;;
    esac
}

stale() { # program: true when the binary is missing or older than a source
    local out=$peer_dir/$1 src
    [[ -x $out ]] || return 0
    peer_sources "$1"
    for src in "${srcs[@]}"; do
        if [[ $src -nt $out ]]; then return 0; fi
    done
    return 1
}

# Go must not reach for the network or a home folder: everything local, the
# caches under the build folder.
export GOCACHE=$peer_dir/go-cache GOPATH=$peer_dir/go-path GO111MODULE=on \
    GOTOOLCHAIN=local GOPROXY=off GOFLAGS="" GOWORK=off

to_build=()
for b in "${benches[@]}"; do
    for p in $(bench_peers "$b"); do
        if stale "$p" && [[ " ${to_build[*]} " != *" $p "* ]]; then to_build+=("$p"); fi
    done
done
need_tools=0
if [[ " ${benches[*]} " == *" http "* ]] && { ! command -v wrk >/dev/null || [[ ! -x $NGINX ]]; }; then
    need_tools=1
fi
if ((${#to_build[@]} || need_tools)); then
    if ! "$here/install-peers.sh" --check >"$tmp/check.log" 2>&1; then
        note "# some peer tools are missing:"
        sed 's/^/#   /' "$tmp/check.log" >&2
        "$here/install-peers.sh" >&2 || note "# install-peers.sh failed; the peers that need it will fail"
        NGINX=$(command -v nginx || echo "$NGINX")
    fi
fi
for p in "${to_build[@]}"; do
    note "# building $p"
    log=$peer_dir/$p.build.log
    rm -f "$peer_dir/$p"
    if ! build_peer "$p" >"$log" 2>&1; then
        why=$(grep -m1 -E 'error|not found|cannot' "$log" || tail -n1 "$log")
        failed[$p]="build: ${why:0:100}; see $log"
        note "#   failed: ${failed[$p]}"
    fi
done

# ---------------------------------------------------------------------------
# Servers: start, check, stop.

port_next=$((20000 + RANDOM % 10000)) # below the usual ephemeral ports (32768-)

accepts() { # port: true when something accepts connections on it
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() { # sets port to one nothing listens on
    local tries
    for ((tries = 0; tries < 100; tries++)); do
        port=$port_next
        port_next=$((port_next >= 31999 ? 20000 : port_next + 1))
        if ! accepts "$port"; then return 0; fi
    done
    return 1
}

alive() { # pid: true while it runs (a zombie has ended)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

nginx_conf() { # dir port workers: writes dir/nginx.conf
    local dir=$1 port=$2 workers=$3 user=""
    # As root, nginx runs its workers as nobody, who may not enter the
    # private temporary folder; they need nothing a root worker could misuse.
    if [[ $(id -u) == 0 ]]; then user="user root;"; fi
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $workers;
$user
error_log $dir/error.log;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    # nginx creates its temporary folders at start, wherever the package
    # put them (/var/lib/nginx): here instead, so no root is needed
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        location / {
            default_type text/plain;
            return 200 "Hello, World!";
        }
    }
}
EOF
}

# start_server BENCH SERVER WORKERS: starts it on a free port in a session of
# its own (so a stop reaches its children: nginx's workers) and waits until it
# accepts; sets port and srv_pid, or srv_why and returns false.
start_server() {
    local b=$1 s=$2 w=$3 prog i cmd
    prog=$(server_prog "$b" "$s")
    if ! free_port; then
        srv_why="no free port"
        return 1
    fi
    if [[ $s == nginx ]]; then
        nginx_conf "$tmp/nginx-$port" "$port" "$w"
        cmd=("$prog" -c "$tmp/nginx-$port/nginx.conf" -p "$tmp/nginx-$port" -e "$tmp/nginx-$port/error.log")
    else
        cmd=("$prog" -p "$port" -w "$w")
    fi
    setsid "${cmd[@]}" >"$tmp/server.out" 2>"$tmp/server.err" </dev/null &
    srv_pid=$!
    for ((i = 0; i < 100; i++)); do
        if ! alive "$srv_pid"; then
            local rc=0 why
            wait "$srv_pid" || rc=$?
            srv_pid=""
            why=$(grep -v '^$' "$tmp/server.err" | tail -n1 || true)
            if [[ $s == nginx && -z $why ]]; then why=$(tail -n1 "$tmp/nginx-$port/error.log" 2>/dev/null || true); fi
            srv_why="exited at start with status $rc${why:+: ${why:0:100}}"
            return 1
        fi
        if accepts "$port"; then return 0; fi
        sleep 0.1
    done
    srv_why="not accepting on port $port after 10 s"
    stop_server || true
    return 1
}

# stop_server: SIGTERM, SIGKILL to its whole session after 5 s; sets stop_rc
# to its exit status and stop_why when that is not 0.
stop_server() {
    local i
    stop_why=""
    kill -TERM "$srv_pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$srv_pid" || break
        sleep 0.1
    done
    if alive "$srv_pid"; then stop_why="still running 5 s after SIGTERM: killed"; fi
    # Whatever is left of its session goes too, while the zombie leader keeps
    # the group's number from being reused.
    kill -KILL -- "-$srv_pid" 2>/dev/null || true
    stop_rc=0
    wait "$srv_pid" 2>/dev/null || stop_rc=$?
    if [[ -z $stop_why && $stop_rc != 0 ]]; then stop_why="exit status $stop_rc after SIGTERM"; fi
    srv_pid=""
    [[ -z $stop_why ]]
}

# check_http PORT: prints why one GET / is not answered right, or nothing
check_http() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || { echo "cannot connect"; exit 0; }
        printf 'GET /net-check HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' >&3
        IFS= read -r -t 5 status <&3 || { echo "no answer to GET within 5 s"; exit 0; }
        status=${status%$'\r'}
        type="" length=""
        while IFS= read -r -t 5 line <&3; do
            line=${line%$'\r'}
            [[ -n $line ]] || break
            case "${line,,}" in
                content-type:*) type=${line#*:} ;;
                content-length:*) length=${line#*:} ;;
            esac
        done
        body=""
        IFS= read -r -t 5 -N 13 body <&3 || true
        if [[ ! $status =~ ^HTTP/1\.[01]\ 200 ]]; then
            echo "answered '${status:0:40}' to GET"
        elif [[ ${type// /} != text/plain* ]]; then
            echo "Content-Type '${type# }', not text/plain"
        elif [[ ${length// /} != 13 ]]; then
            echo "Content-Length '${length# }', not 13"
        elif [[ $body != "Hello, World!" ]]; then
            echo "body '${body:0:20}', not 'Hello, World!'"
        fi
    ) 2>/dev/null
}

# check_echo PORT: prints why one message does not come back, or nothing
check_echo() {
    (
        msg="net.sh echo check 0123456789"
        exec 3<>"/dev/tcp/127.0.0.1/$1" || { echo "cannot connect"; exit 0; }
        printf '%s' "$msg" >&3
        back=""
        IFS= read -r -t 5 -N ${#msg} back <&3 || true
        if [[ $back != "$msg" ]]; then echo "sent '$msg', got back '${back:0:40}'"; fi
    ) 2>/dev/null
}

to_us() { # a wrk latency (1.23ms, 456.00us, 1.20s, 1.00m) in microseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 1; else if (u == "ms") f = 1e3; else if (u == "s") f = 1e6
        else if (u == "m") f = 6e7; else if (u == "h") f = 3.6e9; else exit 1
        printf "%.1f\n", n * f }'
}

# load BENCH PORT: one load run; sets rps and p99 (us), or load_why and false
load() {
    local b=$1 port=$2 rc=0 errors
    load_warn=""
    case "$b" in
        http)
            timeout $((seconds + 30)) wrk -t"$wrk_threads" -c"$wrk_conns" -d"${seconds}s" --latency \
                "http://127.0.0.1:$port/" >"$tmp/load.out" 2>"$tmp/load.err" || rc=$?
            rps=$(awk '/^Requests\/sec:/ { print $2 }' "$tmp/load.out")
            p99=$(awk '$1 == "99%" { print $2 }' "$tmp/load.out")
            p99=$(to_us "$p99" 2>/dev/null) || p99=""
            errors=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$tmp/load.out")
            if [[ -n $errors ]]; then
                load_why="$errors answers were not 200"
                return 1
            fi
            # wrk counts only whole answers; errors say the server dropped some
            errors=$(sed -n 's/^ *Socket errors: *//p' "$tmp/load.out")
            if [[ -n $errors ]]; then load_warn="socket errors: $errors"; fi
            ;;
        echo)
            timeout $((seconds + 30)) "$peer_dir/echo-load" -p "$port" -c "$echo_conns" -d "$seconds" \
                >"$tmp/load.out" 2>"$tmp/load.err" || rc=$?
            rps=$(awk '$1 == "rps" { print $2 }' "$tmp/load.out")
            p99=$(awk '$1 == "p99_us" { print $2 }' "$tmp/load.out")
            ;;
    esac
    if ((rc != 0)) || [[ -z $rps || -z $p99 ]]; then
        local why
        why=$(grep -v '^$' "$tmp/load.err" | tail -n1 || true)
        if ((rc == 124)); then why="timed out"; fi
        load_why="load exit $rc${why:+: ${why:0:100}}"
        if ((rc == 0)); then load_why="no figures from the load generator"; fi
        return 1
    fi
}

# ---------------------------------------------------------------------------
# Running.

declare -A weft_state # bench -> ok | missing | failed
declare -A notes      # "bench:server@workers" -> its '#' lines from its first good run
declare -A warns      # "bench:server@workers" -> what went wrong but left figures
declare -A nfailed    # "bench:server@workers" -> runs that gave no figures
benches_run=()

record() { # bench server@workers value unit
    printf 'result %s %s %s %s\n' "$@" | tee -a "$results" >>"$tmp/results"
}

fail_run() { # key why
    failed[$1]=$2
    nfailed[$1]=$((${nfailed[$1]:-0} + 1))
    note "#   $1 failed: $2"
    if [[ $1 == *:weft@* ]]; then weft_state[${1%%:*}]=failed; fi
}

# run_one BENCH SERVER WORKERS: one start, check, load and stop
run_one() {
    local b=$1 s=$2 w=$3 key="$1:$2@$3" why
    if ! start_server "$b" "$s" "$w"; then
        fail_run "$key" "$srv_why"
        return
    fi
    case "$b" in
        http) why=$(check_http "$port") ;;
        echo) why=$(check_echo "$port") ;;
    esac
    if [[ -n $why ]]; then
        stop_server || true
        fail_run "$key" "wrong answer: $why"
        return
    fi
    if ! load "$b" "$port"; then
        stop_server || true
        fail_run "$key" "$load_why"
        return
    fi
    record "$b" "$s@$w" "$rps" "$(if [[ $b == http ]]; then echo req/s; else echo rt/s; fi)"
    record "$b-p99" "$s@$w" "$p99" us
    [[ -n ${notes[$key]+set} ]] || notes[$key]=$(grep '^#' "$tmp/server.out" || true)
    if [[ -n $load_warn ]]; then warns[$key]=$load_warn; fi
    if ! stop_server; then
        warns[$key]=$stop_why
        note "#   $key: $stop_why"
        if [[ $s == weft ]]; then weft_state[$b]=failed; fi
    fi
}

# why a server is not run at all, or nothing
unavailable() { # bench server
    local b=$1 s=$2 prog p
    prog=$(server_prog "$b" "$s")
    case "$s" in
        weft) [[ -x $prog ]] || echo "skipped: $prog not built" ;;
        nginx) [[ -x $prog ]] || echo "nginx not found (bench/install-peers.sh installs it)" ;;
        *)
            p=${prog##*/}
            if [[ -n ${failed[$p]:-} ]]; then echo "${failed[$p]}"; elif [[ ! -x $prog ]]; then echo "$prog missing"; fi
            ;;
    esac
}

declare -A skip_bench # bench -> why it is not run
for b in "${benches[@]}"; do
    if [[ $b == http ]] && ! command -v wrk >/dev/null; then
        skip_bench[$b]="wrk is missing (bench/install-peers.sh installs it)"
    elif [[ $b == echo && -n ${failed[echo-load]:-} ]]; then
        skip_bench[$b]="echo-load did not build: ${failed[echo-load]}"
    fi
    if [[ -n ${skip_bench[$b]:-} ]]; then
        note "# $b: skipped: ${skip_bench[$b]}"
        continue
    fi
    benches_run+=("$b")
    weft_state[$b]=ok
    why=$(unavailable "$b" weft)
    if [[ -n $why ]]; then
        weft_state[$b]=missing
        note "# $b: weft $why (build it first, or set WEFT_${b^^})"
    fi
done

for ((r = 1; r <= runs; r++)); do
    for b in "${benches_run[@]}"; do
        note "# $b: run $r of $runs"
        for s in $(bench_servers "$b"); do
            [[ -z $(unavailable "$b" "$s") ]] || continue
            for w in "${workers_list[@]}"; do
                note "#   $s@$w"
                run_one "$b" "$s" "$w"
            done
        done
    done
done

# ---------------------------------------------------------------------------
# Tables.

fmt() { # value: three significant digits or so
    awk -v v="$1" 'BEGIN {
        if (v >= 100) printf "%.0f", v; else if (v >= 10) printf "%.1f", v; else printf "%.2f", v }'
}

median() { # bench server@workers: "n median", or nothing without results
    awk -v b="$1" -v i="$2" '$2 == b && $3 == i { print $4 }' "$tmp/results" 2>/dev/null | sort -g |
        awk '{ v[NR] = $1 }
             END { if (NR == 0) exit
                   print NR, (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

best() { # bench server: "median server@workers" of its best worker count, or nothing
    local b=$1 s=$2 w m out=""
    for w in "${workers_list[@]}"; do
        m=$(median "$b" "$s@$w" | cut -d' ' -f2)
        [[ -n $m ]] || continue
        if [[ -z $out ]] || awk -v a="$m" -v b="${out%% *}" 'BEGIN { exit !(a > b) }'; then
            out="$m $s@$w"
        fi
    done
    echo "$out"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b }'; }

row() { printf '%-14s %10s %10s %6s  %s\n' "$@"; }

touch "$tmp/results"
printf '\n'
for b in "${benches[@]}"; do
    if [[ -n ${skip_bench[$b]:-} ]]; then
        printf '%s: skipped: %s\n\n' "$b" "${skip_bench[$b]}"
        continue
    fi
    if [[ $b == http ]]; then unit=req/s; else unit=rt/s; fi
    printf '%s: %s; median of %s\n\n' "$b" "$(bench_title "$b")" "$( ((runs == 1)) && echo "1 run" || echo "$runs runs")"
    weft_best=$(best "$b" weft)
    row server@workers "$unit" "p99 us" runs "weft best / this"
    for s in $(bench_servers "$b"); do
        gone=$(unavailable "$b" "$s")
        for w in "${workers_list[@]}"; do
            key="$b:$s@$w"
            if [[ -n $gone ]]; then
                if [[ $s == weft ]]; then row "$s@$w" - - - "$gone"; else row "$s@$w" - - - "failed ($gone)"; fi
                continue
            fi
            m=$(median "$b" "$s@$w")
            if [[ -z $m ]]; then
                row "$s@$w" - - "0/$runs" "failed (${failed[$key]:-no result})"
                continue
            fi
            read -r n rate <<<"$m"
            p99=$(median "$b-p99" "$s@$w" | cut -d' ' -f2)
            x="-"
            if [[ -n $weft_best ]]; then x="$(ratio "${weft_best%% *}" "$rate")x"; fi
            extra=""
            if ((n < runs)); then extra="  ($((runs - n)) failed: ${failed[$key]:-?})"; fi
            if [[ -n ${warns[$key]:-} ]]; then extra="$extra  (${warns[$key]})"; fi
            row "$s@$w" "$(fmt "$rate")" "$(fmt "$p99")" "$n/$runs" "$x$extra"
        done
    done

    if [[ $b == http ]]; then
        printf '\ngoals: weft at its best worker count against each peer at its own best (req/s)\n'
        for goal in go:2 libuv:1.0 nginx:0.9; do
            s=${goal%%:*} want=${goal#*:}
            peer_best=$(best "$b" "$s")
            label=$(printf 'weft vs %-6s >= %sx' "$s" "$want")
            if [[ -z $weft_best ]]; then
                printf '  %-22s  no weft figure (%s)\n' "$label" "${weft_state[$b]}"
            elif [[ -z $peer_best ]]; then
                printf '  %-22s  no %s figure\n' "$label" "$s"
            else
                x=$(ratio "${weft_best%% *}" "${peer_best%% *}")
                verdict="not met"
                if awk -v x="$x" -v w="$want" 'BEGIN { exit !(x >= w) }'; then verdict=met; fi
                printf '  %-22s  %5sx  %-7s  (%s %s, %s %s)\n' "$label" "$x" "$verdict" \
                    "${weft_best#* }" "$(fmt "${weft_best%% *}")" "${peer_best#* }" "$(fmt "${peer_best%% *}")"
            fi
        done
    fi

    # what each server said about its set-up
    for s in $(bench_servers "$b"); do
        for w in "${workers_list[@]}"; do
            if [[ -n ${notes[$b:$s@$w]:-} ]]; then
                printf '%s\n' "${notes[$b:$s@$w]}" | sed "s/^# */    $s@$w: /"
            fi
        done
    done
    if [[ $b == http && -x $NGINX ]]; then
        printf '    nginx: %s, worker_processes = workers, return 200 from the config\n' \
            "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    fi
    printf '\n'
done

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
mem=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
printf 'machine: %s CPUs, %s, %s RAM, %s %s %s\n' "$(nproc)" "${cpu:-unknown CPU}" "${mem:-?}" \
    "$(uname -s)" "$(uname -r)" "$(uname -m)"
printf 'tools:   %s, %s, %s, libuv %s\n' "$(gcc --version 2>/dev/null | head -n1 || echo 'no gcc')" \
    "$(go version 2>/dev/null || echo 'no go')" \
    "$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $1, $2 }')" \
    "$(pkg-config --modversion libuv 2>/dev/null || echo '?')"
printf 'date:    %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
printf 'command: %s\n' "$command_line"
printf 'raw:     %s\n' "$results"

for b in "${benches_run[@]}"; do
    if [[ ${weft_state[$b]} == failed ]]; then exit 1; fi
done
exit 0
