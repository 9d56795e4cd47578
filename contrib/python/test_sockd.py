"""Tests of sockd.py against a real daemon.

The daemon binary comes from $SOCKD_BIN; each test class gets its own
daemon on a temporary socket, and loopback peers run in threads. Run:

    SOCKD_BIN=build/plain/src/sockd python3 -m unittest -v contrib/python/test_sockd.py
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sockd  # noqa: E402

WAIT = 10.0  # upper bound of every wait in these tests, seconds


def start_daemon(tmp):
    """Start $SOCKD_BIN on a socket in TMP; returns (process, path)."""
    binary = os.environ.get("SOCKD_BIN")
    if not binary:
        raise unittest.SkipTest("SOCKD_BIN is not set (path of the sockd binary)")
    path = os.path.join(tmp, "sockd.sock")
    log = open(os.path.join(tmp, "sockd.log"), "wb")
    proc = subprocess.Popen([binary, "-s", path], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("sockd exited with status %s" % proc.returncode)
        try:
            with sockd.Client(path) as c:
                c.ping()
            return proc, path
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("sockd did not start within %ss" % WAIT)


def stop_daemon(proc):
    proc.terminate()
    try:
        proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EchoServer:
    """A TCP echo server on 127.0.0.1 (one thread per connection)."""

    def __init__(self, close_after=None, greeting=None):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1024)
        self.port = self.lsock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.close_after = close_after
        self.greeting = greeting
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(WAIT * 3)
            if self.greeting is not None:
                conn.sendall(self.greeting)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
                return
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
                if self.close_after is not None:
                    break
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.lsock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


class UdpEcho:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
                self.sock.sendto(data, addr)
            except OSError:
                return

    def close(self):
        self.sock.close()


class DaemonTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sockd-py-")
        cls.proc, cls.path = start_daemon(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        stop_daemon(cls.proc)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.client = sockd.Client(self.path, timeout=WAIT)
        self.echo = EchoServer()

    def tearDown(self):
        self.client.close()
        self.echo.close()


class TestClient(DaemonTest):
    def test_socket_path_resolution(self):
        env = dict(os.environ)
        try:
            os.environ["SOCKD_SOCKET"] = "/x/y.sock"
            self.assertEqual(sockd.socket_path(), "/x/y.sock")
            self.assertEqual(sockd.socket_path("/explicit"), "/explicit")
            del os.environ["SOCKD_SOCKET"]
            os.environ["XDG_RUNTIME_DIR"] = "/run/user/77"
            expected = (
                "/run/sockd/sockd.sock" if os.geteuid() == 0 else "/run/user/77/sockd.sock"
            )
            self.assertEqual(sockd.socket_path(), expected)
            del os.environ["XDG_RUNTIME_DIR"]
            if os.geteuid() != 0:
                self.assertEqual(sockd.socket_path(), "/tmp/sockd-%d.sock" % os.getuid())
        finally:
            os.environ.clear()
            os.environ.update(env)

    def test_hello_and_ping(self):
        hello = self.client.hello("test_sockd")
        self.assertEqual(hello["server"], "sockd")
        self.assertEqual(hello["protocol"], 1)
        self.assertIn("socket.connect", hello["methods"])
        self.assertEqual(self.client.ping(), {})
        stats = self.client.stats()
        self.assertGreaterEqual(stats["clients"], 1)

    def test_error_response(self):
        with self.assertRaises(sockd.SockdError) as cm:
            self.client.call("no.such.method")
        self.assertEqual(cm.exception.code, sockd.METHOD_NOT_FOUND)
        with self.assertRaises(sockd.SockdError) as cm:
            self.client.call("socket.open", type="tcp", bogus=1)
        self.assertEqual(cm.exception.code, sockd.INVALID_PARAMS)
        with self.assertRaises(sockd.SockdError) as cm:
            self.client.call("socket.info", socket=999999)
        self.assertEqual(cm.exception.code, sockd.UNKNOWN_HANDLE)
        # the connection stays usable
        self.assertEqual(self.client.ping(), {})

    def test_events_iterator_and_wait_event(self):
        sid = self.client.call("socket.open", type="tcp")["socket"]
        self.client.call("socket.connect", socket=sid, address=self.echo.address)
        self.client.call("socket.send", socket=sid, text="abc")
        ev = self.client.wait_event("socket.sent", sid, timeout=WAIT)
        self.assertEqual(ev.params["bytes"], 3)
        # socket.connected came first and stayed queued
        events = list(self.client.events(timeout=0.3))
        self.assertEqual([e.method for e in events], ["socket.connected"])
        self.assertEqual(events[0].params["socket"], sid)
        self.assertIsNone(self.client.next_event(timeout=0.05))
        with self.assertRaises(TimeoutError):
            self.client.wait_event("socket.received", sid, timeout=0.1)

    def test_notify_is_not_answered(self):
        self.client.notify("daemon.ping")
        self.assertEqual(self.client.ping(), {})
        self.assertIsNone(self.client.next_event(timeout=0.1))


class TestSocket(DaemonTest):
    def test_tcp_echo(self):
        s = sockd.Socket(self.client, "tcp")
        conn = s.connect(self.echo.address, timeout=WAIT)
        self.assertEqual(conn["remote"], {"address": "127.0.0.1", "port": self.echo.port})
        self.assertEqual(s.send(b"hello world"), 11)
        self.assertEqual(s.recv(5, timeout=WAIT), b"hello")
        self.assertEqual(s.recv(100, partial=True, timeout=WAIT), b" world")
        info = s.info()
        self.assertEqual(info["bytes_sent"], 11)
        self.assertEqual(info["state"], "connected")
        s.close()
        with self.assertRaises(sockd.SocketClosed):
            s.send(b"x")

    def test_recv_timeout_keeps_bytes(self):
        s = sockd.Socket(self.client)
        s.connect(self.echo.address)
        s.send(b"abc")
        with self.assertRaises(TimeoutError):
            s.recv(10, timeout=0.3)
        s.send(b"defghijklm")
        self.assertEqual(s.recv(10, timeout=WAIT), b"abcdefghij")
        self.assertEqual(s.recv(3, timeout=WAIT), b"klm")
        self.assertEqual(s.shutdown(timeout=WAIT), "normal")

    def test_eof_by_peer(self):
        srv = EchoServer(greeting=b"bye\n")
        try:
            s = sockd.Socket(self.client)
            s.connect(srv.address)
            self.assertEqual(s.recv(100, timeout=WAIT), b"bye\n")  # cut short by EOF
            self.assertEqual(s.recv(100, timeout=WAIT), b"")
            self.assertEqual(s.recv(1, timeout=WAIT), b"")
        finally:
            srv.close()

    def test_connect_refused(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        s = sockd.Socket(self.client)
        with self.assertRaises(sockd.SocketClosed) as cm:
            s.connect("127.0.0.1:%d" % port, timeout=WAIT)
        self.assertEqual(cm.exception.reason, "connect_rejected")

    def test_big_transfer(self):
        s = sockd.Socket(self.client)
        s.connect(self.echo.address)
        blob = os.urandom(3 * 1024 * 1024)
        got = bytearray()
        for i in range(0, len(blob), 1024 * 1024):
            s.send(blob[i : i + 1024 * 1024])
            while len(got) < i + 1024 * 1024:
                got += s.recv(1024 * 1024, partial=True, timeout=WAIT)
        self.assertEqual(bytes(got), blob)

    def test_udp_echo(self):
        u = UdpEcho()
        try:
            s = sockd.Socket(self.client, "udp")
            s.connect(u.address)
            s.send(b"one")
            s.send(b"two")
            self.assertEqual(s.recv(100, partial=True, timeout=WAIT), b"one")
            self.assertEqual(s.recv(100, partial=True, timeout=WAIT), b"two")
            s.close()
        finally:
            u.close()

    def test_unix_listen_accept(self):
        path = os.path.join(self.tmp, "py-listen.sock")
        lst = sockd.Socket(self.client, "unix")
        lst.bind(path)
        lst.listen()
        cli = sockd.Socket(self.client, "unix")
        cli.connect(path, wait=False)
        srv = lst.accept(timeout=WAIT)
        cli.wait_connected(WAIT)
        cli.send(b"ping")
        self.assertEqual(srv.recv(4, timeout=WAIT), b"ping")
        srv.send("pong")
        self.assertEqual(cli.recv(4, timeout=WAIT), b"pong")
        for s in (cli, srv, lst):
            s.close()

    def test_give_and_take(self):
        s = sockd.Socket(self.client)
        s.connect(self.echo.address)
        s.send(b"kept")
        token = s.give(timeout=WAIT)
        self.assertEqual(len(token), 32)
        with sockd.Client(self.path) as other:
            t = sockd.Socket.take(other, token)
            self.assertEqual(t.recv(4, timeout=WAIT), b"kept")
            t.close()
        with self.assertRaises(sockd.SockdError) as cm:
            self.client.call("socket.take", token=token)
        self.assertEqual(cm.exception.code, sockd.UNKNOWN_HANDLE)


class TestFdPassing(DaemonTest):
    def test_detach(self):
        s = sockd.Socket(self.client)
        s.connect(self.echo.address)
        py = s.detach()
        with py:
            py.settimeout(WAIT)
            py.sendall(b"direct")
            self.assertEqual(py.recv(6), b"direct")
        with self.assertRaises(sockd.SockdError):
            self.client.call("socket.info", socket=s.id)

    def test_attach(self):
        py = socket.create_connection(("127.0.0.1", self.echo.port), timeout=WAIT)
        s = sockd.Socket.attach(self.client, py, "tcp")
        py.close()  # the daemon has its own copy
        self.assertEqual(s.state, "connected")
        s.send(b"via daemon")
        self.assertEqual(s.recv(10, timeout=WAIT), b"via daemon")
        s.close()

    def test_pipe(self):
        s = sockd.Socket(self.client)
        s.connect(self.echo.address)
        p = s.pipe()
        with p:
            p.settimeout(WAIT)
            p.sendall(b"through the pipe")
            got = b""
            while len(got) < 16:
                got += p.recv(100)
            self.assertEqual(got, b"through the pipe")


def make_cert(tmp):
    """A self-signed certificate for localhost/127.0.0.1 (PEM cert, PEM key), or None."""
    if shutil.which("openssl") is None:
        return None
    key = os.path.join(tmp, "key.pem")
    cert = os.path.join(tmp, "cert.pem")
    r = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=WAIT * 3)
    if r.returncode != 0:
        return None
    with open(cert) as f, open(key) as g:
        return f.read(), g.read(), cert


class TestTls(DaemonTest):
    def _server_ctx(self):
        ctx = self.client.call("context.create", verify=False)["context"]
        pem = make_cert(self.tmp)
        if pem is None:
            self.client.call("context.generate_certificate", context=ctx, role="server",
                             common_name="localhost")
            return ctx, None
        self.client.call("context.set_server_certificate", context=ctx, cert=pem[0], key=pem[1])
        return ctx, pem[2]

    def test_starttls_both_sides(self):
        sctx, ca_file = self._server_ctx()
        if ca_file is not None:
            cctx = self.client.tls_context(ca_file=ca_file, alpn=["x-test"])
        else:
            cctx = self.client.tls_context(verify=False)
        self.client.call("context.set_alpn", context=sctx, protocols=["x-test"])
        lst = sockd.Socket(self.client, "tcp")
        lst.bind("127.0.0.1")
        port = lst.info()["local"]["port"]
        lst.listen()
        cli = sockd.Socket(self.client, "tcp")
        cli.connect("127.0.0.1:%d" % port, wait=False)
        srv = lst.accept(timeout=WAIT)
        cli.wait_connected(WAIT)
        # both ends upgrade: issue the server side first, then wait on the client
        srv.call("socket.starttls", context=sctx, server_side=True)
        tls = cli.starttls(cctx, server_name="localhost", timeout=WAIT)
        self.client.wait_event("socket.tls_upgraded", srv.id, timeout=WAIT)
        self.assertEqual(tls["verified"], ca_file is not None)
        if ca_file is not None:
            self.assertEqual(tls.get("alpn"), "x-test")
        cli.send(b"secret")
        self.assertEqual(srv.recv(6, timeout=WAIT), b"secret")
        self.assertEqual(cli.shutdown(timeout=WAIT), "normal")

    def test_verify_failure(self):
        sctx, ca_file = self._server_ctx()
        lst = sockd.Socket(self.client, "tls", context=sctx)
        lst.bind("127.0.0.1")
        port = lst.info()["local"]["port"]
        lst.listen(auto_accept=True)
        cctx = self.client.tls_context()  # the system store does not know this certificate
        cli = sockd.Socket(self.client, "tls", context=cctx)
        with self.assertRaises(sockd.SocketClosed) as cm:
            cli.connect("127.0.0.1:%d" % port, timeout=WAIT)
        self.assertEqual(cm.exception.reason, "tls_handshake_failed")


class TestLines(DaemonTest):
    """Socket.readline against a peer of this process that writes lines in pieces."""

    def pair(self):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        self.addCleanup(lsock.close)
        s = sockd.Socket(self.client)
        s.connect("127.0.0.1:%d" % lsock.getsockname()[1], timeout=WAIT)
        lsock.settimeout(WAIT)
        conn, _ = lsock.accept()
        self.addCleanup(conn.close)
        return s, conn

    def test_lines_in_pieces(self):
        s, conn = self.pair()
        conn.sendall(b"EHLO ex")
        with self.assertRaises(TimeoutError):
            s.readline(b"\r\n", timeout=0.2)
        conn.sendall(b"ample.org\r")  # the delimiter split across two segments
        with self.assertRaises(TimeoutError):
            s.readline(b"\r\n", timeout=0.2)
        conn.sendall(b"\nMAIL FROM:<a@b>\r\n\r\n")
        self.assertEqual(s.readline("\r\n", timeout=WAIT), b"EHLO example.org\r\n")
        self.assertEqual(s.readline(b"\r\n", timeout=WAIT), b"MAIL FROM:<a@b>\r\n")
        self.assertEqual(s.readline(b"\r\n", timeout=WAIT), b"\r\n")
        conn.sendall(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody")
        self.assertEqual(s.readline(b"\r\n\r\n", timeout=WAIT),
                         b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n")
        self.assertEqual(s.recv(4, timeout=WAIT), b"body")

    def test_limit_and_end_of_stream(self):
        s, conn = self.pair()
        conn.sendall(b"0123456789ABC\nhalf a li")
        self.assertEqual(s.readline(limit=8, timeout=WAIT), b"01234567")  # no "\n": a piece
        self.assertEqual(s.readline(limit=8, timeout=WAIT), b"89ABC\n")
        conn.close()
        self.assertEqual(s.readline(timeout=WAIT), b"half a li")
        self.assertEqual(s.readline(timeout=WAIT), b"")
        with self.assertRaises(ValueError):
            s.readline(b"", timeout=WAIT)
        with self.assertRaises(ValueError):
            s.readline(b"x" * 17, timeout=WAIT)
        with self.assertRaises(ValueError):
            s.readline(b"\r\n", limit=1)

    def test_buffered_lines_cost_no_request(self):
        s, conn = self.pair()
        lines = [b"line %d\n" % i for i in range(5000)]
        conn.sendall(b"".join(lines))
        self.assertEqual(s.readline(timeout=WAIT), lines[0])
        got = [lines[0]]
        while len(got) < len(lines):
            got.append(s.readline(timeout=WAIT))
        self.assertEqual(got, lines)
        ids = self.client._next_id
        conn.sendall(b"a\nb\nc\n")
        self.assertEqual(sockd.wait([s], WAIT), [s])
        while len(s._buf) < 6:
            self.client.wait_event("no.such.event", timeout=0.01, _raise=False)
        self.assertEqual([s.readline(), s.readline(), s.readline()], [b"a\n", b"b\n", b"c\n"])
        self.assertEqual(self.client._next_id, ids)


class TestFanout(DaemonTest):
    N = 200

    def test_200_connections_from_one_client(self):
        socks = [sockd.Socket(self.client, "tcp") for _ in range(self.N)]
        for s in socks:
            s.connect(self.echo.address, wait=False, timeout=WAIT)
        for s in socks:
            s.wait_connected(WAIT)
        msgs = [("message %d from socket %d\n" % (i, s.id)).encode() for i, s in enumerate(socks)]
        for s, m in zip(socks, msgs):
            s.send(m, wait=False)
        for s in socks:
            s.wait_sent(WAIT)
        for s, m in zip(socks, msgs):
            self.assertEqual(s.recv(len(m), timeout=WAIT), m)
        self.assertEqual(self.client.stats()["sockets"]["tcp"], self.N)
        listed = self.client.call("socket.list")["sockets"]
        self.assertEqual(len(listed), self.N)
        for s in socks:
            s.close()
        self.assertEqual(self.client.call("socket.list")["sockets"], [])


class TestPipelining(DaemonTest):
    """Calls that need no answer yet are queued and written together; answers are matched
    by id later and errors surface at the next call on their socket."""

    def test_error_of_a_pipelined_send_is_raised_by_the_next_call(self):
        s = sockd.Socket(self.client)  # never connected: socket.send answers -32002
        ids = self.client._next_id
        self.assertEqual(s.send(b"too early", wait=False), 9)  # queued, not answered yet
        self.assertEqual(self.client._next_id, ids + 1)
        other = sockd.Socket(self.client)
        other.connect(self.echo.address)
        other.send(b"fine", wait=False)
        self.assertEqual(other.recv(4, timeout=WAIT), b"fine")  # unaffected
        with self.assertRaises(sockd.SockdError) as cm:
            s.recv(1, timeout=WAIT)
        self.assertEqual(cm.exception.code, sockd.WRONG_STATE)
        # raised once; the socket is usable afterwards
        s.connect(self.echo.address, timeout=WAIT)
        s.send(b"later", wait=False)
        self.assertEqual(s.recv(5, timeout=WAIT), b"later")

    def test_error_of_a_pipelined_connect(self):
        s = sockd.Socket(self.client)
        s.connect("not an address", wait=False)
        self.assertEqual(self.client.ping(), {})  # the error waits on its socket
        with self.assertRaises(sockd.SockdError) as cm:
            s.wait_connected(WAIT)
        self.assertEqual(cm.exception.code, sockd.INVALID_PARAMS)

    def test_send_errors_do_not_hang_wait_sent(self):
        s = sockd.Socket(self.client)
        s.send(b"x", wait=False)
        with self.assertRaises(sockd.SockdError):
            s.wait_sent(WAIT)

    def test_order_of_pipelined_sends_and_calls(self):
        socks = sockd.Socket.many(self.client, 20)
        for s in socks:
            s.connect(self.echo.address, wait=False)
        chunks = {s.id: [("%d-%d;" % (s.id, k)).encode() * (k + 1) for k in range(30)]
                  for s in socks}
        for k in range(30):
            for s in socks:
                s.send(chunks[s.id][k], wait=False)
            if k == 15:
                # a call in the middle is answered in order, the queue written before it
                self.assertEqual(self.client.ping(), {})
        for s in reversed(socks):
            want = b"".join(chunks[s.id])
            self.assertEqual(s.recv(len(want), timeout=WAIT), want)
        for s in socks:
            s.wait_sent(WAIT)
            s.close()
        self.assertEqual(self.client.call("socket.list")["sockets"], [])

    def test_many_requests_are_one_write(self):
        s = sockd.Socket(self.client)
        s.connect(self.echo.address)
        writes = []
        real = self.client._sock

        class Counting:
            def __getattr__(self, name):
                return getattr(real, name)

            def sendmsg(self, bufs, *anc):
                writes.append(len(bufs))
                return real.sendmsg(bufs, *anc)

        self.client._sock = Counting()
        try:
            for i in range(100):
                s.send(b"%03d" % i, wait=False)
            self.assertEqual(writes, [])  # nothing written until the client must block
            got = s.recv(300, timeout=WAIT)
        finally:
            self.client._sock = real
        self.assertEqual(got, b"".join(b"%03d" % i for i in range(100)))
        self.assertEqual(len(writes), 1)  # 100 sends (+ the stream's set-up), one sendmsg

    def test_recv_of_arrived_bytes_costs_no_request(self):
        s = sockd.Socket(self.client)
        s.connect(self.echo.address)
        s.send(b"abcdef" * 100, wait=False)
        self.assertEqual(sockd.wait([s], WAIT), [s])
        while len(s._buf) < 600:
            self.assertTrue(sockd.wait([s], WAIT))
            if len(s._buf) < 600:
                self.client.wait_event(timeout=0.01, _raise=False)
        ids = self.client._next_id
        for _ in range(100):
            self.assertEqual(s.recv(6), b"abcdef")
        self.assertEqual(self.client._next_id, ids)

    def test_timeouts(self):
        s = sockd.Socket(self.client)
        s.connect(self.echo.address)
        t0 = time.monotonic()
        with self.assertRaises(TimeoutError):
            s.recv(1, timeout=0.2)
        self.assertGreaterEqual(time.monotonic() - t0, 0.19)
        self.assertEqual(sockd.wait([s], 0.1), [])
        self.assertEqual(sockd.wait([s], 0), [])
        s.send(b"late")
        self.assertEqual(s.recv(4, timeout=WAIT), b"late")


class TestManySockets(DaemonTest):
    def test_wait_reports_ready_sockets(self):
        socks = sockd.Socket.many(self.client, 100)
        for s in socks:
            s.connect(self.echo.address, wait=False)
        pending = set(socks)
        while pending:
            ready = sockd.wait(pending, WAIT)
            self.assertTrue(ready)
            for s in ready:
                s.wait_connected(0)
                pending.discard(s)
        # nothing to read yet: a short wait times out
        self.assertEqual(sockd.wait(socks, 0.05), [])
        quiet = socks[::2]
        for s in socks[1::2]:
            s.send(b"ping %d" % s.id, wait=False)
        got = {}
        while len(got) < 50:
            ready = sockd.wait(socks, WAIT)
            self.assertTrue(ready)
            for s in ready:
                self.assertNotIn(s, quiet)
                got[s.id] = got.get(s.id, b"") + s.recv(100, partial=True)
                if got[s.id] == b"ping %d" % s.id:
                    pass
        for sid, data in got.items():
            self.assertEqual(data, b"ping %d" % sid)
        for s in socks:
            s.close()

    def test_selector(self):
        sel = sockd.Selector()
        socks = sockd.Socket.many(self.client, 10)
        for i, s in enumerate(socks):
            s.connect(self.echo.address, wait=False)
            sel.register(s, sockd.EVENT_WRITE, i)
        self.assertEqual(len(sel.get_map()), 10)
        writable = set()
        while len(writable) < 10:
            for key, ev in sel.select(WAIT):
                self.assertEqual(ev, sockd.EVENT_WRITE)
                self.assertIs(socks[key.data], key.fileobj)
                key.fileobj.send(b"x%d" % key.data, wait=False)
                writable.add(key.fileobj)
                sel.modify(key.fileobj, sockd.EVENT_READ, key.data)
        echoed = {}
        while len(echoed) < 10:
            for key, ev in sel.select(WAIT):
                self.assertEqual(ev, sockd.EVENT_READ)
                echoed[key.data] = key.fileobj.recv(10, partial=True)
                sel.unregister(key.fileobj)
        self.assertEqual(echoed, {i: b"x%d" % i for i in range(10)})
        self.assertEqual(sel.select(0), [])
        sel.close()

    def test_events_of_other_sockets_stay_queued_per_socket(self):
        a, b = sockd.Socket(self.client), sockd.Socket(self.client)
        a.connect(self.echo.address, wait=False)
        b.connect(self.echo.address, wait=False)
        self.client.call("socket.send", socket=b.id, text="raw")  # its socket.sent is queued
        a.wait_connected(WAIT)
        b.wait_connected(WAIT)
        ev = self.client.wait_event("socket.sent", b.id, timeout=WAIT)
        self.assertEqual(ev.params["bytes"], 3)
        self.assertEqual(b.recv(3, timeout=WAIT), b"raw")


class TestFlowControl(DaemonTest):
    def test_receive_buffer_is_bounded_and_nothing_is_lost(self):
        blob = os.urandom(8 * 1024 * 1024)
        srv = EchoServer(greeting=blob)
        try:
            s = sockd.Socket(self.client)
            s.connect(srv.address)
            self.assertEqual(len(s.recv(1, timeout=WAIT)), 1)  # the stream is armed
            high = 0
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # the daemon pushes while nobody reads
                self.client.wait_event("no.such.event", timeout=0.05, _raise=False)
                high = max(high, len(s._buf))
            self.assertLess(high, 3 * 1024 * 1024)
            rest = bytearray()
            while len(rest) < len(blob) - 1:
                part = s.recv(1 << 20, partial=True, timeout=WAIT)
                self.assertTrue(part)
                rest += part
            self.assertEqual(bytes(rest), blob[1:])
            self.assertEqual(s.recv(1, timeout=WAIT), b"")
        finally:
            srv.close()

    def test_big_pipelined_sends_wait_for_room(self):
        s = sockd.Socket(self.client)
        s.connect(self.echo.address)
        blob = os.urandom(6 * 1024 * 1024)
        got = bytearray()
        for i in range(0, len(blob), 512 * 1024):
            s.send(blob[i : i + 512 * 1024], wait=False)  # never -32003 (max-send-buffer)
            while len(got) < i - 2 * 1024 * 1024:
                got += s.recv(1 << 20, partial=True, timeout=WAIT)
        while len(got) < len(blob):
            got += s.recv(1 << 20, partial=True, timeout=WAIT)
        self.assertEqual(bytes(got), blob)
        s.wait_sent(WAIT)


class TestDaemonDies(unittest.TestCase):
    """A daemon that goes away (or stalls) mid-pipeline: a clear error, never a hang."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sockd-py-die-")
        self.proc, self.path = start_daemon(self.tmp)
        self.echo = EchoServer()

    def tearDown(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.echo.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_killed_mid_pipeline(self):
        c = sockd.Client(self.path, timeout=WAIT)
        socks = sockd.Socket.many(c, 10)
        for s in socks:
            s.connect(self.echo.address, wait=False)
            s.send(b"hello", wait=False)
        self.assertEqual(socks[0].recv(5, timeout=WAIT), b"hello")
        for s in socks:
            s.send(b"more" * 1000, wait=False)  # queued, unanswered
        self.proc.kill()
        self.proc.wait()
        t0 = time.monotonic()
        with self.assertRaises(ConnectionError) as cm:
            for s in socks[1:]:
                s.recv(5 + 4000, timeout=WAIT)
        self.assertIn("sockd", str(cm.exception))
        self.assertLess(time.monotonic() - t0, WAIT)
        # every later call says the same at once
        with self.assertRaises(ConnectionError):
            socks[3].send(b"x", wait=False)
        with self.assertRaises(ConnectionError):
            c.ping()
        with self.assertRaises(ConnectionError):
            sockd.wait(socks, WAIT)
        c.close()

    def test_stalled_daemon_times_out_and_late_answers_are_dropped(self):
        c = sockd.Client(self.path, timeout=WAIT)
        s = sockd.Socket(c)
        s.connect(self.echo.address)
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            with self.assertRaises(TimeoutError):
                c.call("daemon.stats", _timeout=0.2)
            s.send(b"abc", wait=False)
            with self.assertRaises(TimeoutError):
                s.recv(3, timeout=0.2)
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.assertEqual(c.ping(), {})  # the stats answer came late and was dropped
        self.assertEqual(s.recv(3, timeout=WAIT), b"abc")
        c.close()


if __name__ == "__main__":
    unittest.main()
