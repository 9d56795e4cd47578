--[[
fanout.lua HOST:PORT [N]

Open N (default 200) TCP connections to an echo server through sockd, all
from one control connection and one Lua state, send a different line on
each, read every line back and check it. Prints one summary line; exits 0
when every connection echoed its own line, 1 otherwise.

The calls that need no answer (connect and send with wait = false, close)
are only queued and written together; each socket's bytes are pushed to the
client as they arrive, so each readline here cuts a line from what came.

The daemon is found as sockctl finds it ($SOCKD_SOCKET, ...). sockd.lua is
looked up next to this script (../lua) and then on the usual path.

Example:  SOCKD_SOCKET=/tmp/sockd.sock lua5.4 fanout.lua 127.0.0.1:7007
]]

local here = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. package.path
local sockd = require("sockd")
local socket = require("socket")

local WAIT = 10 -- seconds: upper bound of each wait

local address, n = arg[1], tonumber(arg[2] or "200")
if not address or not n or arg[3] then
    io.stderr:write("usage: fanout.lua HOST:PORT [N]\n")
    os.exit(2)
end

local start = socket.gettime()
local client = sockd.Client.new(nil, WAIT)
-- One round trip opens them all; the connects (and their receive set-up) are only queued,
-- and proceed in parallel in the daemon.
local socks = sockd.Socket.many(client, n)
for _, s in ipairs(socks) do
    s:connect(address, { timeout = WAIT, wait = false })
end
local lines = {}
for _, s in ipairs(socks) do -- queued too: they go out in one write with the first wait
    lines[s] = string.format("line %d of fanout.lua\n", s.id)
    s:send(lines[s], { wait = false })
end
local failed, total = 0, 0
for _, s in ipairs(socks) do
    -- an error of the queued connect or send is raised here, by the next call
    local ok, got = pcall(s.readline, s, "\n", 4096, WAIT)
    if not ok then
        io.stderr:write(string.format("socket %d: %s\n", s.id, tostring(got)))
        failed = failed + 1
    elseif got ~= lines[s] then
        io.stderr:write(string.format("socket %d: got %q\n", s.id, got))
        failed = failed + 1
    else
        total = total + #got
    end
end
for _, s in ipairs(socks) do
    s:close()
end
client:close()
print(string.format("%d connections, %d echoed, %d bytes, %.2f s", n, n - failed, total,
    socket.gettime() - start))
os.exit(failed == 0 and 0 or 1)
