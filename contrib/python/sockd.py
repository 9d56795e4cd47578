"""sockd: a blocking client for the sockd socket broker, standard library only.

One ``Client`` is one control connection to the daemon (JSON-RPC 2.0, one
message a line, over a Unix socket). ``Socket`` wraps one socket handle with
blocking methods (connect, send, recv, starttls, shutdown, close ...), so one
thread can drive a thousand sockets without asyncio::

    import sockd
    with sockd.Client() as c:
        s = sockd.Socket(c, "tcp")
        s.connect("127.0.0.1:7")
        s.send(b"hello")
        print(s.recv(5))
        s.close()

How it goes fast (sockd-protocol(7), sections ORDERING GUARANTEES and
RECEIVING):

- Requests are pipelined. A call that does not need its answer yet
  (``send(wait=False)``, ``connect(wait=False)``, ``close()``, setting up a
  receive) is only queued; queued requests are written together, in one
  write, just before the client has to block for input (or once 256 KiB
  are queued; ``Client.flush()`` forces it). Their responses are matched by
  id when they come; an error response is kept on its socket and raised by
  the next call on that socket.
- A socket receives with one ``socket.recv {stream: true}``, armed by the
  first ``recv`` (or ``wait``/``Selector``): the daemon pushes the bytes as
  they arrive, the client keeps them in the socket's buffer, and ``recv(n)``
  on bytes that already arrived is a slice, no round trip. A buffer above
  1 MiB (or the size a pending ``recv`` asked for) stops the stream
  (``socket.recv_cancel``) until the program catches up, so memory stays
  bounded and the daemon's read-ahead holds the peer back.
- ``wait(sockets, timeout)`` and ``Selector`` (a ``selectors.BaseSelector``)
  tell which of many sockets can go on without blocking.
- Notifications that no socket method consumed are queued per socket
  (``events()``, ``next_event()``, ``wait_event()`` hand them out, in order).

File descriptors travel both ways (``call_fd``), as SCM_RIGHTS on the line
they belong to. Nothing here is thread-safe: use one Client per thread.
"""

import array
import base64
import binascii
import collections
import json
import os
import select
import selectors
import socket
import time

__all__ = [
    "Client",
    "Event",
    "Selector",
    "Socket",
    "SockdError",
    "SocketClosed",
    "socket_path",
    "wait",
    "EVENT_READ",
    "EVENT_WRITE",
]

#: A notification: its method name and its params object.
Event = collections.namedtuple("Event", "method params")

# Error codes (sockd-protocol(7), ERRORS).
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

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

_READ_SIZE = 256 * 1024
_MAX_FDS = 16
_IOV = 1024  # buffers gathered by one sendmsg (the kernel takes up to IOV_MAX, 1024)
_FLUSH_AT = 256 * 1024  # queued request bytes that are written without waiting to block
_STREAM_CHUNK = 256 * 1024  # length of the stream recv: the most bytes per socket.received
_RECV_HIGH = 1024 * 1024  # a socket's buffered bytes that stop its stream
_DGRAM_HIGH = 1024  # a udp socket's buffered datagrams that stop its stream
_SEND_WINDOW = 1024 * 1024  # bytes sent on a socket and not known to be in the kernel
_MARK_EVERY = 256 * 1024  # a send asks for socket.sent at least this often

_SYNC = object()  # a pending request whose caller waits for its response
_DROP = object()  # a pending request whose caller gave up (timeout): drop the response

# The lines the daemon writes most, recognised without the JSON parser (others take the
# general path, so a daemon that writes them differently is still understood).
_RECV_HEAD = b'{"jsonrpc":"2.0","method":"socket.received","params":{"data":"'
_RECV_DATA = len(_RECV_HEAD)
_RESP_HEAD = b'{"jsonrpc":"2.0","id":'
_RESP_ID = len(_RESP_HEAD)
_RESULT = b'"result":'

_b64encode = binascii.b2a_base64
_b64decode = binascii.a2b_base64
_loads = json.loads


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


def _error(msg):
    err = msg.get("error") or {}
    if not isinstance(err, dict):
        err = {}
    return SockdError(err.get("code", 0), err.get("message", ""), err.get("data"))


class Client:
    """A blocking connection to sockd.

    ``path``: the control socket (None: resolved as the daemon does).
    ``timeout``: how long a call waits for its response, in seconds
    (None: forever); a call may override it with ``_timeout``.

    When the daemon goes away, the call that notices raises ConnectionError,
    and so does every later call.
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
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)
        self._next_id = 1
        self._out = []  # encoded requests not yet written
        self._out_bytes = 0
        self._tail = b""  # an unfinished line
        self._base = 0  # stream offset of self._tail[0]
        self._fds = collections.deque()  # (stream offset of the recvmsg, fd)
        self._pending = {}  # id -> _SYNC, _DROP or (Socket, method): requests not answered
        self._answers = {}  # id -> (response, fd or None) for callers that wait
        self._queues = {}  # socket handle (None: none) -> deque of (seq, Event)
        self._seq = 0
        self._socks = {}  # socket handle -> Socket, for the sockets this client drives
        self._streams = {}  # id of a stream socket.recv -> its Socket
        self._marks = {}  # id of a socket.send with socket.sent wanted -> its Socket
        self._touched = None  # while wait()/select() runs: Sockets an input changed
        self._dead = None  # why the connection is unusable, once it is
        self._closed = False
        self._writing = False  # a write is under way: requests queued meanwhile wait for the next

    # -- life cycle -----------------------------------------------------

    def fileno(self):
        """The control connection's fd (for select by callers that multiplex)."""
        return self._sock.fileno()

    def close(self):
        """Close the connection (queued requests are written first); the daemon
        closes every socket it owns."""
        if self._closed:
            return
        if self._out and self._dead is None:
            try:
                self._flush(_deadline(1.0))
            except (OSError, TimeoutError):
                pass
        self._closed = True
        self._dead = self._dead or "the client was closed"
        while self._fds:
            os.close(self._fds.popleft()[1])
        for resp, fd in self._answers.values():
            if fd is not None:
                os.close(fd)
        self._answers.clear()
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- wire -----------------------------------------------------------

    def _die(self, why):
        """The connection is unusable from now on; raises ConnectionError."""
        if self._dead is None:
            self._dead = why
        raise ConnectionError(self._dead)

    def _queue_line(self, line):
        """Queue one encoded request; written at the next flush."""
        self._out.append(line)
        self._out_bytes += len(line)
        if self._out_bytes >= _FLUSH_AT and not self._writing:
            self._flush(None)

    def flush(self, timeout=None):
        """Write every queued request now."""
        if self._dead is not None:
            raise ConnectionError(self._dead)
        if self._out:
            self._flush(_deadline(timeout))

    def _flush(self, deadline):
        """Write the queued requests with as few writes as the kernel allows, reading
        the daemon's output meanwhile when full (so neither side blocks the other)."""
        bufs = self._out
        self._out = []
        self._out_bytes = 0
        self._write(bufs, None, deadline)

    def _write(self, bufs, fd, deadline):
        """Write the byte strings BUFS in order; fd (if any) rides with the first byte.
        One sendmsg gathers up to _IOV of them; after a partial write the rest is joined
        once and written from a view."""
        self._writing = True
        try:
            while bufs:
                batch = bufs[:_IOV] if len(bufs) > _IOV else bufs
                n = self._send(batch, fd, deadline)
                fd = None
                for k, b in enumerate(batch):
                    if n < len(b):
                        break
                    n -= len(b)
                else:
                    bufs = bufs[len(batch):]
                    continue
                rest = memoryview(b"".join(bufs[k:]))[n:]
                while rest:
                    rest = rest[self._send([rest], None, deadline):]
                return
        finally:
            self._writing = False

    def _send(self, batch, fd, deadline):
        """One sendmsg of BATCH once the kernel takes something; returns the bytes taken."""
        while True:
            try:
                if fd is not None:
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                    return self._sock.sendmsg(batch, anc)
                return self._sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                self._die("writing to sockd failed: %s" % e)
            left = _left(deadline)
            p = select.poll()
            p.register(self._sock.fileno(), select.POLLIN | select.POLLOUT)
            got = p.poll(None if left is None else int(left * 1000 + 0.999))
            if not got:
                raise TimeoutError("writing to sockd timed out")
            if got[0][1] & (select.POLLIN | select.POLLHUP | select.POLLERR):
                self._read()

    def send_raw(self, data):
        """Write raw bytes (one or more lines) to the daemon, after the queued requests."""
        if self._dead is not None:
            raise ConnectionError(self._dead)
        if self._out:
            self._flush(None)
        self._write([data if isinstance(data, bytes) else data.encode()], None, None)

    def _pump(self, deadline):
        """Flush, wait for input until deadline and handle what came. False on timeout."""
        if self._dead is not None:
            raise ConnectionError(self._dead)
        if self._out:
            self._flush(deadline)
        if deadline is None:
            ready = self._poll.poll()
        else:
            left = deadline - time.monotonic()
            ready = self._poll.poll(max(0, int(left * 1000 + 0.999))) if left > 0 else []
            if not ready and left > 0:
                ready = self._poll.poll(0)
        if not ready:
            return False
        self._read()
        return True

    def _read(self):
        """Read once what is there and handle every whole line of it."""
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
        except OSError as e:
            self._die("reading from sockd failed: %s" % e)
        tail = self._tail
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                for fd in fds:
                    if data:
                        self._fds.append((self._base + len(tail), fd))
                    else:
                        os.close(fd)
        if not data:
            self._die("sockd closed the connection")
        lines = data.split(b"\n")
        if tail:
            lines[0] = tail + lines[0]
        self._tail = lines.pop()
        self._dispatch(lines)

    def _dispatch(self, lines):
        """Handle whole lines from the daemon: responses and notifications."""
        streams = self._streams
        pending = self._pending
        off = self._base
        for line in lines:
            start = off
            off += len(line) + 1
            # the hot paths first: stream data, and answers to pipelined sends
            kind = line[18:19]  # {"jsonrpc":"2.0","m... or {"jsonrpc":"2.0","i...
            if kind == b"m":
                if line.startswith(_RECV_HEAD):
                    e = line.find(b'"', _RECV_DATA)
                    r = line.find(b',"request":', e)
                    if r > 0 and line.endswith(b"}}"):
                        try:
                            sock = streams.get(int(line[r + 11 : -2]))
                        except ValueError:
                            sock = None
                        if sock is not None and not sock._dgram:
                            buf = sock._buf
                            buf += _b64decode(line[_RECV_DATA:e])
                            eof = line.startswith(b',"eof":true', e + 1)
                            if eof or len(buf) > _RECV_HIGH or self._touched is not None:
                                sock._data(eof)
                            continue
            elif kind == b"i":
                c = line.find(b",", _RESP_ID)
                try:
                    rid = int(line[_RESP_ID:c])
                except ValueError:
                    rid = None
                h = pending.get(rid)
                if h.__class__ is Socket:  # a pipelined send: its answer only matters if an error
                    del pending[rid]
                    if line.startswith(_RESULT, c + 1):
                        continue
                    try:
                        h._answered("socket.send", rid, _error(_loads(line)))
                    except ValueError:
                        pass
                    continue
                if (h is not None and h is not _SYNC and not self._fds
                        and line.startswith(_RESULT, c + 1)):
                    del pending[rid]
                    if h is not _DROP:
                        h[0]._answered(h[1], rid, None)
                    continue
            line = line.strip()
            if not line:
                continue
            try:
                msg = _loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue  # a batch answer to send_raw: not ours
            if "id" in msg:
                self._response(msg, self._claim_fd(start) if self._fds else None)
            elif isinstance(msg.get("method"), str):
                params = msg.get("params")
                self._notification(msg["method"], params if isinstance(params, dict) else {})
        self._base = off

    def _claim_fd(self, start):
        """The fd that rode with the line starting at START, or None."""
        if not self._fds or self._fds[0][0] > start:
            return None
        origin, fd = self._fds.popleft()
        while self._fds and self._fds[0][0] == origin:
            os.close(self._fds.popleft()[1])
        return fd

    def _response(self, msg, fd):
        rid = msg.get("id")
        if rid is None and "error" in msg and self._pending:
            # invalid JSON or a line too long: answers come in order, so it is the oldest
            rid = next(iter(self._pending))
        try:
            h = self._pending.pop(rid, None)
        except TypeError:
            h = None
        if h is _SYNC:
            self._answers[rid] = (msg, fd)
            return
        if fd is not None:
            os.close(fd)
        if h is None or h is _DROP:
            return
        if h.__class__ is Socket:
            h._answered("socket.send", rid, _error(msg) if "error" in msg else None)
        else:
            h[0]._answered(h[1], rid, _error(msg) if "error" in msg else None)

    def _notification(self, method, params):
        sid = params.get("socket")
        sock = self._socks.get(sid)
        if method == "socket.accepted" and sock is None:
            # an auto_accept listener's new connection waits on the listener's queue
            lst = self._socks.get(params.get("listener"))
            if lst is not None and lst._auto_accept:
                sid, sock = lst.id, lst
        if sock is not None:
            if self._touched is not None:
                self._touched.add(sock)
            if sock._event(method, params):
                return
        self._seq += 1
        q = self._queues.get(sid)
        if q is None:
            q = self._queues[sid] = collections.deque()
        q.append((self._seq, Event(method, params)))

    def _new_id(self):
        rid = self._next_id
        self._next_id = rid + 1
        return rid

    def _encode(self, rid, method, params):
        msg = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params is not None:
            msg["params"] = params
        return json.dumps(msg, separators=(",", ":")).encode() + b"\n"

    def _start(self, method, params, handler):
        """Queue a request whose answer goes to HANDLER (a (Socket, method) pair);
        returns its id."""
        if self._dead is not None:
            raise ConnectionError(self._dead)
        rid = self._next_id
        self._next_id = rid + 1
        self._pending[rid] = handler
        self._queue_line(self._encode(rid, method, params))
        return rid

    def _answer(self, rid, what, timeout):
        """The response to request RID (started with _SYNC): (result, fd or None)."""
        deadline = _deadline(timeout)
        answers = self._answers
        try:
            while rid not in answers:
                if not self._pump(deadline):
                    raise TimeoutError("no response to %s within %ss" % (what, timeout))
        except BaseException:
            if self._pending.get(rid) is _SYNC:
                self._pending[rid] = _DROP
            raise
        resp, fd = answers.pop(rid)
        if "error" in resp:
            if fd is not None:
                os.close(fd)
            raise _error(resp)
        return resp.get("result"), fd

    # -- calls ----------------------------------------------------------

    def request(self, method, params=None, fd=None, timeout=None):
        """Call METHOD with the PARAMS dict; returns (result, fd or None).

        Raises SockdError on an error response, TimeoutError when no
        response came within timeout seconds, ConnectionError when the
        daemon went away.
        """
        if self._dead is not None:
            raise ConnectionError(self._dead)
        rid = self._new_id()
        line = self._encode(rid, method, params)
        self._pending[rid] = _SYNC
        if fd is None:
            self._queue_line(line)
        else:
            if self._out:
                self._flush(_deadline(timeout))
            self._write([line], fd, _deadline(timeout))
        return self._answer(rid, method, timeout)

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
        if self._dead is not None:
            raise ConnectionError(self._dead)
        msg = {"jsonrpc": "2.0", "method": method}
        if params:
            msg["params"] = params
        self._queue_line(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

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

    def _take(self, method, sid, any_socket):
        """Remove and return the oldest queued Event named METHOD (None: any) about
        socket SID (any_socket: about any socket), or None."""
        if not any_socket:
            q = self._queues.get(sid)
            if not q:
                return None
            for i, (_, ev) in enumerate(q):
                if method is None or ev.method == method:
                    del q[i]
                    if not q:
                        del self._queues[sid]
                    return ev
            return None
        best = None
        for key, q in self._queues.items():
            for i, (seq, ev) in enumerate(q):
                if method is None or ev.method == method:
                    if best is None or seq < best[0]:
                        best = (seq, key, i)
                    break
        if best is None:
            return None
        q = self._queues[best[1]]
        ev = q[best[2]][1]
        del q[best[2]]
        if not q:
            del self._queues[best[1]]
        return ev

    def wait_event(self, method=None, socket=None, timeout=None, _raise=True):
        """The next notification named METHOD (None: any) about SOCKET (None: any).

        Others stay queued, in order. Raises TimeoutError after timeout seconds.
        """
        deadline = _deadline(timeout)
        while True:
            ev = self._take(method, socket, socket is None)
            if ev is not None:
                return ev
            if not self._pump(deadline):
                if _raise:
                    raise TimeoutError("no %s within %ss" % (method or "notification", timeout))
                return None

    # -- many sockets at once -------------------------------------------

    def wait(self, sockets, timeout=None):
        """The sockets among SOCKETS that can go on without blocking; [] on timeout.

        A socket is ready when ``recv`` would return at once (bytes or a
        datagram buffered, end of file), when its ``connect(wait=False)``
        finished (connected or failed: ``wait_connected`` returns at once),
        when a listener has a connection waiting (``accept``), when it
        closed, or when a pipelined call on it failed (the next call raises).
        Blocks until at least one is ready (at most timeout seconds; None:
        no limit). Receiving is set up on each socket that can receive.
        """
        socks = list(sockets)
        return [s for s, _ in self._select([(s, EVENT_READ) for s in socks], timeout)]

    def _select(self, items, timeout):
        """(Socket, events wanted) pairs -> [(Socket, events ready)], waiting until timeout."""
        if self._dead is not None:
            raise ConnectionError(self._dead)
        for s, ev in items:
            if ev & EVENT_READ:
                s._arm_if_possible()
        ready = [(s, r) for s, r in ((s, s._ready(ev)) for s, ev in items) if r]
        if ready:
            return ready
        if timeout is not None and timeout <= 0:
            if self._out:
                self._flush(None)
            if self._poll.poll(0):
                self._read()
            return [(s, r) for s, r in ((s, s._ready(ev)) for s, ev in items) if r]
        wanted = dict(items)
        deadline = _deadline(timeout)
        self._touched = set()
        try:
            while True:
                if not self._pump(deadline):
                    return []
                touched, self._touched = self._touched, set()
                ready = []
                for s in touched:
                    ev = wanted.get(s)
                    if ev:
                        r = s._ready(ev)
                        if r:
                            ready.append((s, r))
                if ready:
                    return ready
        finally:
            self._touched = None

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


def wait(sockets, timeout=None):
    """``Client.wait`` for SOCKETS (all of one client): the ones ready, [] on timeout."""
    socks = list(sockets)
    if not socks:
        return []
    return socks[0].client.wait(socks, timeout)


class Selector(selectors.BaseSelector):
    """A ``selectors`` selector over sockd Sockets (all of one Client).

    ``register(sock, EVENT_READ | EVENT_WRITE, data)``; ``select(timeout)``
    returns ``(key, events)`` pairs. EVENT_READ is ready as a socket is for
    ``wait`` except the end of a connect; EVENT_WRITE once it is connected
    (or closed, or failed). The key's ``fd`` is the socket's handle.
    """

    def __init__(self):
        self._map = {}
        self._client = None

    def register(self, fileobj, events, data=None):
        if not isinstance(fileobj, Socket):
            raise ValueError("sockd.Selector takes sockd.Socket objects")
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError("invalid events: %r" % (events,))
        if fileobj in self._map:
            raise KeyError("%r is already registered" % (fileobj,))
        if self._client is None:
            self._client = fileobj.client
        elif fileobj.client is not self._client:
            raise ValueError("all sockets of a Selector belong to one Client")
        key = selectors.SelectorKey(fileobj, fileobj.id, events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj):
        try:
            return self._map.pop(fileobj)
        except KeyError:
            raise KeyError("%r is not registered" % (fileobj,)) from None

    def select(self, timeout=None):
        if not self._map:
            if timeout is None:
                raise ValueError("select() on an empty Selector would wait forever")
            time.sleep(max(0, timeout))
            return []
        items = [(s, key.events) for s, key in self._map.items()]
        return [(self._map[s], r) for s, r in self._client._select(items, timeout)]

    def get_map(self):
        return _KeyMap(self._map)

    def close(self):
        self._map.clear()


class _KeyMap(collections.abc.Mapping):
    def __init__(self, m):
        self._m = m

    def __len__(self):
        return len(self._m)

    def __getitem__(self, fileobj):
        try:
            return self._m[fileobj]
        except (KeyError, TypeError):
            raise KeyError("%r is not registered" % (fileobj,)) from None

    def __iter__(self):
        return iter(self._m)


# Methods after which the daemon has ended a pending receive of the socket.
_ENDS_RECV = frozenset(
    ("socket.starttls", "socket.pipe", "socket.give", "socket.detach", "socket.shutdown",
     "socket.recv_cancel", "socket.close")
)


class Socket:
    """One sockd socket, driven with blocking calls.

    ``Socket(client, "tcp")`` opens a new socket (type tcp, tls, udp, dtls or
    unix; tls/dtls need ``context``); ``Socket(client, handle=N)`` wraps a
    handle the client already owns (from accept or take);
    ``Socket.many(client, n)`` opens n at once. Timeouts are in seconds;
    None waits forever.
    """

    def __init__(self, client, type="tcp", context=None, handle=None, **params):
        self.client = client
        self.type = type
        self.closed = None  # the socket.closed params once it ended
        self.connected = None  # the socket.connected (or accepted) params
        self.tls = None
        self._dgram = type in ("udp", "dtls")
        self._buf = bytearray()  # received bytes not yet returned by recv
        self._dgrams = collections.deque()  # received datagrams: (bytes, from)
        self._eof = False  # the last byte of the stream is in _buf
        self._stream = 0  # id of the armed stream socket.recv (0: none)
        self._canceling = 0  # id of the stream a pipelined recv_cancel ends
        self._want = 0  # bytes a blocked recv waits for (stream bound)
        self._err = None  # the error of a pipelined call, raised by the next call
        self._connecting = False  # connect(wait=False) issued, wait_connected not yet
        self._auto_accept = False
        self._listening = False
        self._pos = 0  # bytes handed to send so far
        self._acked = 0  # of those, bytes known to be in the kernel (socket.sent)
        self._marks = collections.deque()  # (send id, _pos after it) waiting for socket.sent
        if handle is not None:
            self.id = handle
            self._adopt()
            return
        if context is not None:
            params["context"] = context
        self.id = client.call("socket.open", type=type, **params)["socket"]
        client._socks[self.id] = self

    @classmethod
    def many(cls, client, n, type="tcp", context=None, **params):
        """N new Sockets of TYPE, opened with pipelined socket.open requests (one
        round trip in all). On an error the ones opened are closed and it is raised."""
        if context is not None:
            params["context"] = context
        params["type"] = type
        rids = [client._start("socket.open", params, _SYNC) for _ in range(n)]
        socks, err = [], None
        for rid in rids:
            try:
                result, fd = client._answer(rid, "socket.open", client.timeout)
            except SockdError as e:
                err = err or e
                continue
            s = cls(client, type, handle=result["socket"])
            socks.append(s)
        if err is not None:
            for s in socks:
                s.close()
            raise err
        return socks

    def __repr__(self):
        return "<sockd.Socket %s %d%s>" % (self.type, self.id, " closed" if self.closed else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- bookkeeping (driven by Client._dispatch) -----------------------

    def _adopt(self):
        """Register with the client and take in the state events already queued."""
        c = self.client
        c._socks[self.id] = self
        q = c._queues.get(self.id)
        for _, ev in list(q or ()):
            self._state(ev.method, ev.params)

    def _state(self, method, params):
        """Apply a state notification to the attributes."""
        if method == "socket.connected" or (
            method == "socket.accepted" and params.get("socket") == self.id
        ):
            self.connected = params
            self.tls = params.get("tls")
        elif method == "socket.tls_upgraded":
            self.tls = params.get("tls")
        elif method == "socket.closed":
            self.closed = params
            self._ended()

    def _event(self, method, params):
        """A notification about this socket: True when absorbed here, False to queue it."""
        c = self.client
        if method == "socket.received":
            rid = params.get("request")
            if rid is not None and c._streams.get(rid) is self:
                try:
                    data = _b64decode(params.get("data", ""))
                except (binascii.Error, TypeError):
                    data = b""
                if self._dgram:
                    if data or not params.get("eof"):
                        self._dgrams.append((data, params.get("from")))
                    if params.get("eof"):
                        self._eof = True
                        self._stream_gone(rid)
                    elif len(self._dgrams) > _DGRAM_HIGH:
                        self._cancel()
                else:
                    self._buf += data
                    self._data(bool(params.get("eof")))
                return True
            return False
        if method == "socket.sent":
            rid = params.get("request")
            if rid is not None and c._marks.get(rid) is self:
                self._sent(rid)
                return True
            return False
        self._state(method, params)
        return False

    def _data(self, eof):
        """Bytes of this socket's stream arrived (already in _buf)."""
        buf = self._buf
        if eof:
            self._eof = True
            self._stream_gone(self._stream)
            self._stream_gone(self._canceling)
        elif len(buf) > _RECV_HIGH and len(buf) > self._want and self._stream:
            self._cancel()
        if self.client._touched is not None:
            self.client._touched.add(self)

    def _arm(self):
        """Start the stream receive (pipelined) unless one runs or the input ended."""
        if self._stream or self._eof or self.closed is not None:
            return
        c = self.client
        length = 65507 if self._dgram else _STREAM_CHUNK
        rid = c._start("socket.recv", {"socket": self.id, "length": length, "stream": True},
                       (self, "socket.recv"))
        self._stream = rid
        c._streams[rid] = self

    def _arm_if_possible(self):
        if not self._stream and not self._listening and len(self._buf) < _RECV_HIGH and (
            self.connected is not None or self._connecting
        ):
            self._arm()

    def _cancel(self):
        """Stop the stream (pipelined socket.recv_cancel); bytes in flight still come."""
        if self._stream and not self._canceling:
            self._canceling = self._stream
            self.client._start("socket.recv_cancel", {"socket": self.id},
                               (self, "socket.recv_cancel"))

    def _stream_gone(self, rid):
        """The stream RID delivers no more."""
        if rid:
            self.client._streams.pop(rid, None)
            if self._stream == rid:
                self._stream = 0
            if self._canceling == rid:
                self._canceling = 0

    def _ended(self):
        """The socket is gone in the daemon: nothing more comes for it."""
        c = self.client
        self._stream_gone(self._stream)
        self._stream_gone(self._canceling)
        for rid, _ in self._marks:
            c._marks.pop(rid, None)
        c._socks.pop(self.id, None)

    def _answered(self, method, rid, err):
        """The response to a pipelined request of this socket (err: a SockdError or None)."""
        if method == "socket.recv":
            if err is not None:
                self._stream_gone(rid)
                self._fail(err)
        elif method == "socket.recv_cancel":
            self._stream_gone(self._canceling)
        elif method == "socket.close":
            self._forget()
        elif err is not None:
            if method == "socket.send":
                self._marks_fail()
            self._fail(err)

    def _fail(self, err):
        if self._err is None and not (err.code == UNKNOWN_HANDLE and self.closed is not None):
            self._err = err
        if self.client._touched is not None:
            self.client._touched.add(self)

    def _forget(self):
        """Drop everything the client keeps for this socket (after close)."""
        c = self.client
        self._ended()
        c._queues.pop(self.id, None)

    def _consume(self, *methods):
        """Remove the oldest queued event of this socket named one of METHODS."""
        q = self.client._queues.get(self.id)
        if q:
            for i, (_, ev) in enumerate(q):
                if ev.method in methods:
                    del q[i]
                    if not q:
                        del self.client._queues[self.id]
                    return ev
        return None

    def _raise(self):
        """Raise the pending error of a pipelined call, or SocketClosed if closed."""
        err = self._err
        if err is not None:
            self._err = None
            raise err
        if self.closed is not None:
            self._consume("socket.closed")
            raise SocketClosed(self.closed)

    def _check(self):
        if self._err is not None or self.closed is not None:
            self._raise()
        if self.client._dead is not None:
            raise ConnectionError(self.client._dead)

    def _ready(self, events):
        """The subset of EVENTS (EVENT_READ, EVENT_WRITE) that would not block now."""
        if self._err is not None or self.closed is not None:
            return events
        r = 0
        if events & EVENT_READ:
            if self._connecting and self.connected is not None:
                r = EVENT_READ
            elif self._listening:
                q = self.client._queues.get(self.id)
                if q and any(
                    ev.method in ("socket.incoming", "socket.accepted") for _, ev in q
                ):
                    r = EVENT_READ
            elif self._buf or self._dgrams or self._eof:
                r = EVENT_READ
        if events & EVENT_WRITE and self.connected is not None:
            if self._pos - self._acked < _SEND_WINDOW:
                r |= EVENT_WRITE
        return r

    def _until(self, done, deadline, what, timeout):
        """Pump the client until done() (raising a pipelined error or ConnectionError)."""
        c = self.client
        while not done():
            if self._err is not None:
                self._raise()
            if not c._pump(deadline):
                raise TimeoutError("%s: not done within %ss" % (what, timeout))

    def _next_own(self, methods, timeout, what):
        """Take the next queued event of this socket named one of METHODS, waiting for it;
        raises SocketClosed (or a pipelined call's error) if the socket ends first."""
        got = []

        def arrived():
            ev = self._consume(*methods)
            if ev is not None:
                got.append(ev)
            return bool(got) or self.closed is not None

        self._until(arrived, _deadline(timeout), what, timeout)
        if not got:
            self._raise()
        return got[0]

    def call(self, method, **params):
        """Call a socket.* METHOD on this socket (waits for its response)."""
        self._check()
        result = self.client.call(method, socket=self.id, **params)
        if method in _ENDS_RECV:  # the daemon ended the stream (a failed call changes nothing)
            self._stream_gone(self._stream)
            self._stream_gone(self._canceling)
        return result

    def _start(self, method, params):
        """Queue a request about this socket; its error is raised by a later call."""
        params["socket"] = self.id
        return self.client._start(method, params, (self, method))

    # -- connecting -----------------------------------------------------

    def connect(self, address, timeout=None, server_name=None, wait=True, **params):
        """Connect to ADDRESS ("host:port", "[v6]:port", "/path", "@name").

        Waits for socket.connected (returns its params) unless wait=False;
        raises SocketClosed if the connect failed (reason on the exception).
        With wait=False the request is only queued: an error answer (a bad
        address, a policy denial) is raised by the next call on the socket;
        and receiving is set up at once (the stream receive, queued with it),
        so bytes the peer sends are here by the time recv asks for them.
        """
        self._check()
        if timeout is not None:
            params["timeout_ms"] = max(1, int(timeout * 1000))
        if server_name is not None:
            params["server_name"] = server_name
        params["address"] = address
        self._start("socket.connect", params)
        self._connecting = True
        if wait:
            return self.wait_connected(None if timeout is None else timeout + 5)
        self._arm()  # fan-out style: bytes are pushed here as they come; recv needs no round trip
        return None

    def wait_connected(self, timeout=None):
        """Wait for the connect (or accept) to complete; returns the params."""
        if self.connected is None:
            self._until(lambda: self.connected is not None or self.closed is not None,
                        _deadline(timeout), "connect", timeout)
        self._connecting = False
        if self.connected is None:
            self._raise()
        self._consume("socket.connected", "socket.accepted")
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
        self._listening = True
        self._auto_accept = bool(auto_accept)

    def accept(self, timeout=None, **params):
        """Wait for an incoming connection and accept it; returns a new Socket
        (ready for data: after the TLS handshake for tls)."""
        self._check()
        ev = self._next_own(("socket.incoming", "socket.accepted"), timeout, "accept")
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
        """Send DATA (bytes or str); returns the byte count.

        wait=True waits until the daemon handed it all to the kernel
        (socket.sent). wait=False only queues the request: an error answer
        is raised by the next call on the socket. Either way at most 1 MiB
        may be on its way to the kernel; a send beyond that waits for room
        (so the daemon's send buffer never refuses one).
        """
        if isinstance(data, str):
            data = data.encode()
        if self._err is not None or self.closed is not None:
            self._raise()
        c = self.client
        if c._dead is not None:
            raise ConnectionError(c._dead)
        n = len(data)
        self._connecting = False
        if self._pos - self._acked + n > _SEND_WINDOW and self._pos > self._acked:
            self._wait_acked(min(self._pos, self._pos + n - _SEND_WINDOW), timeout)
        pos = self._pos + n
        last = self._marks[-1][1] if self._marks else self._acked
        mark = wait or self._dgram or pos - last >= _MARK_EVERY
        rid = c._next_id
        c._next_id = rid + 1
        c._pending[rid] = self  # a send: the Socket itself, no (Socket, method) pair
        out = c._out
        out.append(b'{"jsonrpc":"2.0","id":%d,"method":"socket.send","params":'
                   b'{"socket":%d,"data":"' % (rid, self.id))
        out.append(_b64encode(data, newline=False))
        out.append(b'"}}\n' if mark else b'","notify":false}}\n')
        self._pos = pos
        if mark:
            self._marks.append((rid, pos))
            c._marks[rid] = self
        c._out_bytes += n + 100
        if c._out_bytes >= _FLUSH_AT and not c._writing:
            c._flush(None)
        if wait:
            self._wait_acked(pos, timeout)
        return n

    def _sent(self, rid):
        """socket.sent for the marked send RID: everything up to it is in the kernel."""
        c = self.client
        while self._marks:
            r, pos = self._marks.popleft()
            c._marks.pop(r, None)
            if r == rid:
                self._acked = pos
                break

    def _marks_fail(self):
        """A send failed: the marks after it will not all come; stop waiting for them."""
        c = self.client
        for r, _ in self._marks:
            c._marks.pop(r, None)
        self._marks.clear()
        self._acked = self._pos

    def _wait_acked(self, pos, timeout):
        """Wait until the first POS bytes sent are in the kernel."""
        if self._acked >= pos:
            return
        if not self._marks or self._marks[-1][1] < pos:
            # an empty send completes after every byte before it (stream sockets)
            rid = self._start("socket.send", {"data": ""})
            self._marks.append((rid, self._pos))
            self.client._marks[rid] = self
        self._until(lambda: self._acked >= pos or self.closed is not None,
                    _deadline(timeout), "send", timeout)
        if self._acked < pos or self._err is not None:
            self._raise()

    def wait_sent(self, timeout=None):
        """Wait until every byte sent so far was handed to the kernel."""
        if self._acked >= self._pos:
            if self._err is not None:
                self._raise()
            return
        self._check()
        self._wait_acked(self._pos, timeout)

    def sendto(self, data, address, **params):
        """Send one datagram to ADDRESS (udp)."""
        return self.call("socket.sendto", data=_b64(data), address=address, **params)["queued"]

    def recv(self, n, partial=False, timeout=None):
        """Receive exactly N bytes (partial=True: 1..N); b"" at the end of the stream.

        A stream cut short by EOF returns what arrived. On timeout raises
        TimeoutError; bytes that arrived by then are kept for the next recv.
        Udp: one datagram (cut to N bytes).
        """
        buf = self._buf
        have = len(buf)
        if have == n:
            out = bytes(buf)
            buf.clear()
            return out
        if have > n > 0 or (partial and buf):
            out = bytes(buf[:n])
            del buf[:n]
            return out
        if n <= 0:
            raise ValueError("n must be positive")
        if self._dgram:
            return self.recvfrom(n, timeout)[0]
        if self._err is not None:
            self._raise()
        self._connecting = False
        if not self._eof and self.closed is None:
            self._want = n
            try:
                self._arm()
                self._until(
                    lambda: len(buf) >= n or (partial and buf) or self._eof
                    or self.closed is not None or (not self._stream and self._arm()),
                    _deadline(timeout), "recv", timeout)
            except TimeoutError:
                raise TimeoutError("recv: %d of %d bytes within %ss" % (len(buf), n, timeout))
            finally:
                self._want = 0
        if len(buf) >= n or (partial and buf):
            out = bytes(buf[:n])
            del buf[:n]
            return out
        if self.closed is not None and self.closed.get("reason") not in ("by_peer", "normal"):
            self._raise()
        out = bytes(buf)
        buf.clear()
        return out

    def readline(self, until=b"\n", limit=65536, timeout=None):
        """Receive one line: the bytes up to and including UNTIL (bytes or str, 1 to 16
        bytes; b"\r\n" for SMTP, Redis or HTTP headers).

        As ``file.readline(limit)``: a line longer than LIMIT comes in pieces of LIMIT
        bytes that do not end with UNTIL (the rest stays for the next call); at the end
        of the stream what is left comes without UNTIL, then b"". On timeout raises
        TimeoutError; bytes that arrived stay for the next call.

        The line is cut here, from the bytes the stream receive already pushed (the
        daemon's own framing, ``socket.recv`` with ``until``, is what a client without
        such a buffer uses): a line already here costs no round trip, and each search
        starts where the last one stopped.
        """
        if isinstance(until, str):
            until = until.encode()
        k = len(until)
        if not 1 <= k <= 16:
            raise ValueError("until must be 1 to 16 bytes")
        if limit < k:
            raise ValueError("limit must hold the delimiter")
        if self._dgram:
            raise ValueError("readline: %s sockets carry datagrams, not lines" % self.type)
        buf = self._buf
        seen = [0, 0]  # bytes searched without a match; the length of the line found

        def found():
            end = min(len(buf), limit)
            i = buf.find(until, max(0, seen[0] - k + 1), end)
            if i >= 0:
                seen[1] = i + k
            else:
                seen[0] = end
            return seen[1]

        if not found() and len(buf) < limit and not self._eof and self.closed is None:
            if self._err is not None:
                self._raise()
            self._connecting = False
            self._want = limit
            try:
                self._arm()
                self._until(
                    lambda: found() or len(buf) >= limit or self._eof
                    or self.closed is not None or (not self._stream and self._arm()),
                    _deadline(timeout), "readline", timeout)
            except TimeoutError:
                raise TimeoutError("readline: no %r in %d bytes within %ss"
                                   % (until, len(buf), timeout))
            finally:
                self._want = 0
        n = seen[1] or min(len(buf), limit)
        if not seen[1] and len(buf) < limit and self.closed is not None and (
                self.closed.get("reason") not in ("by_peer", "normal")):
            self._raise()
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def recvfrom(self, n=65536, timeout=None):
        """One datagram (udp): returns (data, from-address dict)."""
        if not self._dgrams:
            if self._err is not None:
                self._raise()
            self._connecting = False
            if not self._eof and self.closed is None:
                try:
                    self._arm()
                    self._until(
                        lambda: self._dgrams or self._eof or self.closed is not None
                        or (not self._stream and self._arm()),
                        _deadline(timeout), "recvfrom", timeout)
                except TimeoutError:
                    raise TimeoutError("recvfrom: nothing within %ss" % timeout)
            if not self._dgrams:
                if self.closed is not None:
                    self._raise()
                return b"", None
        data, frm = self._dgrams.popleft()
        return data[:n], frm

    def _quiet(self):
        """Stop the stream and wait until it is stopped; raise if received bytes wait
        here (they would be lost to what comes next)."""
        if self._stream and not self._canceling:
            self._cancel()
        timeout = self.client.timeout
        self._until(lambda: not self._stream or self.closed is not None, _deadline(timeout),
                    "recv_cancel", timeout)

    def _unread(self):
        if self._buf or self._dgrams:
            raise SockdError(WRONG_STATE, "%d received bytes not yet read; recv them first"
                             % (len(self._buf) + sum(len(d) for d, _ in self._dgrams)))

    # -- TLS ------------------------------------------------------------

    def starttls(self, context, server_name=None, server_side=False, timeout=None):
        """Upgrade to TLS on this socket; returns the tls object once done.
        Raises SocketClosed (reason tls_handshake_failed) when it fails, and
        SockdError (-32002) if received bytes wait here unread (recv them first)."""
        self._check()
        self._quiet()
        self._unread()
        params = {"context": context, "server_side": server_side}
        if server_name is not None:
            params["server_name"] = server_name
        self.call("socket.starttls", **params)
        self.tls = self._next_own(("socket.tls_upgraded",), timeout, "starttls").params.get("tls")
        return self.tls

    # -- the end --------------------------------------------------------

    def shutdown(self, timeout=None):
        """Flush what is queued (TLS close_notify), then close; returns the reason."""
        if self.closed is not None:
            self._consume("socket.closed")
            return self.closed.get("reason")
        self.call("socket.shutdown")
        self._until(lambda: self.closed is not None, _deadline(timeout), "shutdown", timeout)
        self._consume("socket.closed")
        return self.closed.get("reason")

    def close(self):
        """Close at once (queued bytes are discarded); nothing to wait for.

        The request is pipelined; an error of an earlier pipelined call on
        this socket is dropped with it.
        """
        if self.closed is not None:
            self._forget()
            return
        self.closed = {"socket": self.id, "reason": "normal"}
        self._err = None
        if self.client._dead is None:
            self._start("socket.close", {})
        else:
            self._forget()

    # -- more -----------------------------------------------------------

    def info(self):
        return self.call("socket.info")

    def setopt(self, **opts):
        return self.call("socket.setopt", **opts)

    def give(self, timeout=None):
        """Hand the socket to another client; returns the token (the handle dies).
        Raises SockdError (-32002) if received bytes already wait here."""
        self._check()
        self._quiet()
        self._unread()
        params = {} if timeout is None else {"timeout_ms": max(1, int(timeout * 1000))}
        token = self.call("socket.give", **params)["token"]
        self.closed = {"socket": self.id, "reason": "given"}
        self._forget()
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

        Bytes already received and not yet read (here or in the daemon) are
        in ``.detached["data"]`` (base64; udp: ``["datagrams"]``) so nothing is lost.
        """
        self._check()
        self._quiet()
        result, fd = self.client.call_fd("socket.detach", socket=self.id)
        if fd is None:
            raise SockdError(INTERNAL_ERROR, "no descriptor came with the response")
        if self._buf:
            rest = base64.b64decode(result.get("data", ""))
            result["data"] = _b64(bytes(self._buf) + rest)
            self._buf.clear()
        if self._dgrams:
            mine = [dict({"data": _b64(d)}, **({"from": f} if f else {})) for d, f in self._dgrams]
            result["datagrams"] = mine + result.get("datagrams", [])
            self._dgrams.clear()
        self.closed = {"socket": self.id, "reason": "detached"}
        self._forget()
        s = socket.socket(fileno=fd)
        self.detached = result
        return s

    def pipe(self):
        """socket.pipe: returns a socket.socket whose bytes the daemon relays
        to and from this socket (TLS included). EOF passes both ways.
        Raises SockdError (-32002) if received bytes already wait here."""
        self._check()
        self._quiet()
        self._unread()
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
        if s.state == "connected" and s.connected is None:
            s.connected = result
        return s
