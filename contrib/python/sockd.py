"""sockd: a blocking client for the sockd socket broker, standard library only.

One ``Client`` is one control connection to the daemon (JSON-RPC 2.0, one
message a line, over a Unix socket). Calls block until their response comes;
notifications that arrive meanwhile are queued, in order, and handed out by
``events()``, ``next_event()`` and ``wait_event()``. File descriptors travel
both ways (``call_fd``), as SCM_RIGHTS on the line they belong to.

``Socket`` wraps one socket handle with blocking methods (connect, send,
recv, starttls, shutdown, close ...). Each method issues its request and
then waits only for the notifications of *its* socket; everything else stays
queued, so one thread can drive hundreds of sockets without asyncio::

    import sockd
    with sockd.Client() as c:
        s = sockd.Socket(c, "tcp")
        s.connect("127.0.0.1:7")
        s.send(b"hello")
        print(s.recv(5))
        s.close()

Nothing here is thread-safe: use one Client per thread.
"""

import array
import base64
import collections
import json
import os
import select
import socket
import time

__all__ = [
    "Client",
    "Event",
    "Socket",
    "SockdError",
    "SocketClosed",
    "socket_path",
]

#: A notification: its method name and its params object.
Event = collections.namedtuple("Event", "method params")

# Error codes (PROTOCOL.md section 4).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNKNOWN_HANDLE = -32001
WRONG_STATE = -32002
LIMIT = -32003
DENIED = -32004
UNSUPPORTED = -32005
BUSY = -32006

_READ_SIZE = 256 * 1024
_MAX_FDS = 16


class SockdError(Exception):
    """An error response: ``code``, ``message`` and ``data`` (a dict)."""

    def __init__(self, code, message, data=None):
        self.code = code
        self.message = message
        self.data = data if data is not None else {}
        reason = self.data.get("reason") if isinstance(self.data, dict) else None
        text = "%s (%d%s)" % (message, code, ", " + reason if reason else "")
        super().__init__(text)

    @property
    def reason(self):
        return self.data.get("reason") if isinstance(self.data, dict) else None


class SocketClosed(Exception):
    """A socket ended (its ``socket.closed`` notification): ``reason``, ``params``."""

    def __init__(self, params):
        self.params = params
        self.reason = params.get("reason", "")
        detail = params.get("detail")
        super().__init__(self.reason + (": " + detail if detail else ""))


def socket_path(path=None):
    """The control socket path, resolved as the daemon does."""
    if path:
        return path
    env = os.environ.get("SOCKD_SOCKET")
    if env:
        return env
    if os.geteuid() == 0:
        return "/run/sockd/sockd.sock"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "sockd.sock")
    return "/tmp/sockd-%d.sock" % os.getuid()


def _deadline(timeout):
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline):
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(bytes(data)).decode("ascii")


class Client:
    """A blocking connection to sockd.

    ``path``: the control socket (None: resolved as the daemon does).
    ``timeout``: how long a call waits for its response, in seconds
    (None: forever); a call may override it with ``_timeout``.
    """

    def __init__(self, path=None, timeout=30.0):
        self.path = socket_path(path)
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(self.path)
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self._next_id = 1
        self._in = bytearray()
        self._base = 0  # stream offset of self._in[0]
        self._fds = collections.deque()  # (stream offset of the recvmsg, fd)
        self._events = collections.deque()
        self._eof = False
        self._closed = False

    # -- life cycle -----------------------------------------------------

    def fileno(self):
        """The control connection's fd (for select by callers that multiplex)."""
        return self._sock.fileno()

    def close(self):
        """Close the connection; the daemon closes every socket it owns."""
        if self._closed:
            return
        self._closed = True
        while self._fds:
            os.close(self._fds.popleft()[1])
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- wire -----------------------------------------------------------

    def _fill(self, deadline):
        """Read once (waiting until deadline). False on timeout; raises at EOF."""
        if self._eof:
            raise ConnectionError("sockd closed the connection")
        r, _, _ = select.select([self._sock], [], [], _left(deadline))
        if not r:
            return False
        self._read_once()
        return True

    def _read_once(self):
        try:
            data, anc, _flags, _addr = self._sock.recvmsg(
                _READ_SIZE,
                socket.CMSG_SPACE(_MAX_FDS * 4),
                getattr(socket, "MSG_CMSG_CLOEXEC", 0),
            )
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            data, anc = b"", []
        start = self._base + len(self._in)
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                for fd in fds:
                    if data:
                        self._fds.append((start, fd))
                    else:
                        os.close(fd)
        if not data:
            self._eof = True
            raise ConnectionError("sockd closed the connection")
        self._in += data

    def _next_message(self):
        """The next whole message already read, as (message, start offset), or None."""
        while True:
            nl = self._in.find(b"\n")
            if nl < 0:
                return None
            line = bytes(self._in[:nl])
            start = self._base
            del self._in[: nl + 1]
            self._base += nl + 1
            line = line.strip()
            if not line:
                continue
            try:
                return json.loads(line), start
            except ValueError:
                continue

    def _claim_fd(self, start):
        """The fd that rode with the line starting at START, or None."""
        if not self._fds or self._fds[0][0] > start:
            return None
        origin, fd = self._fds.popleft()
        while self._fds and self._fds[0][0] == origin:
            os.close(self._fds.popleft()[1])
        return fd

    def _read_message(self, deadline):
        """(message, fd or None), waiting until deadline; None on timeout."""
        while True:
            got = self._next_message()
            if got is not None:
                msg, start = got
                fd = None
                if not _is_notification(msg):
                    fd = self._claim_fd(start)
                return msg, fd
            if not self._fill(deadline):
                return None

    def _write(self, data, fd, deadline):
        """Write all of data; fd (if any) rides with the first byte."""
        view = memoryview(data)
        first = True
        while view:
            try:
                if first and fd is not None:
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                    n = self._sock.sendmsg([view], anc)
                else:
                    n = self._sock.send(view)
                first = False
                view = view[n:]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            # Full: wait for room, reading the daemon's output meanwhile so that
            # neither side can block the other.
            r, w, _ = select.select([self._sock], [self._sock], [], _left(deadline))
            if not r and not w:
                raise TimeoutError("writing to sockd timed out")
            if r and not self._eof:
                self._read_once()

    def send_raw(self, data):
        """Write raw bytes (one or more lines) to the daemon."""
        self._write(data if isinstance(data, bytes) else data.encode(), None, None)

    # -- calls ----------------------------------------------------------

    def request(self, method, params=None, fd=None, timeout=None):
        """Call METHOD with the PARAMS dict; returns (result, fd or None).

        Raises SockdError on an error response, TimeoutError when no
        response came within timeout seconds, ConnectionError when the
        daemon went away.
        """
        rid = self._next_id
        self._next_id += 1
        msg = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params is not None:
            msg["params"] = params
        line = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        deadline = _deadline(timeout)
        self._write(line, fd, deadline)
        while True:
            got = self._read_message(deadline)
            if got is None:
                raise TimeoutError("no response to %s within %ss" % (method, timeout))
            resp, rfd = got
            if _is_notification(resp):
                self._events.append(Event(resp["method"], resp.get("params", {})))
                continue
            answers = isinstance(resp, dict) and (
                resp.get("id") == rid or (resp.get("id") is None and "error" in resp)
            )
            if not answers:
                if rfd is not None:
                    os.close(rfd)
                continue
            if "error" in resp:
                if rfd is not None:
                    os.close(rfd)
                err = resp["error"] or {}
                raise SockdError(err.get("code", 0), err.get("message", ""), err.get("data"))
            return resp.get("result"), rfd

    def call(self, method, _timeout=None, **params):
        """Call METHOD with keyword params; returns the result (a dict)."""
        timeout = self.timeout if _timeout is None else _timeout
        result, fd = self.request(method, params or None, None, timeout)
        if fd is not None:
            os.close(fd)
        return result

    def call_fd(self, method, fd=None, _timeout=None, **params):
        """Call METHOD with fd riding along (if not None); returns (result, fd or None).

        The fd is sent as SCM_RIGHTS (the caller keeps its own copy); an fd
        that came with the response belongs to the caller.
        """
        if hasattr(fd, "fileno"):
            fd = fd.fileno()
        timeout = self.timeout if _timeout is None else _timeout
        return self.request(method, params or None, fd, timeout)

    def notify(self, method, **params):
        """Send METHOD as a notification (no id: never answered)."""
        msg = {"jsonrpc": "2.0", "method": method}
        if params:
            msg["params"] = params
        self._write(json.dumps(msg, separators=(",", ":")).encode() + b"\n", None, None)

    # -- notifications --------------------------------------------------

    def next_event(self, timeout=None):
        """The next notification (an Event), or None after timeout seconds."""
        return self.wait_event(None, None, timeout, _raise=False)

    def events(self, timeout=None):
        """Iterate over notifications; stops when none came for timeout seconds.

        timeout None waits forever (until the daemon closes the connection,
        which ends the iteration too).
        """
        while True:
            try:
                ev = self.next_event(timeout)
            except ConnectionError:
                return
            if ev is None:
                return
            yield ev

    def wait_event(self, method=None, socket=None, timeout=None, _raise=True):
        """The next notification named METHOD (None: any) about SOCKET (None: any).

        Others stay queued, in order. Raises TimeoutError after timeout seconds.
        """
        for i, ev in enumerate(self._events):
            if _matches(ev, method, socket):
                del self._events[i]
                return ev
        deadline = _deadline(timeout)
        while True:
            got = self._read_message(deadline)
            if got is None:
                if _raise:
                    raise TimeoutError("no %s within %ss" % (method or "notification", timeout))
                return None
            msg, fd = got
            if fd is not None:
                os.close(fd)
            if not _is_notification(msg):
                continue
            ev = Event(msg["method"], msg.get("params", {}))
            if _matches(ev, method, socket):
                return ev
            self._events.append(ev)

    def _wait_socket(self, sid, methods, timeout):
        """The next event about socket SID whose method is in METHODS, or socket.closed."""
        for i, ev in enumerate(self._events):
            if ev.params.get("socket") == sid and (
                ev.method in methods or ev.method == "socket.closed"
            ):
                del self._events[i]
                return ev
        deadline = _deadline(timeout)
        while True:
            got = self._read_message(deadline)
            if got is None:
                raise TimeoutError("no %s within %ss" % ("/".join(methods), timeout))
            msg, fd = got
            if fd is not None:
                os.close(fd)
            if not _is_notification(msg):
                continue
            ev = Event(msg["method"], msg.get("params", {}))
            if ev.params.get("socket") == sid and (
                ev.method in methods or ev.method == "socket.closed"
            ):
                return ev
            self._events.append(ev)

    # -- conveniences ---------------------------------------------------

    def hello(self, client=None):
        return self.call("daemon.hello", **({"client": client} if client else {}))

    def ping(self):
        return self.call("daemon.ping")

    def stats(self):
        return self.call("daemon.stats")

    def tls_context(self, ca=None, ca_file=None, verify=True, alpn=None, **params):
        """Create a TLS context; returns its handle.

        ca: CA certificates as PEM text; ca_file: a PEM file read here (so the
        daemon needs no access to it); verify: check the peer's chain and
        name (default). Other context.create params pass through.
        """
        if ca_file is not None:
            with open(ca_file) as f:
                ca = (ca or "") + f.read()
        params["verify"] = bool(verify)
        if ca is not None:
            params["ca"] = ca
        if alpn is not None:
            params["alpn"] = list(alpn)
        return self.call("context.create", **params)["context"]


def _is_notification(msg):
    return isinstance(msg, dict) and "id" not in msg and isinstance(msg.get("method"), str)


def _matches(ev, method, sock):
    if method is not None and ev.method != method:
        return False
    return sock is None or ev.params.get("socket") == sock


class Socket:
    """One sockd socket, driven with blocking calls.

    ``Socket(client, "tcp")`` opens a new socket (type tcp, tls, udp, dtls or
    unix; tls/dtls need ``context``); ``Socket(client, handle=N)`` wraps a
    handle the client already owns (from accept or take). Timeouts are in
    seconds; None waits forever.
    """

    def __init__(self, client, type="tcp", context=None, handle=None, **params):
        self.client = client
        self.type = type
        self.closed = None  # the socket.closed params once it ended
        self.connected = None  # the socket.connected (or accepted) params
        self.tls = None
        self._buf = bytearray()  # bytes of a recv that timed out, for the next recv
        self._eof = False
        self._unsent = 0  # bytes sent with wait=False, not yet confirmed
        if handle is not None:
            self.id = handle
            return
        if context is not None:
            params["context"] = context
        self.id = client.call("socket.open", type=type, **params)["socket"]

    def __repr__(self):
        return "<sockd.Socket %s %d%s>" % (self.type, self.id, " closed" if self.closed else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _wait(self, methods, timeout):
        ev = self.client._wait_socket(self.id, methods, timeout)
        if ev.method == "socket.closed":
            self.closed = ev.params
            raise SocketClosed(ev.params)
        return ev

    def _check(self):
        if self.closed is not None:
            raise SocketClosed(self.closed)

    def call(self, method, **params):
        """Call a socket.* METHOD on this socket."""
        self._check()
        return self.client.call(method, socket=self.id, **params)

    # -- connecting -----------------------------------------------------

    def connect(self, address, timeout=None, server_name=None, wait=True, **params):
        """Connect to ADDRESS ("host:port", "[v6]:port", "/path", "@name").

        Waits for socket.connected (returns its params) unless wait=False;
        raises SocketClosed if the connect failed (reason on the exception).
        """
        if timeout is not None:
            params["timeout_ms"] = max(1, int(timeout * 1000))
        if server_name is not None:
            params["server_name"] = server_name
        self.call("socket.connect", address=address, **params)
        if wait:
            return self.wait_connected(None if timeout is None else timeout + 5)
        return None

    def wait_connected(self, timeout=None):
        """Wait for the connect (or accept) to complete; returns the params."""
        if self.connected is None:
            ev = self._wait(("socket.connected", "socket.accepted"), timeout)
            self.connected = ev.params
            self.tls = ev.params.get("tls")
        return self.connected

    def bind(self, address=None, **params):
        if address is not None:
            params["address"] = address
        return self.call("socket.bind", **params)["local"]

    def listen(self, backlog=None, auto_accept=False):
        params = {"auto_accept": auto_accept}
        if backlog is not None:
            params["backlog"] = backlog
        self.call("socket.listen", **params)

    def accept(self, timeout=None, **params):
        """Wait for an incoming connection and accept it; returns a new Socket
        (ready for data: after the TLS handshake for tls)."""
        ev = self._wait(("socket.incoming", "socket.accepted"), timeout)
        if ev.method == "socket.accepted":  # auto_accept
            s = Socket(self.client, self.type, handle=ev.params["socket"])
            s.connected = ev.params
            s.tls = ev.params.get("tls")
            return s
        sid = self.call("socket.accept", pending=ev.params["pending"], **params)["socket"]
        s = Socket(self.client, self.type, handle=sid)
        s.wait_connected(timeout)
        return s

    # -- data -----------------------------------------------------------

    def send(self, data, wait=True, timeout=None):
        """Send DATA (bytes or str); waits until the daemon handed it all to the
        kernel (socket.sent) unless wait=False. Returns the byte count."""
        if isinstance(data, str):
            data = data.encode()
        self._check()
        try:
            n = self.client.call("socket.send", socket=self.id, data=_b64(data))["queued"]
        except SockdError as e:
            if e.code == UNKNOWN_HANDLE:
                self._closed_now()
            raise
        self._unsent += n
        if wait:
            self.wait_sent(timeout)
        return n

    def wait_sent(self, timeout=None):
        """Wait until every byte sent so far was handed to the kernel."""
        deadline = _deadline(timeout)
        while self._unsent > 0:
            ev = self._wait(("socket.sent",), _left(deadline))
            self._unsent -= ev.params.get("bytes", 0)

    def sendto(self, data, address, **params):
        """Send one datagram to ADDRESS (udp)."""
        return self.call("socket.sendto", data=_b64(data), address=address, **params)["queued"]

    def recv(self, n, partial=False, timeout=None):
        """Receive exactly N bytes (partial=True: 1..N); b"" at the end of the stream.

        A stream cut short by EOF returns what arrived. On timeout raises
        TimeoutError; bytes that arrived by then are kept for the next recv.
        """
        if n <= 0:
            raise ValueError("n must be positive")
        if self._buf and (partial or len(self._buf) >= n):
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out
        if self._eof and self.type != "udp":
            out = bytes(self._buf)
            self._buf.clear()
            return out
        if self.closed is not None:
            if self.closed.get("reason") in ("by_peer", "normal"):
                out = bytes(self._buf)
                self._buf.clear()
                return out
            raise SocketClosed(self.closed)
        need = n - len(self._buf)
        params = {"length": need, "partial": partial}
        if timeout is not None:
            params["timeout_ms"] = max(1, int(timeout * 1000))
        try:
            self.client.call("socket.recv", socket=self.id, **params)
            ev = self._wait(("socket.received",), None if timeout is None else timeout + 5)
        except SockdError as e:
            if e.code != UNKNOWN_HANDLE:
                raise
            self._closed_now()
            return self.recv(n, partial)
        except SocketClosed:
            if self.closed.get("reason") in ("by_peer", "normal"):
                self._eof = True
                out = bytes(self._buf)
                self._buf.clear()
                return out
            raise
        data = base64.b64decode(ev.params.get("data", ""))
        self._buf += data
        if ev.params.get("timeout"):
            raise TimeoutError("recv: %d of %d bytes within %ss" % (len(self._buf), n, timeout))
        if ev.params.get("eof"):
            self._eof = True
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def recvfrom(self, n=65536, timeout=None):
        """One datagram (udp): returns (data, from-address dict)."""
        params = {"length": n, "partial": True}
        if timeout is not None:
            params["timeout_ms"] = max(1, int(timeout * 1000))
        self.call("socket.recv", **params)
        ev = self._wait(("socket.received",), None if timeout is None else timeout + 5)
        if ev.params.get("timeout"):
            raise TimeoutError("recvfrom: nothing within %ss" % timeout)
        return base64.b64decode(ev.params.get("data", "")), ev.params.get("from")

    def _closed_now(self):
        """The daemon forgot the handle: pick up the socket.closed that said why."""
        try:
            ev = self.client._wait_socket(self.id, (), 5.0)
            self.closed = ev.params
        except TimeoutError:
            self.closed = {"socket": self.id, "reason": "lost"}

    # -- TLS ------------------------------------------------------------

    def starttls(self, context, server_name=None, server_side=False, timeout=None):
        """Upgrade to TLS on this socket; returns the tls object once done.
        Raises SocketClosed (reason tls_handshake_failed) when it fails."""
        params = {"context": context, "server_side": server_side}
        if server_name is not None:
            params["server_name"] = server_name
        self.call("socket.starttls", **params)
        ev = self._wait(("socket.tls_upgraded",), timeout)
        self.tls = ev.params.get("tls")
        return self.tls

    # -- the end --------------------------------------------------------

    def shutdown(self, timeout=None):
        """Flush what is queued (TLS close_notify), then close; returns the reason."""
        if self.closed is not None:
            return self.closed.get("reason")
        self.call("socket.shutdown")
        try:
            self._wait((), timeout)
        except SocketClosed:
            pass
        return self.closed.get("reason")

    def close(self):
        """Close at once (queued bytes are discarded); nothing to wait for."""
        if self.closed is not None:
            return
        try:
            self.client.call("socket.close", socket=self.id)
        except SockdError as e:
            if e.code != UNKNOWN_HANDLE:
                raise
        self.closed = {"socket": self.id, "reason": "normal"}

    # -- more -----------------------------------------------------------

    def info(self):
        return self.call("socket.info")

    def setopt(self, **opts):
        return self.call("socket.setopt", **opts)

    def give(self, timeout=None):
        """Hand the socket to another client; returns the token (the handle dies)."""
        params = {} if timeout is None else {"timeout_ms": max(1, int(timeout * 1000))}
        token = self.call("socket.give", **params)["token"]
        self.closed = {"socket": self.id, "reason": "given"}
        return token

    @classmethod
    def take(cls, client, token):
        """A Socket for the socket given away with TOKEN."""
        info = client.call("socket.take", token=token)
        s = cls(client, info.get("type", "tcp"), handle=info["socket"])
        s.connected = info
        return s

    def detach(self):
        """Take the socket's fd out of the daemon; returns a socket.socket.

        Bytes the daemon had read ahead are on ``.pending`` of the result
        (the daemon's "data"/"datagrams" fields) so nothing is lost.
        """
        self._check()
        result, fd = self.client.call_fd("socket.detach", socket=self.id)
        if fd is None:
            raise SockdError(INTERNAL_ERROR, "no descriptor came with the response")
        self.closed = {"socket": self.id, "reason": "detached"}
        s = socket.socket(fileno=fd)
        self.detached = result
        return s

    def pipe(self):
        """socket.pipe: returns a socket.socket whose bytes the daemon relays
        to and from this socket (TLS included). EOF passes both ways."""
        self._check()
        _result, fd = self.client.call_fd("socket.pipe", socket=self.id)
        if fd is None:
            raise SockdError(INTERNAL_ERROR, "no descriptor came with the response")
        return socket.socket(fileno=fd)

    @classmethod
    def attach(cls, client, sock, type="tcp", **params):
        """Hand SOCK (a socket.socket or an fd) to the daemon; returns a Socket.
        The caller may close its own copy afterwards."""
        result, fd = client.call_fd("socket.attach", fd=sock, type=type, **params)
        if fd is not None:
            os.close(fd)
        s = cls(client, type, handle=result["socket"])
        s.state = result.get("state")
        return s
