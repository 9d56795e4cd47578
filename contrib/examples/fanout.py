#!/usr/bin/env python3
"""fanout.py HOST:PORT [N]

Open N (default 200) TCP connections to an echo server through sockd, all
from one control connection and one thread, send a different line on each,
read every line back and check it. Prints one summary line; exits 0 when
every connection echoed its own line, 1 otherwise.

The calls that need no answer (connect and send with wait=False, close) are
only queued and written together; each socket's bytes are pushed to the
client as they arrive, so each recv here is a slice of what came. For
serving many sockets as they become ready, see sockd.wait() and
sockd.Selector.

The daemon is found as sockctl finds it ($SOCKD_SOCKET, ...). sockd.py is
looked up next to this script (../python) and then on the usual path.

Example:  SOCKD_SOCKET=/tmp/sockd.sock ./fanout.py 127.0.0.1:7007
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import sockd  # noqa: E402

WAIT = 10.0  # seconds: upper bound of each wait


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    address = argv[1]
    n = int(argv[2]) if len(argv) == 3 else 200
    start = time.monotonic()
    with sockd.Client(timeout=WAIT) as client:
        # One round trip opens them all; the connects (and their receive set-up) are only
        # queued, and proceed in parallel in the daemon.
        socks = sockd.Socket.many(client, n)
        for s in socks:
            s.connect(address, timeout=WAIT, wait=False)
        lines = {s.id: ("line %d of fanout.py\n" % s.id).encode() for s in socks}
        # Queued too: every send goes out in one write when the first recv has to wait.
        for s in socks:
            s.send(lines[s.id], wait=False)
        failed = 0
        total = 0
        for s in socks:
            try:
                # an error of the queued connect or send is raised here, by the next call
                got = s.recv(len(lines[s.id]), timeout=WAIT)
            except (sockd.SockdError, sockd.SocketClosed, TimeoutError) as e:
                print("socket %d: %s" % (s.id, e), file=sys.stderr)
                failed += 1
                continue
            if got != lines[s.id]:
                print("socket %d: got %r" % (s.id, got), file=sys.stderr)
                failed += 1
                continue
            total += len(got)
        for s in socks:
            s.close()
    ok = n - failed
    print("%d connections, %d echoed, %d bytes, %.2f s" % (n, ok, total, time.monotonic() - start))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
