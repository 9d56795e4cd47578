#!/usr/bin/env bash
# Leak check of the real daemon: run integration test binaries with SOCKD_BIN pointing at a
# wrapper that starts sockd under valgrind, then read every daemon's valgrind log.
#
#   BUILD_DIR=build/plain tests/integration/valgrind-suite.sh [TEST-BINARY...]
#
# Default binaries: every tests/integration/test_* executable in $BUILD_DIR. The daemon is
# $SOCKD_REAL (default $BUILD_DIR/src/sockd). Logs go to $VG_OUT (default $BUILD_DIR/valgrind),
# one directory per binary: test.log (the test's output) and vg.PID.log (one per daemon).
#
# Leaks and test failures are reported apart. The tests' time limits are tuned for native speed;
# under valgrind the daemon is 20-50x slower, so timing tests may fail: that is reported as a test
# failure, not as a leak. A daemon the tests had to SIGKILL (a failed test's cleanup) leaves no
# leak summary; it is counted as "no summary", neither clean nor leaking. A binary passes the
# leak check when at least one of its daemons exited with a summary and none of them reports a
# definite leak or a memory error. Exit status: 1 if any binary has a definite leak or a memory
# error, 2 on a usage problem, else 0.
#
# Environment: VALGRIND (default valgrind), VG_OPTS (extra valgrind options),
# VG_TIMEOUT (seconds per binary, default 1800), FAULT_BYTES (test_faults' bulk transfer,
# default 64M here).
set -u

BUILD_DIR=${BUILD_DIR:-build/plain}
SOCKD_REAL=${SOCKD_REAL:-$BUILD_DIR/src/sockd}
VG_OUT=${VG_OUT:-$BUILD_DIR/valgrind}
VALGRIND=${VALGRIND:-valgrind}
VG_TIMEOUT=${VG_TIMEOUT:-1800}

die() { printf 'valgrind-suite: %s\n' "$*" >&2; exit 2; }

command -v "$VALGRIND" >/dev/null 2>&1 || die "$VALGRIND not found"
[ -x "$SOCKD_REAL" ] || die "no daemon at $SOCKD_REAL (set BUILD_DIR or SOCKD_REAL)"
# A libtool wrapper script would put /bin/sh under valgrind: use the real binary behind it.
if head -c 2 "$SOCKD_REAL" | grep -q '#!'; then
    d=$(dirname "$SOCKD_REAL")
    b=$(basename "$SOCKD_REAL")
    for c in "$d/.libs/lt-$b" "$d/.libs/$b"; do
        [ -x "$c" ] && SOCKD_REAL=$c && break
    done
fi
SOCKD_REAL=$(cd "$(dirname "$SOCKD_REAL")" && pwd)/$(basename "$SOCKD_REAL")

if [ $# -gt 0 ]; then
    tests=("$@")
else
    tests=()
    for f in "$BUILD_DIR"/tests/integration/test_*; do
        case $f in *.o | *.log | *.trs | *.c | *.h) continue ;; esac
        [ -f "$f" ] && [ -x "$f" ] && tests+=("$f")
    done
fi
[ ${#tests[@]} -gt 0 ] || die "no test binaries in $BUILD_DIR/tests/integration (build them first)"

# test_faults moves 1 GiB through the daemon by default: far too slow under valgrind.
export FAULT_BYTES=${FAULT_BYTES:-64M}

mkdir -p "$VG_OUT" || die "cannot create $VG_OUT"
VG_OUT=$(cd "$VG_OUT" && pwd)

leak_pass=0 leak_fail=0 unchecked=0 tests_pass=0 tests_fail=0
failed_bins=()

for t in "${tests[@]}"; do
    [ -x "$t" ] || { echo "$t: not an executable, skipped" >&2; continue; }
    name=$(basename "$t")
    out="$VG_OUT/$name"
    rm -rf "$out"
    mkdir -p "$out"
    wrapper="$out/sockd-under-valgrind"
    cat >"$wrapper" <<EOF
#!/bin/sh
exec $VALGRIND --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
    --error-exitcode=99 --num-callers=40 --log-file="$out/vg.%p.log" ${VG_OPTS:-} \\
    "$SOCKD_REAL" "\$@"
EOF
    chmod +x "$wrapper"

    printf '==> %s (daemon under valgrind)\n' "$name" >&2
    start=$(date +%s)
    SOCKD_BIN="$wrapper" timeout --signal=KILL "$VG_TIMEOUT" "$t" >"$out/test.log" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))

    # The daemons' verdicts.
    n_logs=0 n_summary=0 n_nosummary=0 def_bytes=0 def_logs=0 memerr=0
    for log in "$out"/vg.*.log; do
        [ -f "$log" ] || continue
        n_logs=$((n_logs + 1))
        if ! grep -q 'ERROR SUMMARY:' "$log"; then
            n_nosummary=$((n_nosummary + 1))
            continue
        fi
        n_summary=$((n_summary + 1))
        b=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tr -d , | head -n 1)
        if [ -n "$b" ] && [ "$b" -gt 0 ]; then
            def_bytes=$((def_bytes + b))
            def_logs=$((def_logs + 1))
        fi
        e=$(grep -cE '^==[0-9]+== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|Argument .* of function)' "$log")
        memerr=$((memerr + e))
    done

    # The tests' verdict (cmocka prints "[       OK ]" / "[  FAILED  ]" per test).
    ok=$(grep -c '^\[       OK \]' "$out/test.log")
    bad=$(grep '^\[  FAILED  \] [a-z_0-9]*$' "$out/test.log" | sort -u | wc -l)
    if [ $rc -eq 0 ]; then
        tverdict="tests: $ok passed"
    elif [ $rc -eq 137 ] && [ "$ok" -eq 0 ] && [ "$bad" -eq 0 ]; then
        tverdict="tests: killed after ${VG_TIMEOUT}s"
    else
        tverdict="tests: $ok passed, $bad failed (exit $rc)"
        # a cmocka binary that died without naming a test still failed
        [ "$bad" -eq 0 ] && bad=1
    fi
    tests_pass=$((tests_pass + ok))
    tests_fail=$((tests_fail + bad))

    if [ $def_logs -gt 0 ] || [ $memerr -gt 0 ]; then
        if [ $def_logs -gt 0 ]; then
            verdict="DEFINITE LEAK: $def_bytes bytes in $def_logs of $n_summary daemons; memory errors: $memerr"
        else
            verdict="MEMORY ERRORS: $memerr (no definite leak; $n_summary daemons checked)"
        fi
        leak_fail=$((leak_fail + 1))
        failed_bins+=("$name")
    elif [ $n_summary -eq 0 ]; then
        verdict="UNCHECKED: no daemon exited with a leak summary ($n_logs started)"
        unchecked=$((unchecked + 1))
    else
        verdict="leak-free ($n_summary daemons checked"
        [ $n_nosummary -gt 0 ] && verdict="$verdict, $n_nosummary killed without a summary"
        verdict="$verdict)"
        leak_pass=$((leak_pass + 1))
    fi
    printf '%-22s %s; %s; %ss\n' "$name" "$verdict" "$tverdict" "$secs"
    if [ "$bad" -gt 0 ] && [ $def_logs -eq 0 ]; then
        grep '^\[  FAILED  \] [a-z_0-9]*$' "$out/test.log" | sort -u | sed 's/^\[  FAILED  \]/    test failure (not a leak):/'
    fi
    # Each definite leak with its stack.
    if [ $def_logs -gt 0 ] || [ $memerr -gt 0 ]; then
        for log in "$out"/vg.*.log; do
            grep -q 'ERROR SUMMARY:' "$log" 2>/dev/null || continue
            awk '
                /are definitely lost in loss record/ || /^==[0-9]+== (Invalid|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination)/ { show = 1; print "    " FILENAME ":" }
                show && /^==[0-9]+== *$/ { show = 0; print ""; next }
                show { sub(/^==[0-9]+== /, "      "); print }
            ' "$log"
        done
    fi
done

echo "leak check: $leak_pass passed, $leak_fail failed, $unchecked unchecked"
echo "tests under valgrind: $tests_pass passed, $tests_fail failed (timing failures are expected)"
echo "logs: $VG_OUT"
if [ $leak_fail -gt 0 ]; then
    echo "definite leaks or memory errors in: ${failed_bins[*]}"
    exit 1
fi
exit 0
