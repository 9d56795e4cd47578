--[[
sockd.lua: a blocking Lua 5.4 client for the sockd socket broker.

One Client is one control connection to the daemon (JSON-RPC 2.0, one
message a line, over a Unix socket); a Socket wraps one socket handle with
blocking methods, so one coroutine-free script drives many sockets:

    local sockd = require("sockd")
    local c = sockd.Client.new()
    local s = sockd.Socket.new(c, "tcp")
    s:connect("127.0.0.1:7")
    s:send("hello\n")
    print(s:readline())
    s:close()
    c:close()

The same shape as contrib/python/sockd.py, and the same tricks
(sockd-protocol(7), ORDERING GUARANTEES and RECEIVING):

- Calls that need no answer yet (connect and send with wait = false,
  close, setting up a receive) are only queued; they go out in one write
  when the script next has to wait. An error in their answer is raised by
  the next call on that socket.
- A socket receives with one socket.recv {stream = true}: the daemon pushes
  bytes as they arrive, recv and readline take them from the socket's
  buffer without a round trip. Above 1 MiB buffered the stream is stopped
  until the script catches up.

Needs Debian's lua5.4, lua-socket (socket.unix for the control socket,
mime for base64, both in C) and lua-cjson. Errors are raised as tables
with a kind ("sockd", "closed", "timeout", "connection"), a message and
tostring(); sockd.is_timeout(err) tells a timeout. Timeouts are seconds;
nil waits forever. What it cannot do is in contrib/lua/README.
]]

local unix = require("socket.unix")
local mime = require("mime")
local cjson = require("cjson")

local M = {}

-- Error codes (sockd-protocol(7), ERRORS).
M.PARSE_ERROR = -32700
M.INVALID_REQUEST = -32600
M.METHOD_NOT_FOUND = -32601
M.INVALID_PARAMS = -32602
M.INTERNAL_ERROR = -32603
M.UNKNOWN_HANDLE = -32001
M.WRONG_STATE = -32002
M.LIMIT = -32003
M.DENIED = -32004
M.UNSUPPORTED = -32005
M.BUSY = -32006

local STREAM_CHUNK = 256 * 1024 -- length of the stream recv: the most bytes per socket.received
local RECV_HIGH = 1024 * 1024 -- a socket's buffered bytes that stop its stream
local SEND_WINDOW = 1024 * 1024 -- bytes sent on a socket and not yet known to be in the kernel
local FLUSH_AT = 256 * 1024 -- queued request bytes written without waiting to block

local SYNC = {} -- a pending request whose caller waits for its response
local DROP = {} -- a pending request whose caller gave up: drop the response

local unpack = table.unpack
local toint = math.tointeger

-- errors ------------------------------------------------------------------

local Error = {}
Error.__index = Error
Error.__tostring = function(e)
    return e.message
end

local function raise(kind, message, fields)
    local e = fields or {}
    e.kind, e.message = kind, message
    error(setmetatable(e, Error), 0)
end

local function error_of(msg)
    local err = type(msg.error) == "table" and msg.error or {}
    local data = type(err.data) == "table" and err.data or nil
    return setmetatable({
        kind = "sockd",
        code = toint(err.code) or 0,
        message = string.format("[%s] %s", tostring(toint(err.code) or err.code), tostring(err.message)),
        data = data,
        reason = data and data.reason,
    }, Error)
end

--- True when err (from pcall) is a timeout of this module.
function M.is_timeout(err)
    return type(err) == "table" and err.kind == "timeout"
end

local function b64(data)
    return mime.b64(data) or ""
end

local function unb64(text)
    return mime.unb64(text or "") or ""
end

local function now()
    return require("socket").gettime()
end

local function deadline_of(timeout)
    return timeout and now() + timeout or nil
end

-- The uid of this process, from /proc (plain Lua has no getuid).
local function getuid()
    local f = io.open("/proc/self/status")
    if f then
        for line in f:lines() do
            local uid = line:match("^Uid:%s+(%d+)")
            if uid then
                f:close()
                return tonumber(uid)
            end
        end
        f:close()
    end
    return nil
end

--- The control socket path, resolved as the daemon does.
function M.socket_path(path)
    if path then
        return path
    end
    local env = os.getenv("SOCKD_SOCKET")
    if env and env ~= "" then
        return env
    end
    local uid = getuid()
    if uid == 0 then
        return "/run/sockd/sockd.sock"
    end
    local xdg = os.getenv("XDG_RUNTIME_DIR")
    if xdg and xdg ~= "" then
        return xdg .. "/sockd.sock"
    end
    return string.format("/tmp/sockd-%d.sock", uid or 0)
end

-- Client ------------------------------------------------------------------

local Client = {}
Client.__index = Client
M.Client = Client

--- Connect to the daemon. timeout: how long a call waits for its response (default 30 s).
function Client.new(path, timeout)
    local self = setmetatable({
        path = M.socket_path(path),
        timeout = timeout or 30,
        _next_id = 1,
        _pending = {}, -- id -> SYNC, DROP or {Socket, method}
        _answers = {}, -- id -> response of a SYNC request
        _streams = {}, -- id of a stream socket.recv -> Socket
        _socks = {}, -- handle -> Socket
        _events = {}, -- queued notifications {method, params, socket}, oldest first
        _out = {}, -- request lines not yet written
        _out_bytes = 0,
    }, Client)
    local s = unix.stream()
    local ok, err = s:connect(self.path)
    if not ok then
        s:close()
        raise("connection", string.format("cannot connect to %s: %s", self.path, err))
    end
    self._sock = s
    return self
end

function Client:close()
    if self._sock then
        pcall(self._flush, self)
        self._sock:close()
        self._sock = nil
    end
    self._dead = self._dead or "closed"
end

function Client:_die(why)
    self._dead = why
    if self._sock then
        self._sock:close()
        self._sock = nil
    end
    raise("connection", why)
end

function Client:_check()
    if self._dead then
        raise("connection", self._dead)
    end
end

-- Write the queued request lines, in one write.
function Client:_flush()
    if #self._out == 0 then
        return
    end
    local data = table.concat(self._out)
    self._out, self._out_bytes = {}, 0
    local s, i = self._sock, 1
    s:settimeout(nil)
    while i <= #data do
        local last, err, partial = s:send(data, i)
        if last then
            i = last + 1
        elseif err == "timeout" then
            i = partial + 1
        else
            self:_die("writing to sockd failed: " .. tostring(err))
        end
    end
end

-- Queue a request; its answer goes to handler (SYNC or {Socket, method}). Returns its id.
function Client:_start(method, params, handler)
    self:_check()
    local rid = self._next_id
    self._next_id = rid + 1
    self._pending[rid] = handler
    local line = cjson.encode({ jsonrpc = "2.0", id = rid, method = method, params = params }) .. "\n"
    self._out[#self._out + 1] = line
    self._out_bytes = self._out_bytes + #line
    if self._out_bytes >= FLUSH_AT then
        self:_flush()
    end
    return rid
end

-- Read and handle what the daemon sent, waiting until the deadline: false on timeout.
function Client:_pump(deadline)
    self:_check()
    self:_flush()
    local s = self._sock
    local left = deadline and deadline - now()
    if left and left < 0 then
        left = 0
    end
    s:settimeout(left)
    local line, err, part = s:receive("*l", self._tail)
    if not line then
        if err == "timeout" then
            self._tail = part ~= "" and part or nil
            return false
        end
        self:_die(err == "closed" and "sockd closed the connection" or "reading from sockd failed: " .. tostring(err))
    end
    self._tail = nil
    self:_dispatch(line)
    s:settimeout(0)
    while s:dirty() do -- lines already read by the socket library: no wait
        line, err, part = s:receive("*l")
        if not line then
            self._tail = part ~= "" and part or nil
            break
        end
        self:_dispatch(line)
    end
    return true
end

function Client:_dispatch(line)
    local ok, msg = pcall(cjson.decode, line)
    if not ok or type(msg) ~= "table" then
        return
    end
    if msg.id ~= nil then
        local rid = toint(msg.id)
        local h = rid and self._pending[rid]
        if rid == nil and msg.error then -- a line the daemon could not take: the oldest request
            for id, handler in pairs(self._pending) do
                if rid == nil or id < rid then
                    rid, h = id, handler
                end
            end
        end
        if h == nil then
            return
        end
        self._pending[rid] = nil
        if h == SYNC then
            self._answers[rid] = msg
        elseif h ~= DROP then
            h[1]:_answered(h[2], rid, msg.error and error_of(msg) or nil)
        end
    elseif type(msg.method) == "string" then
        local params = type(msg.params) == "table" and msg.params or {}
        self:_notification(msg.method, params)
    end
end

function Client:_notification(method, params)
    local sid = toint(params.socket)
    local sock = sid and self._socks[sid]
    if method == "socket.accepted" and sock == nil then
        -- an auto_accept listener's new connection waits on the listener's queue
        local lst = self._socks[toint(params.listener)]
        if lst and lst._auto_accept then
            sid, sock = lst.id, lst
        end
    end
    if sock and sock:_event(method, params) then
        return
    end
    self._events[#self._events + 1] = { method = method, params = params, socket = sid }
end

-- The answer to request rid (started with SYNC): its result, or raise its error.
function Client:_answer(rid, what, timeout)
    local deadline = deadline_of(timeout)
    while self._answers[rid] == nil do
        local ok, got = pcall(self._pump, self, deadline)
        if not ok or not got then
            if self._pending[rid] == SYNC then
                self._pending[rid] = DROP
            end
            if not ok then
                error(got, 0)
            end
            raise("timeout", string.format("no response to %s within %ss", what, timeout))
        end
    end
    local msg = self._answers[rid]
    self._answers[rid] = nil
    if msg.error then
        error(error_of(msg), 0)
    end
    return msg.result
end

--- Call method with the params table (nil: none); returns the result table.
function Client:call(method, params, timeout)
    local rid = self:_start(method, params, SYNC)
    return self:_answer(rid, method, timeout or self.timeout)
end

--- Send method as a notification (never answered).
function Client:notify(method, params)
    self:_check()
    self._out[#self._out + 1] = cjson.encode({ jsonrpc = "2.0", method = method, params = params }) .. "\n"
end

-- Remove and return the oldest queued event named method (nil: any) of socket sid (nil: any).
function Client:_take(method, sid)
    for i, ev in ipairs(self._events) do
        if (method == nil or ev.method == method) and (sid == nil or ev.socket == sid) then
            table.remove(self._events, i)
            return ev
        end
    end
    return nil
end

--- The next notification {method, params} named method (nil: any) of socket (nil: any);
--- raises a timeout after timeout seconds.
function Client:wait_event(method, socket, timeout)
    local deadline = deadline_of(timeout)
    while true do
        local ev = self:_take(method, socket)
        if ev then
            return ev
        end
        if not self:_pump(deadline) then
            raise("timeout", string.format("no %s within %ss", method or "notification", timeout))
        end
    end
end

--- The next notification, or nil after timeout seconds.
function Client:next_event(timeout)
    local ok, ev = pcall(self.wait_event, self, nil, nil, timeout)
    if ok then
        return ev
    end
    if M.is_timeout(ev) then
        return nil
    end
    error(ev, 0)
end

--- The sockets among the list that can go on without blocking ({} on timeout): bytes or a
--- datagram buffered, end of file, a connect(wait = false) finished, a connection waiting on
--- a listener, closed, or a pipelined call failed. Receiving is set up on each.
function Client:wait(sockets, timeout)
    local deadline = deadline_of(timeout)
    for _, s in ipairs(sockets) do
        s:_arm_if_possible()
    end
    while true do
        local ready = {}
        for _, s in ipairs(sockets) do
            if s:_ready() then
                ready[#ready + 1] = s
            end
        end
        if #ready > 0 or (timeout and timeout <= 0) then
            return ready
        end
        if not self:_pump(deadline) then
            return {}
        end
    end
end

function Client:hello(name)
    return self:call("daemon.hello", name and { client = name } or nil)
end

function Client:ping()
    return self:call("daemon.ping")
end

function Client:stats()
    return self:call("daemon.stats")
end

--- Create a TLS context; returns its handle. opts: ca (PEM text), ca_file (read here, so the
--- daemon needs no access to it), verify (default true), alpn (a list); others pass through.
function Client:tls_context(opts)
    local params = {}
    for k, v in pairs(opts or {}) do
        params[k] = v
    end
    if params.ca_file then
        local f = assert(io.open(params.ca_file))
        params.ca = (params.ca or "") .. f:read("a")
        f:close()
        params.ca_file = nil
    end
    params.verify = params.verify ~= false
    return toint(self:call("context.create", params).context)
end

-- Socket ------------------------------------------------------------------

local Socket = {}
Socket.__index = Socket
M.Socket = Socket

local function new_socket(client, type, id)
    local s = setmetatable({
        client = client,
        type = type,
        id = id,
        closed = nil, -- the socket.closed params once it ended
        connected = nil, -- the socket.connected (or accepted) params
        tls = nil,
        _dgram = type == "udp" or type == "dtls",
        _buf = "", -- received bytes not yet returned ...
        _pos = 1, -- ... from this index on ...
        _chunks = {}, -- ... then these, not yet joined to _buf
        _nchunks = 0, -- their bytes
        _dgrams = {}, -- received datagrams {data, from}
        _eof = false, -- the last byte of the stream is buffered
        _stream = 0, -- id of the armed stream socket.recv (0: none)
        _canceling = 0, -- id of the stream a pipelined recv_cancel ends
        _want = 0, -- bytes a blocked recv waits for (bounds the stream)
        _err = nil, -- the error of a pipelined call, raised by the next call
        _sends = {}, -- id of a send -> its bytes, until its socket.sent
        _inflight = 0, -- their sum
    }, Socket)
    client._socks[id] = s
    -- state events that came before this object: take them in
    local i = 1
    while i <= #client._events do
        local ev = client._events[i]
        if ev.socket == id and s:_event(ev.method, ev.params) then
            table.remove(client._events, i)
        else
            i = i + 1
        end
    end
    return s
end

--- A new socket of type (tcp, tls, udp, dtls, unix; tls/dtls need opts.context); other opts
--- pass to socket.open. Socket.new(client, type, {handle = N}) wraps a handle already owned.
function Socket.new(client, type, opts)
    type = type or "tcp"
    opts = opts or {}
    if opts.handle then
        return new_socket(client, type, toint(opts.handle))
    end
    local params = { type = type }
    for k, v in pairs(opts) do
        params[k] = v
    end
    return new_socket(client, type, toint(client:call("socket.open", params).socket))
end

--- n new Sockets, opened with pipelined requests (one round trip in all).
function Socket.many(client, n, type, opts)
    type = type or "tcp"
    local params = { type = type }
    for k, v in pairs(opts or {}) do
        params[k] = v
    end
    local rids, socks = {}, {}
    for i = 1, n do
        rids[i] = client:_start("socket.open", params, SYNC)
    end
    local first_err
    for i = 1, n do
        local ok, r = pcall(client._answer, client, rids[i], "socket.open", client.timeout)
        if ok then
            socks[#socks + 1] = new_socket(client, type, toint(r.socket))
        else
            first_err = first_err or r
        end
    end
    if first_err then
        for _, s in ipairs(socks) do
            s:close()
        end
        error(first_err, 0)
    end
    return socks
end

function Socket:__tostring()
    return string.format("<sockd.Socket %s %d%s>", self.type, self.id, self.closed and " closed" or "")
end

-- bookkeeping (driven by Client:_dispatch) ----------------------------------

function Socket:_have()
    return #self._buf - self._pos + 1 + self._nchunks
end

-- Join the chunks that came to the buffer.
function Socket:_flat()
    if self._nchunks > 0 then
        self._chunks[0] = self._buf:sub(self._pos)
        self._buf = table.concat(self._chunks, "", 0)
        self._pos, self._chunks, self._nchunks = 1, {}, 0
    end
end

-- The first n buffered bytes, removed.
function Socket:_cut(n)
    self:_flat()
    local out = self._buf:sub(self._pos, self._pos + n - 1)
    self._pos = self._pos + #out
    if self._pos > #self._buf then
        self._buf, self._pos = "", 1
    end
    return out
end

-- A notification about this socket: true when absorbed here, false to queue it.
function Socket:_event(method, params)
    local c = self.client
    if method == "socket.received" then
        local rid = toint(params.request)
        if rid == nil or c._streams[rid] ~= self then
            return false
        end
        local data = unb64(params.data)
        if self._dgram then
            if #data > 0 or not params.eof then
                self._dgrams[#self._dgrams + 1] = { data, params.from }
            end
        elseif #data > 0 then
            self._chunks[#self._chunks + 1] = data
            self._nchunks = self._nchunks + #data
        end
        if params.eof then
            self._eof = true
            self:_stream_gone(self._stream)
            self:_stream_gone(self._canceling)
        elseif self:_have() > RECV_HIGH and self:_have() > self._want then
            self:_cancel()
        end
        return true
    elseif method == "socket.sent" then
        local rid = toint(params.request)
        local n = rid and self._sends[rid]
        if n == nil then
            return false
        end
        self._sends[rid] = nil
        self._inflight = self._inflight - n
        return true
    elseif method == "socket.connected" or (method == "socket.accepted" and toint(params.socket) == self.id) then
        self.connected, self.tls = params, params.tls
        return true
    elseif method == "socket.tls_upgraded" then
        self.tls, self._upgraded = params.tls, true
        return true
    elseif method == "socket.closed" then
        self.closed = params
        self:_ended()
        return true
    end
    return false
end

-- Start the stream receive (pipelined) unless one runs or the input ended. Returns nil.
function Socket:_arm()
    if self._stream ~= 0 or self._eof or self.closed then
        return nil
    end
    local c = self.client
    local rid = c:_start("socket.recv", {
        socket = self.id,
        length = self._dgram and 65507 or STREAM_CHUNK,
        stream = true,
    }, { self, "socket.recv" })
    self._stream = rid
    c._streams[rid] = self
    return nil
end

function Socket:_arm_if_possible()
    if self._stream == 0 and not self._listening and self:_have() < RECV_HIGH and (self.connected or self._connecting) then
        self:_arm()
    end
end

-- Stop the stream (pipelined socket.recv_cancel); bytes in flight still come.
function Socket:_cancel()
    if self._stream ~= 0 and self._canceling == 0 then
        self._canceling = self._stream
        self.client:_start("socket.recv_cancel", { socket = self.id }, { self, "socket.recv_cancel" })
    end
end

function Socket:_stream_gone(rid)
    if rid and rid ~= 0 then
        self.client._streams[rid] = nil
        if self._stream == rid then
            self._stream = 0
        end
        if self._canceling == rid then
            self._canceling = 0
        end
    end
end

-- The socket is gone in the daemon: nothing more comes for it.
function Socket:_ended()
    self:_stream_gone(self._stream)
    self:_stream_gone(self._canceling)
    self.client._socks[self.id] = nil
end

-- The response to a pipelined request of this socket (err: an error or nil).
function Socket:_answered(method, rid, err)
    if method == "socket.recv" then
        if err then
            self:_stream_gone(rid)
            self:_fail(err)
        end
    elseif method == "socket.recv_cancel" then
        self:_stream_gone(self._canceling)
    elseif method == "socket.close" then
        self:_ended()
    elseif err then
        if method == "socket.send" then -- the later marks will not all come
            self._sends, self._inflight = {}, 0
        end
        self:_fail(err)
    end
end

function Socket:_fail(err)
    if self._err == nil and not (err.code == M.UNKNOWN_HANDLE and self.closed) then
        self._err = err
    end
end

-- Raise the pending error of a pipelined call, or a "closed" error if closed.
function Socket:_raise()
    local err = self._err
    if err then
        self._err = nil
        error(err, 0)
    end
    if self.closed then
        raise("closed", string.format("socket %d closed: %s", self.id, tostring(self.closed.reason)), {
            reason = self.closed.reason,
            params = self.closed,
        })
    end
end

function Socket:_check()
    if self._err or self.closed then
        self:_raise()
    end
    self.client:_check()
end

function Socket:_ready()
    if self._err or self.closed then
        return true
    end
    if self._connecting then
        return self.connected ~= nil
    end
    if self._listening then
        for _, ev in ipairs(self.client._events) do
            if ev.socket == self.id and (ev.method == "socket.incoming" or ev.method == "socket.accepted") then
                return true
            end
        end
        return false
    end
    return self:_have() > 0 or #self._dgrams > 0 or self._eof
end

-- Pump the client until done() (raising a pipelined error, or a timeout as what).
function Socket:_until(done, deadline, what, timeout)
    local c = self.client
    while not done() do
        if self._err then
            self:_raise()
        end
        if not c:_pump(deadline) then
            raise("timeout", string.format("%s: not done within %ss", what, timeout))
        end
    end
end

-- Queue a request about this socket; its error is raised by a later call.
function Socket:_start(method, params)
    params.socket = self.id
    return self.client:_start(method, params, { self, method })
end

--- Call a socket.* method on this socket (waits for its response).
function Socket:call(method, params)
    self:_check()
    params = params or {}
    params.socket = self.id
    return self.client:call(method, params)
end

-- connecting ----------------------------------------------------------------

--- Connect to address ("host:port", "[v6]:port", "/path", "@name"). opts: timeout,
--- server_name, wait (default true: wait for socket.connected and return its params; false:
--- only queue it and set up receiving, an error is raised by the next call).
function Socket:connect(address, opts)
    opts = opts or {}
    self:_check()
    local params = { address = address, server_name = opts.server_name }
    if opts.timeout then
        params.timeout_ms = math.max(1, math.floor(opts.timeout * 1000))
    end
    self:_start("socket.connect", params)
    self._connecting = true
    if opts.wait ~= false then
        return self:wait_connected(opts.timeout and opts.timeout + 5)
    end
    self:_arm()
    return nil
end

--- Wait for the connect (or accept) to complete; returns the socket.connected params.
function Socket:wait_connected(timeout)
    if not self.connected then
        self:_until(function()
            return self.connected or self.closed
        end, deadline_of(timeout), "connect", timeout)
    end
    self._connecting = false
    if not self.connected then
        self:_raise()
    end
    return self.connected
end

function Socket:bind(address, opts)
    local params = { address = address }
    for k, v in pairs(opts or {}) do
        params[k] = v
    end
    return self:call("socket.bind", params)["local"]
end

function Socket:listen(backlog, auto_accept)
    self:call("socket.listen", { backlog = backlog, auto_accept = auto_accept and true or false })
    self._listening, self._auto_accept = true, auto_accept and true or false
end

--- Wait for an incoming connection and accept it; returns a new Socket ready for data.
function Socket:accept(timeout)
    self:_check()
    local c, ev = self.client, nil
    self:_until(function()
        ev = c:_take("socket.incoming", self.id) or c:_take("socket.accepted", self.id)
        return ev or self.closed
    end, deadline_of(timeout), "accept", timeout)
    if not ev then
        self:_raise()
    end
    if ev.method == "socket.accepted" then -- auto_accept
        local s = new_socket(c, self.type, toint(ev.params.socket))
        s.connected, s.tls = ev.params, ev.params.tls
        return s
    end
    local r = self:call("socket.accept", { pending = ev.params.pending })
    local s = new_socket(c, self.type, toint(r.socket))
    s:wait_connected(timeout)
    return s
end

-- data ----------------------------------------------------------------------

--- Send data (a string); returns its length. opts.wait (default true) waits until the daemon
--- handed it all to the kernel; wait = false only queues it. Either way at most 1 MiB is on
--- its way to the kernel: a send beyond that waits for room.
function Socket:send(data, opts)
    local wait = not (opts and opts.wait == false)
    local timeout = opts and opts.timeout
    self:_check()
    local n = #data
    self._connecting = false
    if self._inflight > 0 and self._inflight + n > SEND_WINDOW then
        self:_until(function()
            return self._inflight == 0 or self._inflight + n <= SEND_WINDOW or self.closed
        end, deadline_of(timeout), "send", timeout)
        self:_check()
    end
    local rid = self:_start("socket.send", { data = b64(data) })
    self._sends[rid] = n
    self._inflight = self._inflight + n
    if wait then
        self:_until(function()
            return self._sends[rid] == nil or self.closed
        end, deadline_of(timeout), "send", timeout)
        if self._sends[rid] then
            self:_raise()
        end
        if self._err then
            self:_raise()
        end
    end
    return n
end

--- Wait until every byte sent so far was handed to the kernel.
function Socket:wait_sent(timeout)
    self:_until(function()
        return self._inflight == 0 or self.closed
    end, deadline_of(timeout), "send", timeout)
    if self._inflight > 0 or self._err then
        self:_raise()
    end
end

-- Wait (armed) until done() or the stream ended; what and timeout name a timeout.
function Socket:_fill(done, what, timeout)
    if self._err then
        self:_raise()
    end
    self._connecting = false
    if self._eof or self.closed then
        return
    end
    self:_arm()
    self:_until(function()
        return done() or self._eof or self.closed or (self._stream == 0 and self:_arm())
    end, deadline_of(timeout), what, timeout)
end

-- After a wait that may have ended with the socket: raise unless it ended cleanly.
function Socket:_ended_badly()
    if self.closed and self.closed.reason ~= "by_peer" and self.closed.reason ~= "normal" then
        self:_raise()
    end
end

--- Receive exactly n bytes (opts.partial: 1..n); "" at the end of the stream. A stream cut
--- short by EOF returns what arrived. On timeout raises; bytes that arrived stay buffered.
--- Udp: one datagram (cut to n bytes).
function Socket:recv(n, opts)
    local partial, timeout = opts and opts.partial, opts and opts.timeout
    if n <= 0 then
        error("recv: n must be positive", 2)
    end
    if self._dgram then
        return (self:recvfrom(n, timeout))
    end
    if not (self:_have() >= n or (partial and self:_have() > 0)) then
        self._want = n
        local ok, err = pcall(self._fill, self, function()
            return self:_have() >= n or (partial and self:_have() > 0)
        end, "recv", timeout)
        self._want = 0
        if not ok then
            error(err, 0)
        end
    end
    if self:_have() >= n or (partial and self:_have() > 0) then
        return self:_cut(math.min(n, self:_have()))
    end
    self:_ended_badly()
    return self:_cut(self:_have())
end

--- Receive one line: the bytes up to and including until (default "\n", 1 to 16 bytes;
--- "\r\n" for SMTP, Redis or HTTP headers). As a file's read of a line with a cap: a line
--- longer than limit (default 65536) comes in pieces of limit bytes that do not end with
--- until; at the end of the stream what is left comes without it, then "". On timeout
--- raises; bytes that arrived stay buffered. The line is cut here, from the bytes the stream
--- already pushed: a line already here costs no round trip, and each search starts where the
--- last one stopped (the daemon's own framing, socket.recv with until, is for clients
--- without such a buffer).
function Socket:readline(until_, limit, timeout)
    until_ = until_ or "\n"
    limit = limit or 65536
    local k = #until_
    if k < 1 or k > 16 then
        error("readline: until must be 1 to 16 bytes", 2)
    end
    if limit < k then
        error("readline: limit must hold the delimiter", 2)
    end
    if self._dgram then
        error("readline: " .. self.type .. " sockets carry datagrams, not lines", 2)
    end
    local seen, line_end = 0, nil -- bytes searched without a match; the line's length
    local function found()
        self:_flat()
        local have = #self._buf - self._pos + 1
        local from = math.max(0, seen - k + 1)
        local i = self._buf:find(until_, self._pos + from, true)
        if i and i - self._pos + k <= limit then
            line_end = i - self._pos + k
        else
            seen = math.min(have, limit)
        end
        return line_end
    end
    if not found() and self:_have() < limit then
        self._want = limit
        local ok, err = pcall(self._fill, self, function()
            return found() or self:_have() >= limit
        end, "readline", timeout)
        self._want = 0
        if not ok then
            error(err, 0)
        end
    end
    if line_end then
        return self:_cut(line_end)
    end
    if self:_have() < limit then
        self:_ended_badly()
    end
    return self:_cut(math.min(self:_have(), limit))
end

--- One datagram (udp): returns data, from (an address table or nil).
function Socket:recvfrom(n, timeout)
    n = n or 65536
    if #self._dgrams == 0 then
        self:_fill(function()
            return #self._dgrams > 0
        end, "recvfrom", timeout)
        if #self._dgrams == 0 then
            self:_ended_badly()
            return "", nil
        end
    end
    local d = table.remove(self._dgrams, 1)
    return d[1]:sub(1, n), d[2]
end

--- Send one datagram to address (udp).
function Socket:sendto(data, address)
    return self:call("socket.sendto", { data = b64(data), address = address }).queued
end

-- Stop the stream and wait until it stopped; raise if received bytes wait here.
function Socket:_quiet()
    self:_cancel()
    self:_until(function()
        return self._stream == 0 or self.closed
    end, deadline_of(self.client.timeout), "recv_cancel", self.client.timeout)
    if self:_have() > 0 or #self._dgrams > 0 then
        raise("sockd", string.format("%d received bytes not yet read; recv them first", self:_have()), {
            code = M.WRONG_STATE,
        })
    end
end

-- TLS and the end -------------------------------------------------------------

--- Upgrade to TLS on this socket (socket.starttls); returns the tls table once done.
--- opts: server_name, server_side, timeout.
function Socket:starttls(context, opts)
    opts = opts or {}
    self:_check()
    self:_quiet()
    self._upgraded = false
    self:call("socket.starttls", {
        context = context,
        server_side = opts.server_side and true or false,
        server_name = opts.server_name,
    })
    self:_until(function()
        return self._upgraded or self.closed
    end, deadline_of(opts.timeout), "starttls", opts.timeout)
    if not self._upgraded then
        self:_raise()
    end
    return self.tls
end

--- Flush what is queued (TLS close_notify), then close; returns the reason.
function Socket:shutdown(timeout)
    if not self.closed then
        self:call("socket.shutdown")
        self:_until(function()
            return self.closed
        end, deadline_of(timeout), "shutdown", timeout)
    end
    return self.closed.reason
end

--- Close at once (queued bytes are discarded); pipelined, nothing to wait for.
function Socket:close()
    if self.closed then
        self:_ended()
        return
    end
    self.closed = { socket = self.id, reason = "normal" }
    self._err = nil
    if self.client._dead then
        self:_ended()
    else
        self:_start("socket.close", {})
    end
end

function Socket:info()
    return self:call("socket.info")
end

function Socket:setopt(opts)
    return self:call("socket.setopt", opts)
end

--- Hand the socket to another client; returns the token (the handle dies here).
function Socket:give(timeout)
    self:_check()
    self:_quiet()
    local params = timeout and { timeout_ms = math.max(1, math.floor(timeout * 1000)) } or {}
    local token = self:call("socket.give", params).token
    self.closed = { socket = self.id, reason = "given" }
    self:_ended()
    return token
end

--- A Socket for the socket given away with token.
function Socket.take(client, token)
    local info = client:call("socket.take", { token = token })
    local s = new_socket(client, info.type or "tcp", toint(info.socket))
    s.connected = info
    return s
end

return M
