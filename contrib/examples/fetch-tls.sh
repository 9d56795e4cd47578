#!/usr/bin/env bash
# fetch-tls.sh HOST:PORT CA-FILE [PATH]
#
# Fetch PATH (default /) over TLS with "GET PATH HTTP/1.0" and print the
# body, with nothing but bash and `sockctl shell` running as a coprocess:
# JSON-RPC requests go to its stdin, every line of the daemon comes back on
# its stdout. The server's certificate is verified against CA-FILE and the
# host name.
#
# The daemon is found as sockctl finds it ($SOCKD_SOCKET, ...); $SOCKCTL
# names the sockctl binary (default: sockctl on $PATH).
#
# Example:  SOCKD_SOCKET=/tmp/sockd.sock ./fetch-tls.sh localhost:4433 ca.pem
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 HOST:PORT CA-FILE [PATH]" >&2
    exit 2
fi
hostport=$1
ca_file=$2
path=${3:-/}
host=${hostport%:*}
host=${host#[}
host=${host%]}
wait_s=10 # every read from the daemon waits at most this long

die() {
    echo "fetch-tls: $*" >&2
    exit 1
}

# JSON string contents for arbitrary text (backslash, quote, control characters).
json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    printf '%s' "$s"
}

coproc SOCKD { exec "${SOCKCTL:-sockctl}" shell; }
sockd_pid=$SOCKD_PID # bash forgets SOCKD_PID once the coprocess ends
sockd_in=${SOCKD[1]}

next_id=0
notes=() # notifications read while waiting for something else, oldest first

# read_line: the next line from the daemon into $line (fails after wait_s or at its end).
read_line() {
    IFS= read -r -t "$wait_s" line <&"${SOCKD[0]}" || die "no answer from the daemon"
}

# rpc METHOD PARAMS-JSON: call and wait for the response; the result object goes to $result.
rpc() {
    next_id=$((next_id + 1))
    printf '{"jsonrpc":"2.0","id":%d,"method":"%s","params":%s}\n' "$next_id" "$1" "$2" >&"${SOCKD[1]}"
    while read_line; do
        if [[ $line == *'"method":'* ]]; then
            notes+=("$line") # a notification: keep it for note()
        elif [[ $line =~ \"id\":${next_id}[,}] ]]; then
            [[ $line == *'"error":'* ]] && die "$1: $line"
            result=${line#*\"result\":}
            return 0
        fi
    done
}

# note SOCKET METHOD...: wait for the next notification about SOCKET that is one of METHODs.
note() {
    local sock=$1 m i
    shift
    while :; do
        for i in "${!notes[@]}"; do
            line=${notes[$i]}
            for m in "$@"; do
                if [[ $line == *"\"method\":\"$m\""* && $line =~ \"socket\":${sock}[,}] ]]; then
                    unset "notes[$i]"
                    notes=("${notes[@]}")
                    return 0
                fi
            done
        done
        read_line
        notes+=("$line")
    done
}

# field NAME: the value of the string or number field NAME in $line (first match).
field() {
    if [[ $line =~ \"$1\":\"([^\"]*)\" ]] || [[ $line =~ \"$1\":([0-9]+) ]]; then
        printf '%s' "${BASH_REMATCH[1]}"
    fi
}

pem=$(<"$ca_file") || die "cannot read $ca_file"
rpc context.create "{\"verify\":true,\"ca\":\"$(json_escape "$pem")\"}"
[[ $result =~ \"context\":([0-9]+) ]] || die "no context in $result"
ctx=${BASH_REMATCH[1]}

rpc socket.open "{\"type\":\"tls\",\"context\":$ctx}"
[[ $result =~ \"socket\":([0-9]+) ]] || die "no socket in $result"
sock=${BASH_REMATCH[1]}

# server_name defaults to the host of the address: it is sent (SNI) and verified
rpc socket.connect "{\"socket\":$sock,\"address\":\"$(json_escape "$hostport")\",\"timeout_ms\":$((wait_s * 1000))}"
note "$sock" socket.connected socket.closed
[[ $line == *'"socket.closed"'* ]] && die "connect failed: $line"

request="GET $path HTTP/1.0"$'\r\n'"Host: $host"$'\r\n\r\n'
rpc socket.send "{\"socket\":$sock,\"text\":\"$(json_escape "$request")\"}"
rpc socket.recv "{\"socket\":$sock,\"length\":65536,\"partial\":true,\"stream\":true}"

# Collect the response: every socket.received carries base64; eof:true ends it.
response=$(mktemp)
trap 'rm -f "$response"' EXIT
while :; do
    note "$sock" socket.received socket.closed
    if [[ $line == *'"socket.closed"'* ]]; then
        [[ $(field reason) == by_peer ]] || die "connection ended: $line"
        break
    fi
    field data | base64 -d >>"$response"
    [[ $line == *'"eof":true'* ]] && break
done

# After eof the daemon closes the socket by itself (socket.closed by_peer);
# ending the session would close anything left, too.
exec {sockd_in}>&- # end of the session: sockctl shell exits
wait "$sockd_pid" 2>/dev/null || true

# The body: everything after the first empty line of the header.
status=$(head -n 1 "$response" | tr -d '\r')
[[ $status == HTTP/1.[01]\ 200* ]] || die "unexpected status: $status"
sed '1,/^\r\{0,1\}$/d' "$response"
