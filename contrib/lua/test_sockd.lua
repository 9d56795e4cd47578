--[[
Tests of sockd.lua against a real daemon and loopback peers, run by
tests/integration/run-clients.sh (which starts both):

    SOCKD_SOCKET=... TCP_PORT=... GREET_PORT=... UDP_PORT=... UNIX_PATH=... \
        [TLS_ECHO_PORT=... TLS_CA=server.pem] lua5.4 contrib/lua/test_sockd.lua

Prints "[       OK ] name" or "[  FAILED  ] name" per test, then
"N passed, N failed"; exits 1 on any failure. Every wait is bounded.
]]

local here = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local sockd = require("sockd")
local socket = require("socket")

local WAIT = 10 -- seconds: upper bound of every wait
local env = function(name)
    local v = os.getenv(name)
    return v ~= "" and v or nil
end
local TCP = "127.0.0.1:" .. assert(env("TCP_PORT"), "TCP_PORT is not set")
local GREET = "127.0.0.1:" .. assert(env("GREET_PORT"), "GREET_PORT is not set")
local UDP = "127.0.0.1:" .. assert(env("UDP_PORT"), "UDP_PORT is not set")
local UNIX = assert(env("UNIX_PATH"), "UNIX_PATH is not set")

local function eq(got, want, what)
    if got ~= want then
        error(string.format("%s: got %q, want %q", what or "value", tostring(got), tostring(want)), 2)
    end
end

-- The error a call raises (it must raise).
local function raises(f, ...)
    local ok, err = pcall(f, ...)
    if ok then
        error("expected an error", 2)
    end
    return err
end

-- A listener of this process: the daemon's connect completes in the kernel's backlog.
local function pair(c)
    local l = assert(socket.bind("127.0.0.1", 0))
    local _, port = l:getsockname()
    local s = sockd.Socket.new(c, "tcp")
    s:connect("127.0.0.1:" .. port, { timeout = WAIT })
    l:settimeout(WAIT)
    local conn = assert(l:accept())
    l:close()
    return s, conn
end

-- A socket of type (default tcp) connected to address.
local function connected(c, address, type)
    local s = sockd.Socket.new(c, type or "tcp")
    s:connect(address, { timeout = WAIT })
    return s
end

local tests = {}

function tests.hello_and_errors(c)
    local h = c:hello("test_sockd.lua")
    eq(h.server, "sockd", "server")
    eq(c:ping() ~= nil, true, "ping")
    local err = raises(c.call, c, "no.such.method")
    eq(err.kind, "sockd", "kind")
    eq(err.code, sockd.METHOD_NOT_FOUND, "code")
    err = raises(c.call, c, "socket.info", { socket = 999999 })
    eq(err.code, sockd.UNKNOWN_HANDLE, "code")
    eq(c:ping() ~= nil, true, "usable after errors")
end

function tests.tcp_echo(c)
    local s = sockd.Socket.new(c, "tcp")
    local conn = s:connect(TCP, { timeout = WAIT })
    eq(conn.remote.address, "127.0.0.1", "remote")
    eq(s:send("hello world"), 11, "sent")
    eq(s:recv(5, { timeout = WAIT }), "hello", "recv 5")
    eq(s:recv(100, { partial = true, timeout = WAIT }), " world", "partial")
    local blob = {}
    for i = 1, 20000 do
        blob[i] = string.char(i % 256, (i * 7) % 256)
    end
    blob = table.concat(blob) -- 40000 bytes, every byte value
    s:send(blob, { wait = false })
    eq(s:recv(#blob, { timeout = WAIT }), blob, "binary echo")
    eq(s:info().bytes_sent, 11 + #blob, "bytes_sent")
    eq(s:shutdown(WAIT), "normal", "shutdown")
    eq(raises(s.send, s, "x").kind, "closed", "send after close")
end

function tests.readline(c)
    local s, conn = pair(c)
    conn:send("EHLO ex")
    local err = raises(s.readline, s, "\r\n", nil, 0.2)
    eq(sockd.is_timeout(err), true, "a partial line times out")
    conn:send("ample.org\r") -- the delimiter split across two segments
    eq(sockd.is_timeout(raises(s.readline, s, "\r\n", nil, 0.2)), true, "half a delimiter")
    conn:send("\nMAIL FROM:<a@b>\r\n\r\n0123456789ABC\nhalf a li")
    eq(s:readline("\r\n", nil, WAIT), "EHLO example.org\r\n", "line 1")
    eq(s:readline("\r\n", nil, WAIT), "MAIL FROM:<a@b>\r\n", "line 2")
    eq(s:readline("\r\n", nil, WAIT), "\r\n", "empty line")
    eq(s:readline("\n", 8, WAIT), "01234567", "a piece of a long line")
    eq(s:readline(nil, 8, WAIT), "89ABC\n", "its rest")
    conn:close()
    eq(s:readline(nil, nil, WAIT), "half a li", "the tail at EOF")
    eq(s:readline(nil, nil, WAIT), "", "then nothing")
    raises(s.readline, s, "")
    raises(s.readline, s, string.rep("x", 17))
end

function tests.many_lines_cost_no_request(c)
    local s, conn = pair(c)
    local lines = {}
    for i = 1, 5000 do
        lines[i] = "line " .. i .. "\n"
    end
    conn:send(table.concat(lines))
    for i = 1, #lines do
        eq(s:readline(nil, nil, WAIT), lines[i], "line " .. i)
    end
    conn:send("a\nb\n")
    eq(#c:wait({ s }, WAIT), 1, "ready")
    for _ = 1, 500 do
        if s:_have() >= 4 then
            break
        end
        c:next_event(0.01)
    end
    local ids = c._next_id
    eq(s:readline() .. s:readline(), "a\nb\n", "buffered lines")
    eq(c._next_id, ids, "request ids used")
    conn:close()
end

function tests.eof_by_peer(c)
    local s = connected(c, GREET)
    eq(s:recv(100, { timeout = WAIT }), "hello from the greeter\n", "cut short by EOF")
    eq(s:recv(100, { timeout = WAIT }), "", "then nothing")
end

function tests.timeouts(c)
    local s = connected(c, TCP)
    local t0 = socket.gettime()
    eq(sockd.is_timeout(raises(s.recv, s, 1, { timeout = 0.2 })), true, "recv timeout")
    eq(socket.gettime() - t0 >= 0.19, true, "waited")
    eq(#c:wait({ s }, 0.1), 0, "nothing ready")
    s:send("late")
    eq(s:recv(4, { timeout = WAIT }), "late", "bytes after a timeout")
    s:close()
end

function tests.pipelined_errors(c)
    local s = sockd.Socket.new(c, "tcp")
    s:connect("no port here", { wait = false })
    local err = raises(s.send, s, "x")
    eq(err.code, sockd.INVALID_PARAMS, "the queued connect's error")
    eq(c:ping() ~= nil, true, "usable")
    s:close()
end

function tests.fanout_50(c)
    local socks = sockd.Socket.many(c, 50)
    for _, s in ipairs(socks) do
        s:connect(TCP, { timeout = WAIT, wait = false })
    end
    for _, s in ipairs(socks) do
        s:send("socket " .. s.id .. "\n", { wait = false })
    end
    for _, s in ipairs(socks) do
        eq(s:readline(nil, nil, WAIT), "socket " .. s.id .. "\n", "echo")
    end
    for _, s in ipairs(socks) do
        s:close()
    end
    eq(#c:call("socket.list").sockets, 0, "all closed")
end

function tests.unix_and_udp(c)
    local u = connected(c, UNIX, "unix")
    u:send("over a path\n")
    eq(u:readline(nil, nil, WAIT), "over a path\n", "unix echo")
    u:close()
    local d = sockd.Socket.new(c, "udp")
    eq(d:sendto("ping", UDP), 4, "queued")
    local data, from = d:recvfrom(100, WAIT)
    eq(data, "ping", "udp echo")
    eq(from.port, tonumber(UDP:match(":(%d+)$")), "from")
    raises(d.readline, d)
    d:close()
end

function tests.tls_connect(c)
    local port, ca = env("TLS_ECHO_PORT"), env("TLS_CA")
    if not port or not ca then
        return "skip: no TLS echo peer (openssl missing)"
    end
    local ctx = c:tls_context({ ca_file = ca })
    local s = sockd.Socket.new(c, "tls", { context = ctx })
    s:connect("127.0.0.1:" .. port, { timeout = WAIT, server_name = "localhost" })
    eq(s.tls.verified, true, "verified")
    s:send("a1 LOGIN\r\na2 OK\r\n")
    eq(s:readline("\r\n", nil, WAIT), "a1 LOGIN\r\n", "tls line 1")
    eq(s:readline("\r\n", nil, WAIT), "a2 OK\r\n", "tls line 2")
    s:close()
end

function tests.starttls_both_sides(c)
    local sctx = c:tls_context({ verify = false })
    c:call("context.generate_certificate", { context = sctx, role = "server", common_name = "localhost" })
    local cctx = c:tls_context({ verify = false })
    local lst = sockd.Socket.new(c, "tcp")
    local port = lst:bind("127.0.0.1").port
    lst:listen()
    local cli = sockd.Socket.new(c, "tcp")
    cli:connect("127.0.0.1:" .. math.tointeger(port), { wait = false })
    local srv = lst:accept(WAIT)
    cli:wait_connected(WAIT)
    srv:call("socket.starttls", { context = sctx, server_side = true })
    local tls = cli:starttls(cctx, { server_name = "localhost", timeout = WAIT })
    eq(type(tls.version), "string", "tls version")
    cli:send("secret\n")
    eq(srv:readline(nil, nil, WAIT), "secret\n", "through TLS")
    eq(cli:shutdown(WAIT), "normal", "shutdown")
    lst:close()
end

function tests.give_and_take(c)
    local s = connected(c, TCP)
    s:send("given")
    local token = s:give(WAIT)
    local c2 = sockd.Client.new(nil, WAIT)
    local t = sockd.Socket.take(c2, token)
    eq(t:recv(5, { timeout = WAIT }), "given", "bytes kept for the taker")
    t:close()
    c2:close()
end

local names = {}
for name in pairs(tests) do
    names[#names + 1] = name
end
table.sort(names)
local pass, fail = 0, 0
for _, name in ipairs(names) do
    local c = sockd.Client.new(nil, WAIT)
    local ok, err = pcall(tests[name], c)
    pcall(c.close, c)
    if ok then
        print(string.format("[       OK ] %s%s", name, err and " (" .. err .. ")" or ""))
        pass = pass + 1
    else
        print(string.format("[  FAILED  ] %s: %s", name, tostring(err)))
        fail = fail + 1
    end
end
print(string.format("%d passed, %d failed", pass, fail))
os.exit(fail == 0 and 0 or 1)
