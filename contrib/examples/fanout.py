#!/usr/bin/env python3
"""fanout.py HOST:PORT [N]

Open N (default 200) TCP connections to an echo server through sockd, all
from one control connection and one thread, send a different line on each,
read every line back and check it. Prints one summary line; exits 0 when
every connection echoed its own line, 1 otherwise.

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
        # Issue every connect first, then wait for each: they proceed in parallel
        # in the daemon; notifications of the others stay queued meanwhile.
        socks = [sockd.Socket(client, "tcp") for _ in range(n)]
        for s in socks:
            s.connect(address, timeout=WAIT, wait=False)
        failed = 0
        live = []
        for s in socks:
            try:
                s.wait_connected(WAIT + 5)
                live.append(s)
            except sockd.SocketClosed as e:
                print("socket %d: connect failed: %s" % (s.id, e), file=sys.stderr)
                failed += 1
        lines = {s.id: ("line %d of fanout.py\n" % s.id).encode() for s in live}
        for s in live:
            s.send(lines[s.id], wait=False)
        total = 0
        for s in live:
            try:
                s.wait_sent(WAIT)
                got = s.recv(len(lines[s.id]), timeout=WAIT)
            except (sockd.SocketClosed, TimeoutError) as e:
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
