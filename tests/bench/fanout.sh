# tests/bench/fanout.sh -- the fan-out group of tests/bench/run (sourced by it, not run alone).
#
# A blocking script with many connections, written the natural way with three tools:
# asyncio streams, one thread per connection, and sockd.py (tests/bench/fanout.py has
# the three clients), against the same loopback echo server (fanout_echo.c) in the same
# round, for each CONNSxROUNDSxSIZE of FANOUT_TABLE.  Uses run's helpers and state: add,
# median, cpu_ticks, per_op_us, field, die, ratio, pratio, both, below, rline, work, here,
# sockd_pid, sockd_sock, others.  Knobs: FANOUT_TABLE ("200x50x1024 1000x20x1024
# 1000x5x16384"), FANOUT_PROFILE (0; 1: one cProfile'd sockd.py run per entry after the
# rounds, its costliest functions in the notes).

FANOUT_TABLE=${FANOUT_TABLE:-"200x50x1024 1000x20x1024 1000x5x16384"}
FANOUT_PROFILE=${FANOUT_PROFILE:-0}
declare -A fan_ccpu

# fanout_check: the knobs are sane (dies otherwise)
fanout_check() {
    local e n r z
    for e in $FANOUT_TABLE; do
        IFS=x read -r n r z <<<"$e"
        case "$n$r$z" in '' | *[!0-9]*) die "FANOUT_TABLE: entries CONNSxROUNDSxSIZE, e.g. 200x50x1024" ;; esac
        [ "$n" -ge 1 ] && [ "$n" -le 5000 ] && [ "$r" -ge 1 ] && [ "$r" -le 10000 ] &&
            [ "$z" -ge 1 ] && [ "$z" -le 1048576 ] || die "FANOUT_TABLE: CONNS 1..5000, ROUNDS 1..10000, SIZE 1..1048576"
    done
    case $FANOUT_PROFILE in 0 | 1) ;; *) die "FANOUT_PROFILE is 0 or 1" ;; esac
}

# fanout_start: build and start the echo server (not pinned: each tool may use the whole
# machine); sets fan_port
fanout_start() {
    command -v python3 >/dev/null 2>&1 || die "python3 is needed for the fanout group"
    cc -O2 -Wall -o "$work/fanout_echo" "$here/fanout_echo.c"
    "$work/fanout_echo" -T 7200 >"$work/fanout_echo.out" 2>"$work/fanout_echo.log" &
    others+=($!)
    for _ in $(seq 100); do grep -q '^port=' "$work/fanout_echo.out" 2>/dev/null && break; sleep 0.05; done
    fan_port=$(sed -n 's/^port=//p' "$work/fanout_echo.out")
    [ -n "$fan_port" ] || { cat "$work/fanout_echo.log" >&2; die "fanout_echo did not start"; }
}

# fanout_run MODE ENTRY: one fanout.py run; adds seconds (and CPU us per echo: the client's
# for asyncio/threads, sockd's for sockd, whose client CPU goes to fan_ccpu)
fanout_run() {
    local mode=$1 e=$2 n r z t0 t1 out args
    IFS=x read -r n r z <<<"$e"
    args=(-m "$mode" -p "$fan_port" -n "$n" -r "$r" -z "$z" -T 600)
    [ "$mode" = sockd ] && args+=(-s "$sockd_sock")
    t0=$(cpu_ticks "$sockd_pid")
    out=$(timeout 660 python3 "$here/fanout.py" "${args[@]}") || die "fanout.py -m $mode ($e) failed"
    t1=$(cpu_ticks "$sockd_pid")
    if [ "$mode" = sockd ]; then
        add "fan$e.sockd" "$(field seconds "$out")" "$(per_op_us $((t1 - t0)) "$(field ops "$out")")"
        fan_ccpu[$e]="${fan_ccpu[$e]:-} $(awk -v c="$(field client_cpu_s "$out")" -v n="$(field ops "$out")" 'BEGIN { printf "%.1f", c * 1e6 / n }')"
    else
        add "fan$e.$mode" "$(field seconds "$out")" \
            "$(awk -v c="$(field client_cpu_s "$out")" -v n="$(field ops "$out")" 'BEGIN { printf "%.1f", c * 1e6 / n }')"
    fi
}

# fanout_round ROUND: every entry, the three modes in an order that flips every round
fanout_round() {
    local e m order
    if [ $(($1 % 2)) = 1 ]; then order="asyncio threads sockd"; else order="sockd threads asyncio"; fi
    for e in $FANOUT_TABLE; do
        for m in $order; do fanout_run "$m" "$e"; done
    done
}

# fanout_profile: one cProfile'd sockd.py run per entry (FANOUT_PROFILE=1), into fan_prof
fanout_profile() {
    local e n r z
    fan_prof=
    [ "$FANOUT_PROFILE" = 1 ] || return 0
    for e in $FANOUT_TABLE; do
        IFS=x read -r n r z <<<"$e"
        timeout 660 python3 "$here/fanout.py" -m sockd -p "$fan_port" -n "$n" -r "$r" -z "$z" \
            -s "$sockd_sock" -P "$work/fanout.$e.prof" -T 600 >/dev/null || die "fanout.py -P ($e) failed"
        fan_prof+=$'\n'"    cProfile of sockd.py, $e (wall time: includes waiting for the daemon):"$'\n'
        fan_prof+=$(sed -n '/ncalls/,$p' "$work/fanout.$e.prof" | head -n 16 | sed 's/^/      /')
    done
}

# fanout_rows: the table rows (seconds, lower is better; ratio = peer / sockd.py)
fanout_rows() {
    local e n r z
    for e in $FANOUT_TABLE; do
        IFS=x read -r n r z <<<"$e"
        row "fan-out $n x $r x $(kib "$z") s (p/s)" "asyncio streams" "fan$e.sockd" "fan$e.asyncio" 3 inv
        row "" "threads" "fan$e.sockd" "fan$e.threads" 3 inv
    done
}

# fanout_ratios: ratio lines, with the targets of 200x50x1024 (>= 1.0) and 1000x20x1024 (>= 1.5)
fanout_ratios() {
    local e n r z t
    for e in $FANOUT_TABLE; do
        IFS=x read -r n r z <<<"$e"
        case $e in 200x50x1024) t=1.0 ;; 1000x20x1024) t=1.5 ;; *) t= ;; esac
        rline "fan-out $n x $r x $(kib "$z"): sockd.py vs asyncio${t:+ (target >= $t)}" \
            "$(both "fan$e.asyncio" "fan$e.sockd")${t:+$(below "$(pratio "fan$e.asyncio" "fan$e.sockd")" "$t")}"
        rline "fan-out $n x $r x $(kib "$z"): sockd.py vs threads" "$(both "fan$e.threads" "fan$e.sockd")"
    done
}

# fanout_notes: what the rows measured
fanout_notes() {
    local e
    echo "  fan-out: tests/bench/fanout.py, CONNS connections to one echo server (fanout_echo, epoll, not pinned), ROUNDS rounds of SIZE bytes each way per connection, every echo checked;"
    echo "    timed from the first connect to the last close. asyncio: a task per connection (write + readexactly); threads: a thread per connection (sendall + recv);"
    echo "    sockd.py: one Client, Socket.many + connect(wait=False), then per round send(wait=False) on each and recv(SIZE) on each (as contrib/examples/fanout.py)."
    echo "    CPU us/op per echo: sockd column = the daemon's (from /proc); peer columns = the client process's own (user+system, all threads)."
    for e in $FANOUT_TABLE; do
        echo "    sockd.py client CPU us per echo, $e (median): $(median ${fan_ccpu[$e]:-})"
    done
    [ -z "${fan_prof:-}" ] || echo "$fan_prof"
}
