#!/usr/bin/env bash
# run-clients.sh: the clients against a real daemon, on loopback only.
#
# Starts $SOCKD_BIN on a temporary socket and loopback peers (TCP, UDP and
# Unix echo servers and a greeting server in python3, an `openssl s_server
# -www` and a TLS echo with a certificate made at run time), then runs every
# sockctl mode ($SOCKCTL_BIN), the Python unittest suite
# (contrib/python/test_sockd.py), the Lua suite (contrib/lua/test_sockd.lua)
# and the four examples in contrib/examples
# (echo-client.c is compiled against the build's libsockd-client.a; the build
# directory is $BUILD_DIR, else the parent of $SOCKCTL_BIN's directory).
#
# RUN_CLIENTS_TESTS="name ..." runs only those tests.
#
# Prints one "[       OK ] name" or "[  FAILED  ] name" line per test (the
# form ./dev counts), then "N passed, N failed"; exits 1 on any failure, 77
# (skip) when python3 is missing, 99 when the setup fails. Every wait is
# bounded; nothing but 127.0.0.1 and temporary paths is used.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top_srcdir=$(cd "$here/../.." && pwd)
: "${SOCKD_BIN:?SOCKD_BIN is not set (path of the sockd binary)}"
: "${SOCKCTL_BIN:?SOCKCTL_BIN is not set (path of the sockctl binary)}"
BUILD_DIR=${BUILD_DIR:-$(cd "$(dirname "$SOCKCTL_BIN")/.." && pwd)}
T=${TEST_TIMEOUT:-60} # seconds: bound of each test

export PYTHONDONTWRITEBYTECODE=1 # the source tree may be read-only
if ! command -v python3 >/dev/null; then
    echo "python3 not found: skipping the client tests"
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sockd-clients.XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

setup_fail() {
    echo "setup failed: $*" >&2
    [ -f "$tmp/sockd.log" ] && tail -n 20 "$tmp/sockd.log" >&2
    exit 99
}

# wait_for SECONDS CMD...: poll CMD until it succeeds (20 ms steps).
wait_for() {
    local limit=$(($1 * 50))
    shift
    for ((i = 0; i < limit; i++)); do
        "$@" 2>/dev/null && return 0
        sleep 0.02
    done
    return 1
}

# ---------------------------------------------------------------- setup

export SOCKD_SOCKET=$tmp/sockd.sock
export XDG_RUNTIME_DIR=$tmp/xdg # sockctl's state files of parked sockets
mkdir -m 700 "$XDG_RUNTIME_DIR"
"$SOCKD_BIN" -s "$SOCKD_SOCKET" -v >"$tmp/sockd.log" 2>&1 &
pids+=($!)
wait_for 10 "$SOCKCTL_BIN" -t 1000 call daemon.ping >/dev/null || setup_fail "sockd did not start"

have_openssl=0
if command -v openssl >/dev/null; then
    mkcert() { # mkcert NAME: a self-signed certificate for localhost and 127.0.0.1
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$tmp/$1.key" -out "$tmp/$1.pem" -days 1 -subj /CN=localhost \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
    }
    mkcert server && mkcert other && have_openssl=1
fi

cat >"$tmp/peers.py" <<'EOF'
# Loopback peers for run-clients.sh; writes NAME=PORT lines to argv[1] when ready.
import os, socket, ssl, sys, threading

def serve_stream(lsock, handler):
    def loop():
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(conn,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()

def echo(conn):
    with conn:
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass

def greet(conn):  # says hello, ends its side, waits for the client's end
    with conn:
        try:
            conn.sendall(b"hello from the greeter\n")
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
        except OSError:
            pass

def tls_echo(ctx):
    def handler(conn):
        try:
            s = ctx.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                s.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        try:
            s.unwrap()  # close_notify: the end of the stream, clean
        except (OSError, ssl.SSLError, ValueError):
            pass
        s.close()
    return handler

def tcp_listener():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(512)
    return s

ports = {}
for name, handler in (("TCP_PORT", echo), ("GREET_PORT", greet)):
    s = tcp_listener()
    ports[name] = s.getsockname()[1]
    serve_stream(s, handler)

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
ports["UDP_PORT"] = u.getsockname()[1]
def udp_loop():
    while True:
        data, addr = u.recvfrom(65536)
        u.sendto(data, addr)
threading.Thread(target=udp_loop, daemon=True).start()

for path in (sys.argv[2], "\0" + sys.argv[3]):
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(64)
    serve_stream(s, echo)

if len(sys.argv) > 5:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    s = tcp_listener()
    ports["TLS_ECHO_PORT"] = s.getsockname()[1]
    serve_stream(s, tls_echo(ctx))

with open(sys.argv[1] + ".new", "w") as f:
    for k, v in ports.items():
        f.write("%s=%d\n" % (k, v))
os.rename(sys.argv[1] + ".new", sys.argv[1])
threading.Event().wait()
EOF
UNIX_PATH=$tmp/echo.sock
ABSTRACT=sockctl-test-$$
peer_args=("$tmp/ports" "$UNIX_PATH" "$ABSTRACT")
[ $have_openssl = 1 ] && peer_args+=("$tmp/server.pem" "$tmp/server.key")
python3 "$tmp/peers.py" "${peer_args[@]}" 2>"$tmp/peers.log" &
pids+=($!)
wait_for 10 test -f "$tmp/ports" || setup_fail "loopback peers did not start"
# shellcheck disable=SC1091
. "$tmp/ports"
export TCP_PORT UDP_PORT GREET_PORT UNIX_PATH ABSTRACT

WWW_PORT=
if [ $have_openssl = 1 ]; then
    # s_server wants a fixed port: ask the kernel for a free one (retry if it was taken)
    for _ in 1 2 3; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        (cd "$tmp" && exec openssl s_server -quiet -accept "127.0.0.1:$port" -cert server.pem \
            -key server.key -www </dev/null >"$tmp/www.log" 2>&1) &
        p=$!
        if wait_for 5 python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()"; then
            pids+=("$p")
            WWW_PORT=$port
            break
        fi
        kill $p 2>/dev/null
    done
    [ -n "$WWW_PORT" ] || setup_fail "openssl s_server did not start"
fi
export WWW_PORT TLS_ECHO_PORT="${TLS_ECHO_PORT:-}" tmp top_srcdir BUILD_DIR have_openssl

# ---------------------------------------------------------------- helpers

S() { timeout "$T" "$SOCKCTL_BIN" "$@"; }
# expect_rc WANT CMD...: run CMD, fail unless its exit status is WANT.
expect_rc() {
    local want=$1 rc=0
    shift
    "$@" || rc=$?
    if [ "$rc" != "$want" ]; then
        echo "expected exit status $want, got $rc: $*"
        return 1
    fi
}
# has FILE TEXT: fail unless FILE contains TEXT.
has() {
    grep -qF -- "$2" "$1" || {
        echo "$1 lacks: $2"
        echo "---- $1:"
        head -c 2000 "$1"
        echo
        return 1
    }
}
# same A B: fail unless the files are equal.
same() {
    cmp "$1" "$2" || {
        echo "---- $1:"
        head -c 500 "$1"
        echo
        echo "---- $2:"
        head -c 500 "$2"
        echo
        return 1
    }
}
need_tls() {
    [ "$have_openssl" = 1 ] || {
        echo "openssl not found"
        return 77
    }
}
export -f S expect_rc has same need_tls

pass=0
fail=0
skip=0
# run NAME: run the function test_NAME in a subshell, bounded, -e on; report.
run() {
    local name=$1 rc=0 log="$tmp/test-$1.log"
    (
        cd "$tmp" && set -e ${RUN_CLIENTS_TRACE:+-x} && "test_$name"
    ) >"$log" 2>&1 &
    local p=$!
    # bound the test as a whole
    (sleep "$((T * 3))" && kill -TERM $p 2>/dev/null) &
    local killer=$!
    wait $p || rc=$?
    kill $killer 2>/dev/null
    wait $killer 2>/dev/null
    if [ $rc = 0 ]; then
        echo "[       OK ] $name"
        pass=$((pass + 1))
    elif [ "${2:-}" = known ]; then
        echo "[  KNOWN   ] $name: fails (status $rc) on a known issue; see the test"
        sed 's/^/    /' "$log" | tail -n 5
        skip=$((skip + 1))
    elif [ $rc = 77 ]; then
        echo "[  SKIPPED ] $name: $(tail -n 1 "$log")"
        skip=$((skip + 1))
    else
        echo "[  FAILED  ] $name (status $rc)"
        sed 's/^/    /' "$log" | tail -n 40
        fail=$((fail + 1))
    fi
}

# ---------------------------------------------------------------- tests

test_help_and_usage() {
    S -h >help.out
    for verb in call watch shell cat open send recv close ls stats run 'Exit status' '--line'; do
        has help.out "$verb"
    done
    expect_rc 2 S bogus-command
    expect_rc 2 S
    expect_rc 2 S cat not-a-url
    expect_rc 2 S cat tcp://127.0.0.1
    expect_rc 2 S recv 0123456789abcdef0123456789abcdef 0
    expect_rc 2 S send not-an-id hello
    expect_rc 2 S open --keep 0 tcp://127.0.0.1:1
    expect_rc 2 S open --frobnicate tcp://127.0.0.1:1
    expect_rc 2 S call daemon.ping '{bad json'
    S -V | grep -q '^sockctl '
}

test_unreachable() {
    expect_rc 3 S -s "$tmp/no-such.sock" call daemon.ping 2>err
    has err "cannot connect"
    expect_rc 3 S -s "$tmp/no-such.sock" cat "tcp://127.0.0.1:$TCP_PORT" </dev/null
    expect_rc 3 S -s "$tmp/no-such.sock" ls
}

test_call() {
    [ "$(S call daemon.ping)" = '{}' ]
    [ "$(S --json call daemon.ping)" = '{"result":{}}' ]
    S call daemon.hello '{"client":"run-clients"}' >hello.out
    has hello.out '"server":"sockd"'
    echo '{"type":"tcp"}' | S call socket.open - | grep -q '"socket":'
    expect_rc 1 S call no.such.method 2>err
    has err '-32601'
    expect_rc 1 S --json call socket.info '{"socket":999999}' >out 2>err
    has out '{"error":'
    has err '-32001'
}

test_watch() {
    # handles are never reused and count up: the next one is predictable here
    k=$(S call socket.open '{"type":"tcp"}' | sed 's/[^0-9]//g')
    s=$((k + 1))
    S watch --count 1 --timeout 5000 socket.open '{"type":"tcp"}' \
        socket.connect "{\"socket\":$s,\"address\":\"127.0.0.1:$TCP_PORT\"}" >watch.out
    [ "$(sed -n 1p watch.out)" = "{\"socket\":$s}" ]
    [ "$(sed -n 2p watch.out)" = '{}' ]
    sed -n 3p watch.out | grep -q '"method":"socket.connected"'
    [ "$(wc -l <watch.out)" = 3 ]
    # idle end: 0 without --count, 4 when --count was not reached
    expect_rc 0 S watch --timeout 200
    expect_rc 4 S watch --count 1 --timeout 200
    expect_rc 1 S watch --timeout 200 socket.info '{"socket":999999}'
}

test_shell() {
    {
        echo '{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}'
        echo '{"jsonrpc":"2.0","method":"daemon.ping"}' # a notification: no answer
        echo ''
        echo 'not json'
        echo '[{"jsonrpc":"2.0","id":2,"method":"daemon.ping"},{"jsonrpc":"2.0","method":"daemon.ping"}]'
        echo '{"jsonrpc":"2.0","id":"three","method":"socket.open","params":{"type":"tcp"}}'
    } | S shell >shell.out
    [ "$(wc -l <shell.out)" = 4 ]
    [ "$(sed -n 1p shell.out)" = '{"jsonrpc":"2.0","id":1,"result":{}}' ]
    sed -n 2p shell.out | grep -q '"code":-32700'
    [ "$(sed -n 3p shell.out)" = '[{"jsonrpc":"2.0","id":2,"result":{}}]' ]
    sed -n 4p shell.out | grep -q '"id":"three","result":{"socket":'

    # notifications come through too; --linger waits for them after the input ended
    k=$(S call socket.open '{"type":"tcp"}' | sed 's/[^0-9]//g')
    s=$((k + 1))
    printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"socket.open","params":{"type":"tcp"}}' \
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"socket.connect\",\"params\":{\"socket\":$s,\"address\":\"127.0.0.1:$TCP_PORT\"}}" \
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"socket.send\",\"params\":{\"socket\":$s,\"text\":\"hi\"}}" \
        "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"socket.recv\",\"params\":{\"socket\":$s,\"length\":2}}" |
        S shell --linger 1000 >shell2.out
    has shell2.out '"method":"socket.connected"'
    has shell2.out '"method":"socket.sent"'
    grep '"method":"socket.received"' shell2.out | grep "\"socket\":${s}[,}]" | grep -q '"data":"aGk="'

    # a coprocess session, as in bash scripts
    coproc SH { S shell; }
    local in=${SH[1]} out=${SH[0]} pid=$SH_PID line
    echo '{"jsonrpc":"2.0","id":7,"method":"daemon.ping"}' >&"$in"
    IFS= read -r -t 10 line <&"$out"
    [ "$line" = '{"jsonrpc":"2.0","id":7,"result":{}}' ]
    echo '{"jsonrpc":"2.0","id":8,"method":"nope"}' >&"$in"
    IFS= read -r -t 10 line <&"$out"
    [[ $line == *'"id":8,"error":{"code":-32601'* ]]
    exec {in}>&-
    wait "$pid"
}

test_cat_tcp() {
    echo hello | S cat "tcp://127.0.0.1:$TCP_PORT" >out
    [ "$(cat out)" = hello ]
    head -c 3000000 /dev/urandom >big.in
    S cat "tcp://127.0.0.1:$TCP_PORT" <big.in >big.out
    same big.in big.out
    # the peer ends first while stdin is still open: cat ends, status 0
    S cat "tcp://127.0.0.1:$GREET_PORT" < <(sleep $((T * 2))) >greet.out
    has greet.out "hello from the greeter"
    # --wait: stop after the input ended and the peer stayed quiet
    echo quiet | S cat --no-shutdown --wait 2000 "tcp://127.0.0.1:$TCP_PORT" >out
    [ "$(cat out)" = quiet ]
}

test_cat_failures() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    expect_rc 1 S cat "tcp://127.0.0.1:$port" </dev/null 2>err
    has err connect_rejected
    expect_rc 1 S cat "unix:$tmp/nothing-here.sock" </dev/null 2>err
    expect_rc 1 S cat "tcp://[::1:$port" </dev/null 2>err
}

test_cat_udp() {
    printf 'one\ntwo\nthree' | S cat --wait 2000 "udp://127.0.0.1:$UDP_PORT" >out
    printf 'one\ntwo\nthree' >want
    same want out
}

test_cat_unix() {
    echo "over a path" | S cat "unix:$UNIX_PATH" >out
    [ "$(cat out)" = "over a path" ]
    echo "abstract" | S cat "unix:@$ABSTRACT" >out
    [ "$(cat out)" = "abstract" ]
}

test_cat_tls() {
    need_tls || return
    printf 'GET / HTTP/1.0\r\n\r\n' | S cat --ca server.pem "tls://localhost:$WWW_PORT" >www.out
    has www.out "HTTP/1.0 200 ok"
    has www.out "Ciphers supported"
    printf 'GET / HTTP/1.0\r\n\r\n' | S cat --ca server.pem "tls://127.0.0.1:$WWW_PORT" >www.out
    has www.out "HTTP/1.0 200 ok"
    # a TLS echo server that waits for our end: keep ours open, stop when it is quiet
    echo "tls echo" | S cat --ca server.pem --alpn x-test --no-shutdown --wait 2000 \
        "tls://localhost:$TLS_ECHO_PORT" >out
    [ "$(cat out)" = "tls echo" ]
    # wrong CA, no CA (system store), then --insecure
    expect_rc 1 S cat --ca other.pem "tls://localhost:$WWW_PORT" </dev/null 2>err
    has err tls_handshake_failed
    expect_rc 1 S cat "tls://localhost:$WWW_PORT" </dev/null 2>err
    has err tls_handshake_failed
    printf 'GET / HTTP/1.0\r\n\r\n' | S cat --insecure "tls://127.0.0.1:$WWW_PORT" >www.out
    has www.out "HTTP/1.0 200 ok"
    # the name must match the certificate
    expect_rc 1 S cat --ca server.pem --server-name wrong.example "tls://127.0.0.1:$WWW_PORT" </dev/null 2>err
    has err tls_handshake_failed
}

# Known daemon issue: when the client's end of a TLS socket.pipe reaches EOF,
# the daemon passes it on as a bare FIN, without a TLS close_notify, so the
# peer sees a truncated stream (OpenSSL: "unexpected eof while reading").
# Reported as KNOWN until that is fixed; then it passes like any test.
test_cat_tls_half_close() {
    need_tls || return
    echo "tls echo" | S cat --ca server.pem "tls://localhost:$TLS_ECHO_PORT" >out
    [ "$(cat out)" = "tls echo" ]
}

test_open_send_recv_close() {
    id=$(S open "tcp://127.0.0.1:$TCP_PORT")
    [[ $id =~ ^[0-9a-f]{32}$ ]]
    [ -f "$XDG_RUNTIME_DIR/sockctl/$id" ]
    [ "$(stat -c %a "$XDG_RUNTIME_DIR/sockctl")" = 700 ]
    S send "$id" "hello world"
    [ "$(S recv "$id" 5)" = hello ]
    [ "$(S recv --partial "$id" 100)" = " world" ]
    printf 'from stdin' | S send "$id" -
    S --json recv --timeout 5000 "$id" 10 >json.out
    has json.out '{"data":"ZnJvbSBzdGRpbg==","eof":false,"timeout":false}'
    # nothing more comes: timeout, status 4, the socket stays usable
    expect_rc 4 S recv --timeout 200 "$id" 1
    head -c 200000 /dev/urandom >blob
    S send "$id" - <blob
    S recv --timeout 10000 "$id" 200000 >blob.back
    same blob blob.back
    S ls >ls.out
    has ls.out "$id"
    has ls.out "127.0.0.1:$TCP_PORT"
    S --json ls | python3 -c "
import json, sys
rows = [r for r in json.load(sys.stdin)['sockets'] if r.get('id') == '$id']
assert len(rows) == 1 and rows[0]['parked'] and rows[0]['bytes_sent'] == 200021, rows"
    S close "$id"
    [ ! -e "$XDG_RUNTIME_DIR/sockctl/$id" ]
    expect_rc 1 S recv "$id" 1 2>err
    has err "no such socket"
    expect_rc 1 S close "$id"
}

test_recv_line() {
    id=$(S open "tcp://127.0.0.1:$TCP_PORT")
    printf 'EHLO one\r\nsecond\nthird line is long\nno end' | S send "$id" -
    S recv --until '\r\n' --timeout 5000 "$id" >l1
    printf 'EHLO one\r\n' >want1
    same want1 l1
    [ "$(S recv --line --timeout 5000 "$id")" = second ]
    S --json recv --line --timeout 5000 "$id" 5 >l3.json
    has l3.json '"data":"dGhpcmQ=","eof":false,"timeout":false,"until_missing":true'
    [ "$(S recv --line --timeout 5000 "$id")" = " line is long" ]
    expect_rc 4 S recv --line --timeout 300 "$id" >l5 # what arrived, then the timeout
    [ "$(cat l5)" = "no end" ]
    printf 'a\0\1b' | S send "$id" -
    S recv --until '\x00\x01' --timeout 5000 "$id" >l6
    printf 'a\0\1' >want6
    same want6 l6
    expect_rc 2 S recv --line --partial "$id"
    expect_rc 2 S recv --until '' "$id"
    expect_rc 2 S recv --until '0123456789abcdefX' "$id"
    expect_rc 2 S recv --until '\xZZ' "$id"
    expect_rc 2 S recv --until '\r\n' "$id" 1
    expect_rc 2 S recv "$id" # N is optional only for a line
    [ "$(S recv --timeout 5000 "$id" 1)" = b ]
    S close "$id"
}

test_open_peer_closes() {
    id=$(S open "tcp://127.0.0.1:$GREET_PORT")
    # exact recv cut short by the end of the stream: what arrived, status 0
    S recv --timeout 5000 "$id" 1000 >got
    has got "hello from the greeter"
    expect_rc 1 S recv --timeout 5000 "$id" 1 >after.out
    [ ! -s after.out ]
    expect_rc 1 S send "$id" "too late" 2>err
    has err by_peer
    S ls | grep "$id" | grep -q "closed:by_peer"
    S close "$id"
    [ ! -e "$XDG_RUNTIME_DIR/sockctl/$id" ]
}

test_open_tls_and_unix() {
    id=$(S open "unix:$UNIX_PATH")
    S send "$id" "unix bytes"
    [ "$(S recv --timeout 5000 "$id" 10)" = "unix bytes" ]
    S --json close "$id" | grep -q '"closed":"normal"'
    need_tls || return
    S --json open --ca server.pem "tls://localhost:$WWW_PORT" >open.json
    id=$(python3 -c 'import json,sys; d=json.load(open("open.json")); assert d["tls"]["verified"]; print(d["id"])')
    S send "$id" $'GET / HTTP/1.0\r\n\r\n'
    : >page
    n=0
    while S recv --partial --timeout 5000 "$id" 65536 >>page; do
        n=$((n + 1))
        [ $n -lt 1000 ]
    done
    has page "HTTP/1.0 200 ok"
    has page "Ciphers supported"
    S close "$id"
}

test_open_failures_and_keep() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    expect_rc 1 S open "tcp://127.0.0.1:$port" >out 2>err
    [ ! -s out ]
    has err connect_rejected
    # a parked socket not taken within --keep is closed by the daemon
    id=$(S open --keep 200 "tcp://127.0.0.1:$TCP_PORT")
    sleep 0.6
    expect_rc 1 S send "$id" late 2>err
    has err "no such socket"
    [ ! -e "$XDG_RUNTIME_DIR/sockctl/$id" ]
    # a token given by another program works as an ID
    token=$(timeout "$T" python3 -c "
import sys
sys.path.insert(0, '$top_srcdir/contrib/python')
import sockd
with sockd.Client() as c:
    s = sockd.Socket(c)
    s.connect('127.0.0.1:$TCP_PORT', timeout=5)
    s.send(b'given')
    print(s.give(timeout=60))")
    [ "$(S recv --timeout 5000 "$token" 5)" = given ]
    S close "$token"
}

test_stats() {
    S stats >stats.out
    has stats.out "sockets.total"
    has stats.out "uptime_ms"
    S --json stats | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["clients"] >= 1'
    S ls >ls.out
    head -n 1 ls.out | grep -q '^ID *TYPE *STATE'
}

test_python_suite() {
    SOCKD_BIN=$SOCKD_BIN timeout $((T * 3)) python3 "$top_srcdir/contrib/python/test_sockd.py" -v 2>&1 |
        tee unittest.out
    tail -n 1 unittest.out | grep -q '^OK'
}

# The Lua client's suite (./dev installs lua5.4, lua-socket and lua-cjson: their absence is a
# failure, not a skip).
need_lua() {
    command -v lua5.4 >/dev/null && lua5.4 -e 'require "socket.unix"; require "mime"; require "cjson"' || {
        echo "lua5.4 with lua-socket and lua-cjson not found (./dev installs them)"
        return 1
    }
}
export -f need_lua

test_lua_suite() {
    need_lua
    TLS_CA=$([ "$have_openssl" = 1 ] && echo "$tmp/server.pem") \
        timeout $((T * 3)) lua5.4 "$top_srcdir/contrib/lua/test_sockd.lua" 2>&1 | tee lua.out
    tail -n 1 lua.out | grep -q ' 0 failed$'
    [ "$have_openssl" != 1 ] || ! grep -q 'skip:' lua.out # with openssl every test ran
}

test_example_fanout_lua() {
    need_lua
    timeout "$T" lua5.4 "$top_srcdir/contrib/examples/fanout.lua" "127.0.0.1:$TCP_PORT" >fan.out
    has fan.out "200 connections, 200 echoed"
}

test_example_fetch_tls() {
    need_tls || return
    SOCKCTL=$SOCKCTL_BIN timeout "$T" bash "$top_srcdir/contrib/examples/fetch-tls.sh" \
        "localhost:$WWW_PORT" server.pem >body
    has body "Ciphers supported"
    ! grep -q "^HTTP/1.0" body # the header is not part of the body
    expect_rc 1 env SOCKCTL="$SOCKCTL_BIN" timeout "$T" bash "$top_srcdir/contrib/examples/fetch-tls.sh" \
        "localhost:$WWW_PORT" other.pem 2>err
    has err tls_handshake_failed
}

test_example_fanout() {
    timeout "$T" python3 "$top_srcdir/contrib/examples/fanout.py" "127.0.0.1:$TCP_PORT" >fan.out
    has fan.out "200 connections, 200 echoed"
}

# VAR as configure set it in the build's Makefile (a sanitizer build links with its
# flags). Read, not evaluated with make: make might try to remake the Makefile.
build_var() {
    sed -n "s/^$1 = //p" "$BUILD_DIR/Makefile" | head -n 1
}
export -f build_var

test_example_echo_client() {
    # the static library if the build has one, else the shared one (found at run time by rpath)
    lib=$BUILD_DIR/.libs/libsockd-client.a
    if [ ! -f "$lib" ] && [ -f "$BUILD_DIR/.libs/libsockd-client.so" ]; then
        lib="-L$BUILD_DIR/.libs -lsockd-client -Wl,-rpath,$BUILD_DIR/.libs"
    elif [ ! -f "$lib" ]; then
        echo "no libsockd-client in $BUILD_DIR/.libs"
        return 1
    fi
    cc=$(build_var CC)
    flags="$(build_var AM_CFLAGS) $(build_var CFLAGS) $(build_var JANSSON_CFLAGS)"
    libs="$(build_var LDFLAGS) $(build_var JANSSON_LIBS)"
    # shellcheck disable=SC2086
    ${cc:-cc} $flags -I"$top_srcdir/include" "$top_srcdir/contrib/examples/echo-client.c" \
        $lib ${libs:--ljansson} -o echo-client
    [ "$(timeout "$T" ./echo-client "127.0.0.1:$TCP_PORT" "hello from C")" = "hello from C" ]
    [ "$(timeout "$T" ./echo-client "$UNIX_PATH" "over unix")" = "over unix" ]
    expect_rc 2 ./echo-client
}

# Every man page is lint-clean (./dev installs mandoc: its absence is a failure, not a skip).
test_man_page() {
    local out
    command -v mandoc >/dev/null || {
        echo "mandoc not found (./dev installs it)"
        return 1
    }
    out=$(mandoc -T lint -W warning "$top_srcdir"/man/*.[0-9] 2>&1)
    [ -z "$out" ] || {
        echo "$out"
        return 1
    }
}

# The methods daemon.hello lists are exactly the method headings of sockd-protocol.7: a method
# the daemon answers is documented, and the page documents no method the daemon lacks.
test_methods_documented() {
    S --json call daemon.hello | python3 -c 'import json,sys; print("\n".join(sorted(json.load(sys.stdin)["result"]["methods"])))' >hello.methods
    sed -n 's/^\.SS \([a-z]*\.[a-z_]*\)$/\1/p' "$top_srcdir/man/sockd-protocol.7" | sort >man.methods
    [ -s hello.methods ] && [ -s man.methods ] || return 1
    diff -u man.methods hello.methods
}

# shellcheck disable=SC2046
export -f $(compgen -A function test_)

all_tests="help_and_usage unreachable call watch shell cat_tcp cat_failures cat_udp cat_unix
    cat_tls cat_tls_half_close open_send_recv_close recv_line open_peer_closes open_tls_and_unix open_failures_and_keep
    stats python_suite lua_suite example_fetch_tls example_fanout example_fanout_lua example_echo_client
    man_page methods_documented"
for t in ${RUN_CLIENTS_TESTS:-$all_tests}; do
    run "${t%%:*}" "$([[ $t == *:known ]] && echo known)"
done

if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "[  FAILED  ] daemon_alive (sockd died during the tests)"
    tail -n 20 "$tmp/sockd.log"
    fail=$((fail + 1))
fi
[ $skip = 0 ] || echo "($skip skipped)"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
