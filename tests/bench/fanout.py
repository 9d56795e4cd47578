#!/usr/bin/env python3
"""fanout.py: one fan-out run of tests/bench/run's fanout group.

    fanout.py -m asyncio|threads|sockd -p PORT [-n CONNS] [-r ROUNDS] [-z SIZE]
              [-s SOCKD_SOCKET] [-P PROFILE_FILE] [-T TIMEOUT]

CONNS (default 200) TCP connections to the echo server at 127.0.0.1:PORT; in each of
ROUNDS (default 50) rounds every connection sends SIZE (default 1024) bytes, its own
pattern, and reads the SIZE bytes echoed back, checking each. Each mode is what a
blocking script's author would write with that tool:

  asyncio  asyncio streams: one task per connection (open_connection, then per round
           write + readexactly), all gathered.
  threads  one thread per connection with a blocking socket (create_connection, then
           per round sendall + recv until SIZE bytes).
  sockd    contrib/python/sockd.py, one Client and one thread, as
           contrib/examples/fanout.py: Socket.many, connect(wait=False) on each, then
           per round send(wait=False) on each and recv(SIZE) on each.

Timed from before the first connection to after the last close (sockd: a daemon.ping
after the closes, so they were handled). Prints one line:
    seconds=S ops=N client_cpu_s=C
(ops = CONNS x ROUNDS echoes; client_cpu_s: this process's user+system time, threads
included). -P FILE: the sockd mode runs under cProfile and the 25 costliest functions
(by own time) go to FILE. Exit 3 on a mismatch, an error or TIMEOUT (default 120) s.
"""

import argparse
import asyncio
import os
import resource
import socket
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "contrib", "python"))
import sockd  # noqa: E402


_BODY = bytes(range(256)) * 2


def pattern(i, size):
    """Connection I's payload: SIZE bytes no other connection sends."""
    head = ("%d:" % i).encode()
    body = _BODY[i % 251 : i % 251 + 251]
    return (head + body * (size // 251 + 1))[:size]


def run_asyncio(port, msgs, rounds, size):
    async def one(i):
        msg = msgs[i]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(rounds):
            w.write(msg)
            got = await r.readexactly(size)
            if got != msg:
                raise RuntimeError("connection %d: echo mismatch" % i)
        w.close()
        await w.wait_closed()

    async def main():
        await asyncio.gather(*(one(i) for i in range(len(msgs))))

    asyncio.run(main())


def run_threads(port, msgs, rounds, size):
    errors = []

    def one(i):
        try:
            msg = msgs[i]
            with socket.create_connection(("127.0.0.1", port)) as s:
                for _ in range(rounds):
                    s.sendall(msg)
                    got = bytearray()
                    while len(got) < size:
                        chunk = s.recv(size - len(got))
                        if not chunk:
                            raise RuntimeError("connection %d: EOF" % i)
                        got += chunk
                    if got != msg:
                        raise RuntimeError("connection %d: echo mismatch" % i)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(msgs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def run_sockd(path, port, msgs, rounds, size):
    address = "127.0.0.1:%d" % port
    with sockd.Client(path) as c:
        socks = sockd.Socket.many(c, len(msgs))
        for s in socks:
            s.connect(address, wait=False)
        for _ in range(rounds):
            for s, m in zip(socks, msgs):
                s.send(m, wait=False)
            for s, m in zip(socks, msgs):
                if s.recv(size) != m:
                    raise RuntimeError("socket %d: echo mismatch" % s.id)
        for s in socks:
            s.close()
        c.ping()


def main():
    ap = argparse.ArgumentParser(description="one fan-out run (see the module doc)")
    ap.add_argument("-m", dest="mode", required=True, choices=("asyncio", "threads", "sockd"))
    ap.add_argument("-p", dest="port", type=int, required=True)
    ap.add_argument("-n", dest="conns", type=int, default=200)
    ap.add_argument("-r", dest="rounds", type=int, default=50)
    ap.add_argument("-z", dest="size", type=int, default=1024)
    ap.add_argument("-s", dest="sock", default=None)
    ap.add_argument("-P", dest="profile", default=None)
    ap.add_argument("-T", dest="timeout", type=int, default=120)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < a.conns + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.conns + 1000), hard))
    threading.stack_size(512 * 1024)
    if a.timeout > 0:
        import signal

        signal.signal(signal.SIGALRM, lambda *_: (print("fanout.py: timed out", file=sys.stderr),
                                                  os._exit(3)))
        signal.alarm(a.timeout)
    prof = None
    if a.profile and a.mode == "sockd":
        import cProfile

        prof = cProfile.Profile()
    msgs = [pattern(i, a.size) for i in range(a.conns)]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    try:
        if a.mode == "asyncio":
            run_asyncio(a.port, msgs, a.rounds, a.size)
        elif a.mode == "threads":
            run_threads(a.port, msgs, a.rounds, a.size)
        elif prof is not None:
            prof.runcall(run_sockd, a.sock, a.port, msgs, a.rounds, a.size)
        else:
            run_sockd(a.sock, a.port, msgs, a.rounds, a.size)
    except Exception as e:
        print("fanout.py -m %s: %s: %s" % (a.mode, type(e).__name__, e), file=sys.stderr)
        return 3
    secs = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print("seconds=%.4f ops=%d client_cpu_s=%.3f" % (secs, a.conns * a.rounds, cpu))
    if prof is not None:
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        with open(a.profile, "w") as f:
            f.write(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
