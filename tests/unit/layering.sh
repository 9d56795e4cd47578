#!/usr/bin/env bash
# layering.sh: the seam between sockets and their owner (src/sock.h, struct sock_owner).
#
# The socket layer (src/sock*.[ch] but sockctl* and sockd.c, src/transport*.c, src/tlsctx.c,
# src/tls.h) must not include ctl.h, name struct client, write JSON-RPC text or spell a
# notification's method name: it hands a struct sock_event to its owner, and notify.c writes
# the line. Only the control side (ctl.c, rpc*.c, notify.c, sockd.c) may include ctl.h.
#
# Prints one "[       OK ] name" or "[  FAILED  ] name" line per check (the form ./dev counts),
# then the files that include ctl.h; exits 1 on any failure.
set -uo pipefail

src=$(cd "$(dirname "$0")/../../src" && pwd)
cd "$src" || exit 99
fails=0

# check NAME OFFENDERS: fails with the offending lines when there are any.
check() {
    if [ -z "$2" ]; then
        echo "[       OK ] $1"
    else
        echo "[  FAILED  ] $1"
        printf '%s\n' "$2" | sed 's/^/    /'
        fails=$((fails + 1))
    fi
}

socket_layer=()
for f in sock*.c sock*.h transport*.c tlsctx.c tls.h; do
    case $f in sockctl* | sockd.c) ;; *) socket_layer+=("$f") ;; esac
done
methods='"socket\.(connected|incoming|accepted|sent|received|tls_upgraded|closed)"'

check "socket layer does not include ctl.h" "$(grep -n '#include "ctl.h"' "${socket_layer[@]}")"
check "socket layer does not name struct client" "$(grep -nw 'struct client' "${socket_layer[@]}")"
check "socket layer writes no JSON-RPC text" "$(grep -n jsonrpc "${socket_layer[@]}")"
check "socket layer spells no notification method" "$(grep -nE "$methods" "${socket_layer[@]}")"
check "only the control side includes ctl.h" \
    "$(grep -l '#include "ctl.h"' ./*.c ./*.h | sed 's|^\./||' |
        grep -vE '^(ctl\.c|rpc[a-z_]*\.c|notify\.c|sockd\.c)$')"

echo "files that include ctl.h: $(grep -l '#include "ctl.h"' ./*.c ./*.h | sed 's|^\./||' | tr '\n' ' ')"
[ "$fails" -eq 0 ] || exit 1
