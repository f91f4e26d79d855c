#!/usr/bin/env bash
# bench/run.sh - runs weft's benchmarks side by side with their peers.
#
#     bench/run.sh [--runs N] [--quick] [bench ...]
#
# benches: switch handoff spawn parked-create parked-mem fib units
#          chan-pingpong select-pingpong wg-pingpong chan-buffered-1x1 chan-buffered-4x4 mutex pfor-sqrt pfor-tiny
#          (default: all)
#   --runs N   runs of every implementation, interleaved (default 5)
#   --quick    small counts and 3 runs: a smoke test, not figures to publish
#
# Environment:
#   BUILD       build folder (default: build at the top of the repository)
#   WEFT_BENCH  the weft program (default: $BUILD/bench/weft-bench)
#   BENCH_TIMEOUT  seconds one program may run before it counts as failed (600)
#
# Every program prints `result <bench> <impl> <value> <unit>` lines; lower is
# better.  The weft side is called as `$WEFT_BENCH [--quick] <bench>`; for
# parked-create and parked-mem, one call that prints both is enough, and a
# program that does not know the name (exit 2, no result) is asked for the
# group's name, `parked`, instead.  The peers take their count as an argument
# (bench/peers/README.md); they live in bench/peers/ and are built into
# $BUILD/bench-peers/ when their sources are newer than the binaries.  Each
# round runs weft, then every peer, so machine noise hits all sides alike;
# the tables show the median per implementation.  An implementation named
# IMPL@N ran on N workers (threads, GOMAXPROCS) and is compared with weft@N
# when there is one.  All result lines go to
# $BUILD/bench-results.txt.  Exits 0 unless the weft program itself failed: a
# missing weft program, or one that does not know a bench (exit 2, no
# result), is skipped; a peer that fails is shown as failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
command_line="bench/run.sh${*:+ $*}"
for var in WEFT_BENCH BUILD BENCH_TIMEOUT; do
    if [[ -n ${!var:-} ]]; then command_line="$var=${!var} $command_line"; fi
done

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

all_benches=(switch handoff spawn parked-create parked-mem fib units
    chan-pingpong select-pingpong wg-pingpong chan-buffered-1x1 chan-buffered-4x4 mutex pfor-sqrt pfor-tiny)
runs=""
quick=0
benches=()
while (($#)); do
    case "$1" in
        --runs)
            [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || {
                echo "run.sh: --runs needs a positive number" >&2
                exit 2
            }
            runs=$2
            shift 2
            ;;
        --runs=*)
            runs=${1#--runs=}
            [[ $runs =~ ^[1-9][0-9]*$ ]] || {
                echo "run.sh: --runs needs a positive number" >&2
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
            echo "run.sh: unknown option $1" >&2
            usage >&2
            exit 2
            ;;
        *)
            if [[ " ${all_benches[*]} " != *" $1 "* ]]; then
                echo "run.sh: unknown bench '$1' (known: ${all_benches[*]})" >&2
                exit 2
            fi
            benches+=("$1")
            shift
            ;;
    esac
done
((${#benches[@]})) || benches=("${all_benches[@]}")
if [[ -z $runs ]]; then
    if ((quick)); then runs=3; else runs=5; fi
fi

abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}
BUILD=$(abspath "${BUILD:-$root/build}")
WEFT_BENCH=$(abspath "${WEFT_BENCH:-$BUILD/bench/weft-bench}")
timeout_s=${BENCH_TIMEOUT:-600}
peer_dir=$BUILD/bench-peers
results=$BUILD/bench-results.txt
mkdir -p "$peer_dir"
: >"$results"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

note() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------------------
# What there is to run.  A group is one program run per implementation that
# may print several benches (parked prints parked-create and parked-mem).

group_of() {
    case "$1" in
        parked-create | parked-mem) echo parked ;;
        chan-buffered-1x1 | chan-buffered-4x4) echo chan-buffered ;;
        *) echo "$1" ;;
    esac
}

# "program:impl[,impl]" for each peer of a group, in table order; @N stands
# for all CPUs (nproc)
group_peers() {
    case "$1" in
        switch) echo "go-switch:go switch-boost-context:boost-context switch-boost-fiber:boost-fiber" ;;
        spawn) echo "go-spawn:go spawn-boost-fiber:boost-fiber" ;;
        parked) echo "go-parked:go parked-boost-fiber:boost-fiber" ;;
        fib) echo "go-fib:go fib-tbb:tbb fib-openmp:openmp" ;;
        units) echo "units:pthread,fork" ;;
        chan-pingpong) echo "go-chan-pingpong:go@1,go@2" ;;
        chan-buffered) echo "go-chan-buffered:go" ;;
        mutex) echo "go-mutex:go mutex-pthread:pthread,pthread-64" ;;
        pfor-sqrt) echo "pfor-sqrt-openmp:openmp@1,openmp@N pfor-sqrt-tbb:tbb@1,tbb@N" ;;
        pfor-tiny) echo "pfor-tiny-openmp:openmp-static,openmp-dynamic pfor-tiny-tbb:tbb" ;;
    esac
}

# the impls the weft program prints for a bench (more, such as weft-thread,
# are shown when they come); @N as above
weft_impls() {
    case "$1" in
        chan-pingpong) echo "weft@1 weft@2" ;;
        pfor-sqrt) echo "weft@1 weft@N" ;;
        *) echo weft ;;
    esac
}

# benches whose table ends with each implementation's speedup from 1 worker
# to all
scaling_benches=" pfor-sqrt "

# the count --quick passes (to the peers and to weft)
quick_count() {
    case "$1" in
        switch | spawn | parked) echo 100000 ;;
        handoff) echo 20000 ;;
        fib) echo 25 ;;
        units) echo 2000 ;;
        chan-pingpong) echo 50000 ;;
        chan-buffered) echo 200000 ;;
        mutex) echo 1000000 ;;
        pfor-sqrt | pfor-tiny) echo 10000000 ;;
    esac
}

bench_title() {
    local fibn=30 n=1,000,000 units="20,000 threads, 2,000 processes"
    local pp=500,000 elems=2,000,000 locks=10,000,000 dbl=100M iters=100M
    if ((quick)); then
        fibn=25 n=100,000 units="2,000 threads, 200 processes"
        pp=50,000 elems=200,000 locks=1,000,000 dbl=10M iters=10M
    fi
    case "$1" in
        switch) echo "two fibers yielding to each other on one thread: ns per round trip (A->B->A)" ;;
        handoff) echo "two fibers on two workers waking each other in turn: ns per round trip (weft only; Go's channel ping-pong comes with channels)" ;;
        spawn) echo "spawn + run + join of $n tiny tasks on all CPUs: ns per task" ;;
        parked-create) echo "$n fibers blocked at once: ns per fiber from the first spawn until all are blocked" ;;
        parked-mem) echo "$n fibers blocked at once: bytes per fiber of VmRSS + VmPTE" ;;
        fib) echo "fib($fibn) with a task per call on all CPUs: total ms" ;;
        units) echo "one unit of concurrency created and joined, doing nothing: ns each ($units)" ;;
        chan-pingpong) echo "a counter passed back and forth over two unbuffered channels by two fibers, on 1 and 2 workers: ns per round trip ($pp)" ;;
        chan-buffered-1x1) echo "$elems elements through a channel of capacity 128, 1 producer 1 consumer, all CPUs: ns per element" ;;
        chan-buffered-4x4) echo "$elems elements through a channel of capacity 128, 4 producers 4 consumers, all CPUs: ns per element" ;;
        mutex) echo "$locks lock + increment + unlock of one mutex by 64 fibers on 2 workers (pthread: 2 and 64 threads): ns per pair" ;;
        pfor-sqrt) echo "sum of sqrt over $dbl doubles, parallel reduce, on 1 worker and on all: ms" ;;
        pfor-tiny) echo "$iters iterations of a[i] += 1, passes of a parallel for over 1M ints, default grain, all CPUs: ns per iteration" ;;
    esac
}

groups=()
for b in "${benches[@]}"; do
    g=$(group_of "$b")
    [[ " ${groups[*]} " == *" $g "* ]] || groups+=("$g")
done

# ---------------------------------------------------------------------------
# Building the peers.

declare -A failed # program -> why it failed (build or run)

peer_sources() { # program: sets srcs to the files its binary depends on
    local p=$1 s=$here/peers
    case "$p" in
        go-*) srcs=("$s/go/go.mod" "$s/go/peer/peer.go" "$s/go/${p#go-}/main.go") ;;
        *-openmp | units | mutex-pthread) srcs=("$here/run.sh" "$s/peer.h" "$s/$p.c") ;;
        *) srcs=("$here/run.sh" "$s/peer.h" "$s/$p.cpp") ;;
    esac
}

build_peer() { # program: compiles it into $peer_dir, with -O3 as `make build` compiles weft
    local p=$1 s=$here/peers out=$peer_dir/$1
    case "$p" in
        go-*) (cd "$s/go" && go build -o "$out" "./${p#go-}") ;;
        switch-boost-context) g++ -O3 -o "$out" "$s/$p.cpp" -lboost_context ;;
        *-boost-fiber) g++ -O3 -pthread -o "$out" "$s/$p.cpp" -lboost_fiber -lboost_context ;;
        *-tbb) g++ -O3 -pthread -o "$out" "$s/$p.cpp" -ltbb ;;
        *-openmp) gcc -O3 -fopenmp -o "$out" "$s/$p.c" -lm ;;
        units | mutex-pthread) gcc -O3 -pthread -o "$out" "$s/$p.c" ;;
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
for g in "${groups[@]}"; do
    for entry in $(group_peers "$g"); do
        p=${entry%%:*}
        if stale "$p"; then to_build+=("$p"); fi
    done
done
if ((${#to_build[@]})); then
    if ! "$here/install-peers.sh" --check >"$tmp/check.log" 2>&1; then
        note "# some peer tools are missing:"
        sed 's/^/#   /' "$tmp/check.log" >&2
        "$here/install-peers.sh" >&2 || note "# install-peers.sh failed; the peers that need it will fail to build"
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
fi

# ---------------------------------------------------------------------------
# Running.

weft_state=ok # ok | missing | failed (in at least one group)
if [[ ! -x $WEFT_BENCH ]]; then
    weft_state=missing
    note "# $WEFT_BENCH not found: the weft side is skipped (build it first, or set WEFT_BENCH)"
fi
declare -A weft_why # group -> why the weft program failed there
declare -A notes    # "group:program" -> its '#' lines from its first good run

# run_one KEY PROGRAM ARGS...: one run; result lines for the wanted benches
# go to $results and to $tmp/last; false if the program failed, with the exit
# status in $run_rc and a line saying why in $run_why.
run_one() {
    local key=$1 rc=0
    shift
    timeout "$timeout_s" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    run_rc=$rc
    awk -v want=" ${wanted[*]} " '
        $1 == "result" && NF >= 5 && index(want, " " $2 " ") && $4 + 0 == $4 { print $1, $2, $3, $4, $5 }
    ' "$tmp/out" | tee -a "$results" >"$tmp/last"
    if ((rc != 0)); then
        local why
        why=$(grep -v '^$' "$tmp/err" | tail -n1 || true)
        if ((rc == 124)); then why="timed out after ${timeout_s}s"; fi
        run_why="exit $rc${why:+: ${why:0:100}}"
        return 1
    fi
    [[ -n ${notes[$key]+set} ]] || notes[$key]=$(grep '^#' "$tmp/out" || true)
    return 0
}

declare -A weft_name # bench -> the name the weft program answered to
# run_weft BENCH: one weft run for BENCH, under its own name or its group's
run_weft() {
    local b=$1 g names n
    g=$(group_of "$b")
    if [[ -n ${weft_name[$b]:-} ]]; then
        names=("${weft_name[$b]}")
    elif [[ $g != "$b" ]]; then
        names=("$b" "$g")
    else
        names=("$b")
    fi
    for n in "${names[@]}"; do
        if run_one "$(group_of "$b"):weft" "$WEFT_BENCH" "${quick_flag[@]}" "$n"; then
            weft_name[$b]=$n
            return 0
        fi
        # exit 2 and no result: a name it does not know; try the next one
        if ((run_rc == 2)) && [[ ! -s $tmp/last ]]; then continue; fi
        return 1
    done
    return 1
}

quick_flag=()
if ((quick)); then quick_flag=(--quick); fi
for g in "${groups[@]}"; do
    wanted=()
    for b in "${benches[@]}"; do
        if [[ $(group_of "$b") == "$g" ]]; then wanted+=("$b"); fi
    done
    count_args=()
    if ((quick)); then count_args=("$(quick_count "$g")"); fi
    for ((r = 1; r <= runs; r++)); do
        note "# $g: run $r of $runs"
        if [[ $weft_state != missing && -z ${weft_why[$g]:-} ]]; then
            # One call per wanted bench, unless an earlier call already
            # printed it (a weft program may print parked-mem along with
            # parked-create).
            : >"$tmp/weft-run"
            for b in "${wanted[@]}"; do
                if grep -q "^result $b " "$tmp/weft-run"; then continue; fi
                if ! run_weft "$b"; then
                    if ((run_rc == 2)) && [[ ! -s $tmp/last ]]; then
                        # it knows none of the names: a weft program older
                        # than the bench, not a failure
                        weft_why[$g]="skipped (not in $WEFT_BENCH)"
                        note "#   weft: $b is not in $WEFT_BENCH; skipped"
                        break
                    fi
                    weft_state=failed
                    weft_why[$g]="$b: $run_why"
                    note "#   weft failed: ${weft_why[$g]}"
                    break
                fi
                cat "$tmp/last" >>"$tmp/weft-run"
            done
        fi
        for entry in $(group_peers "$g"); do
            p=${entry%%:*}
            if [[ -n ${failed[$p]+set} && ! -x $peer_dir/$p ]]; then continue; fi
            if ! run_one "$g:$p" "$peer_dir/$p" "${count_args[@]}"; then
                failed[$p]="run: $run_why"
                note "#   $p failed: $run_why"
            fi
        done
    done
done

# ---------------------------------------------------------------------------
# Tables.

fmt() { # value: three significant digits or so
    awk -v v="$1" 'BEGIN {
        if (v >= 100) printf "%.0f", v; else if (v >= 10) printf "%.1f", v; else printf "%.2f", v }'
}

# stats BENCH IMPL: "n median min max unit", or nothing without results
stats() {
    awk -v b="$1" -v i="$2" '$2 == b && $3 == i { print $4, $5 }' "$results" | sort -g |
        awk '{ v[NR] = $1; u = $2 }
             END { if (NR == 0) exit
                   m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                   print NR, m, v[1], v[NR], u }'
}

verdict() { # peer weft: "ratio  weft Nx faster|slower|even"
    local r x word
    r=$(awk -v p="$1" -v w="$2" 'BEGIN { print p / w }')
    if awk -v r="$r" 'BEGIN { exit !(r >= 1) }'; then
        x=$(fmt "$r")
        word="weft ${x}x faster"
    else
        x=$(fmt "$(awk -v r="$r" 'BEGIN { print 1 / r }')")
        word="weft ${x}x slower"
    fi
    if [[ $x == 1.00 ]]; then word=even; fi
    printf '%-7s %s\n' "$(fmt "$r")" "$word"
}

row() { printf '%-14s %10s %-4s %-22s %s\n' "$@"; }

ncpu=$(nproc 2>/dev/null || echo 1)
declare -A impl_prog   # impl -> the program that prints it
declare -A median_of   # impl -> its median, for the bench at hand
declare -A speedup_of  # family (weft, openmp, ...) -> its speedup, for a scaling bench
printf '\n'
for b in "${benches[@]}"; do
    g=$(group_of "$b")
    printf '%s: %s; median of %s\n\n' "$b" "$(bench_title "$b")" "$( ((runs == 1)) && echo "1 run" || echo "$runs runs")"
    row impl median unit min..max "peer/weft"
    # weft, its variants (weft-thread, weft@2, ...), then each peer's impls,
    # then any impl a program printed that is not listed
    impls=()
    for i in $(weft_impls "$b"); do impls+=("${i/%@N/@$ncpu}"); done
    impl_prog=()
    while read -r i; do
        [[ " ${impls[*]} " == *" $i "* ]] || impls+=("$i")
    done < <(awk -v b="$b" '$2 == b && $3 ~ /^weft[-@]/ { print $3 }' "$results" | sort -V -u)
    for entry in $(group_peers "$g"); do
        IFS=, read -r -a list <<<"${entry#*:}"
        for i in "${list[@]}"; do
            i=${i/%@N/@$ncpu}
            [[ " ${impls[*]} " == *" $i "* ]] && continue
            impls+=("$i")
            impl_prog[$i]=${entry%%:*}
        done
    done
    while read -r i; do
        [[ " ${impls[*]} " == *" $i "* ]] || impls+=("$i")
    done < <(awk -v b="$b" '$2 == b { print $3 }' "$results" | sort -V -u)
    median_of=()
    for i in "${impls[@]}"; do
        if s=$(stats "$b" "$i") && [[ -n $s ]]; then median_of[$i]=$(echo "$s" | cut -d' ' -f2); fi
    done
    at_rows=0
    for i in "${impls[@]}"; do
        p=${impl_prog[$i]:-weft}
        s=$(stats "$b" "$i")
        if [[ -z $s ]]; then
            if [[ $p == weft ]]; then
                if [[ $weft_state == missing ]]; then
                    row "$i" - - - "skipped ($WEFT_BENCH not built)"
                else
                    case ${weft_why[$g]:-} in
                        skipped*) row "$i" - - - "${weft_why[$g]}" ;;
                        *) row "$i" - - - "failed (${weft_why[$g]:-no result line})" ;;
                    esac
                fi
            else
                row "$i" - - - "failed (${failed[$p]:-no result line})"
            fi
            continue
        fi
        read -r n median min max unit <<<"$s"
        ratio="-"
        # the weft figure to compare with: weft@N for IMPL@N when there is one
        weft_median=${median_of[weft]:-} by_at=0
        if [[ $i == *@* && -n ${median_of[weft@${i##*@}]:-} ]]; then
            weft_median=${median_of[weft@${i##*@}]}
            by_at=1
        fi
        if [[ $i != weft && $i != weft@* && -n $weft_median ]] &&
            awk -v w="$weft_median" -v m="$median" 'BEGIN { exit !(w > 0 && m > 0) }'; then
            ratio=$(verdict "$median" "$weft_median")
            ((at_rows += by_at)) || true
        fi
        range="$(fmt "$min")..$(fmt "$max")"
        if ((n < runs)); then
            if [[ $p == weft ]]; then why=${weft_why[$g]:-no result line}; else why=${failed[$p]:-no result line}; fi
            ratio="$ratio  ($((runs - n)) of $runs runs failed: $why)"
        fi
        row "$i" "$(fmt "$median")" "$unit" "$range" "$ratio"
    done
    if ((at_rows)); then printf '    (peer@N rows are compared with weft@N)\n'; fi
    if [[ $scaling_benches == *" $b "* ]]; then
        # each family's median on 1 worker over its median on the most
        line=""
        weft_speedup=""
        for i in "${impls[@]}"; do
            [[ $i == *@1 && -n ${median_of[$i]:-} ]] || continue
            fam=${i%@1} top=""
            for j in "${impls[@]}"; do
                if [[ $j == "$fam"@* && $j != "$i" && -n ${median_of[$j]:-} ]]; then top=$j; fi
            done
            [[ -n $top ]] || continue
            x=$(awk -v a="${median_of[$i]}" -v z="${median_of[$top]}" 'BEGIN { if (z > 0) print a / z }')
            [[ -n $x ]] || continue
            if [[ $fam == weft ]]; then weft_speedup=$x; fi
            line+="${line:+, }$fam $(fmt "$x")x (@${top##*@})"
            speedup_of[$fam]=$x
        done
        if [[ -n $line ]]; then
            printf '    speedup from 1 worker to all, median over median: %s\n' "$line"
            if [[ -n $weft_speedup ]]; then
                for fam in "${!speedup_of[@]}"; do
                    [[ $fam == weft ]] && continue
                    printf '    weft speedup / %s speedup: %s\n' "$fam" \
                        "$(fmt "$(awk -v w="$weft_speedup" -v p="${speedup_of[$fam]}" 'BEGIN { print w / p }')")"
                done | sort
            fi
        fi
        speedup_of=()
    fi
    # what each program said about its set-up
    for p in weft $(for e in $(group_peers "$g"); do echo "${e%%:*}"; done); do
        if [[ -n ${notes[$g:$p]:-} ]]; then printf '%s\n' "${notes[$g:$p]}" | sed "s/^# */    $p: /"; fi
    done
    printf '\n'
done

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
mem=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
printf 'machine: %s CPUs, %s, %s RAM, %s %s %s\n' "$(nproc)" "${cpu:-unknown CPU}" "${mem:-?}" \
    "$(uname -s)" "$(uname -r)" "$(uname -m)"
printf 'tools:   %s, %s\n' "$(gcc --version 2>/dev/null | head -n1 || echo 'no gcc')" "$(go version 2>/dev/null || echo 'no go')"
printf 'date:    %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
printf 'command: %s\n' "$command_line"
printf 'raw:     %s\n' "$results"

[[ $weft_state != failed ]]
