/*
 * Integration tests: socket.recv with until, the line framing of sockd-protocol(7) (socket.recv,
 * RECEIVING), through a real sockd against loopback peers of this process (127.0.0.1 only).
 *
 * The peer is a raw socket of the test: it writes each piece of a line with a pause between,
 * so the pieces arrive as separate TCP segments and the daemon sees a line (or a delimiter)
 * split across reads. Every wait is bounded; every loop has a fixed bound.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tc.h"

static struct h_daemon g_d; /* the group's daemon */

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

/* A daemon tcp socket (*s) connected to a listener of ours; returns our accepted end. */
static int
line_pair_(struct tc *t, long long *s)
{
    int port, lfd = raw_bound_(0, 0, 4, &port);
    char addr[32];
    json_t *r;

    r = tc_ok_(t, NULL, "socket.open", "{s:s}", "type", "tcp");
    *s = jint_(r, "socket");
    json_decref(r);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    json_decref(
        tc_ok_(t, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)*s, "address", addr));
    json_decref(tc_event_(t, "socket.connected", *s, H_TIMEOUT_MS));
    int fd = raw_accept(lfd, H_TIMEOUT_MS);
    EXPECT_TRUE(fd >= 0, "accept the daemon's connection");
    close_fd_(lfd);
    return fd;
}

/* socket.recv {length, until (text), stream?}; returns the request id. */
static long long
recv_until_(struct tc *t, long long s, const char *until, json_int_t length, int stream)
{
    long long id;
    json_t *r = tc_ok_(t, &id, "socket.recv", "{s:I, s:I, s:s, s:b}", "socket", (json_int_t)s,
                       "length", length, "until", until, "stream", stream);
    expect_result_empty_(r, "socket.recv until");
    json_decref(r);
    return id;
}

/* The next socket.received of s: its data must be text, its flags as given. */
static void
expect_line_(struct tc *t, long long s, long long id, const char *text, bool missing, bool eof)
{
    json_t *ev = tc_event_(t, "socket.received", s, H_TIMEOUT_MS);
    expect_data_(ev, text);
    EXPECT_INT(jint_(ev, "request"), id, "socket.received request: %s", jd(ev));
    EXPECT_TRUE(jflag_(ev, "until_missing") == missing, "until_missing should be %d: %s",
                (int)missing, jd(ev));
    EXPECT_TRUE(jflag_(ev, "eof") == eof, "eof should be %d: %s", (int)eof, jd(ev));
    EXPECT_TRUE(!jflag_(ev, "timeout"), "no timeout: %s", jd(ev));
    json_decref(ev);
}

/* One until receive of at most length bytes; its delivery must be text with the flags. */
static void
line_expect_(struct tc *t, long long s, const char *until, json_int_t length, const char *text,
             bool missing, bool eof)
{
    long long id = recv_until_(t, s, until, length, 0);
    expect_line_(t, s, id, text, missing, eof);
}

/* Write text as its own TCP segment: TCP_NODELAY is off, so wait until the daemon read it. */
static void
write_piece_(struct tc *t, long long s, int fd, const char *text)
{
    long long before = info_int_(t, s, "bytes_received");
    raw_write_str_(fd, text);
    for (int i = 0; i < 250 && info_int_(t, s, "bytes_received") < before + (long long)strlen(text);
         i++)
        sleep_ms(10);
}

#define line_pair(...) (TC_AT(), line_pair_(__VA_ARGS__))
#define recv_until(...) (TC_AT(), recv_until_(__VA_ARGS__))
#define expect_line(...) (TC_AT(), expect_line_(__VA_ARGS__))
#define line_expect(...) (TC_AT(), line_expect_(__VA_ARGS__))
#define write_piece(...) (TC_AT(), write_piece_(__VA_ARGS__))

/* ------------------------------------------------------------------------ */
/* the tests                                                                 */

/* A line that arrives in pieces is delivered once, whole; two lines in one segment are two. */
static void
test_until_split_segments(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = line_pair(t, &s);

    id = recv_until(t, s, "\r\n", 512, 0);
    write_piece(t, s, fd, "EHLO ex");
    tc_no_event(t, s, 100);
    write_piece(t, s, fd, "ample.org");
    tc_no_event(t, s, 100);
    raw_write_str(fd, "\r\nMAIL FROM:<a@b>\r\nRCPT");
    expect_line(t, s, id, "EHLO example.org\r\n", false, false);
    tc_no_event(t, s, 100); /* not a stream: one line per recv */
    line_expect(t, s, "\r\n", 512, "MAIL FROM:<a@b>\r\n", false, false);
    id = recv_until(t, s, "\r\n", 512, 0);
    tc_no_event(t, s, 100);
    raw_write_str(fd, " TO:<c@d>\r\n");
    expect_line(t, s, id, "RCPT TO:<c@d>\r\n", false, false);
    /* an empty line is a line */
    raw_write_str(fd, "\r\n");
    line_expect(t, s, "\r\n", 512, "\r\n", false, false);
}

/* A delimiter split across two segments is found; what follows it stays. */
static void
test_until_delimiter_split(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = line_pair(t, &s);

    id = recv_until(t, s, "\r\n", 100, 0);
    write_piece(t, s, fd, "+OK\r");
    tc_no_event(t, s, 150); /* "\r" alone is not the delimiter */
    write_piece(t, s, fd, "\n$5");
    expect_line(t, s, id, "+OK\r\n", false, false);
    EXPECT_INT(info_int(t, s, "recv_buffered"), 2, "\"$5\" stays buffered");
    /* a four-byte delimiter split 1+3, 2+2 and 3+1 */
    for (int cut = 1; cut < 4; cut++) {
        const char *end = "\r\n\r\n";
        char piece[8];
        id = recv_until(t, s, "\r\n\r\n", 100, 0);
        snprintf(piece, sizeof piece, "%.*s", cut, end);
        write_piece(t, s, fd, piece);
        tc_no_event(t, s, 100);
        write_piece(t, s, fd, end + cut);
        json_t *ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
        size_t n;
        unsigned char *d = ev_data(ev, &n);
        EXPECT_TRUE(n >= 4 && memcmp(d + n - 4, end, 4) == 0 && !jflag(ev, "until_missing"),
                    "cut %d: a whole header end: %s", cut, jd(ev));
        free(d);
        json_decref(ev);
    }
}

/* length bytes without the delimiter are delivered flagged; the rest comes next. */
static void
test_until_length_reached(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s;
    int fd = line_pair(t, &s);

    raw_write_str(fd, "0123456789ABC\n");
    line_expect(t, s, "\n", 8, "01234567", true, false);
    line_expect(t, s, "\n", 8, "89ABC\n", false, false);
    /* a delimiter that would end one byte past length is not inside it */
    raw_write_str(fd, "abcdefg\r\n");
    line_expect(t, s, "\r\n", 8, "abcdefg\r", true, false);
    line_expect(t, s, "\n", 8, "\n", false, false); /* the rest stayed */
    /* exactly length, ending in the delimiter */
    raw_write_str(fd, "1234567\n");
    line_expect(t, s, "\n", 8, "1234567\n", false, false);
    /* length must hold the delimiter */
    EXPECT_INT(tc_err(t, NULL, "socket.recv", "{s:I, s:i, s:s}", "socket", (json_int_t)s, "length",
                      1, "until", "\r\n"),
               SOCKD_E_INVALID_PARAMS, "length 1 with a two-byte until");
}

/* End of file in the middle of a line: what is there, then the close. */
static void
test_until_eof_midline(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = line_pair(t, &s);

    raw_write_str(fd, "line one\nhalf a li");
    line_expect(t, s, "\n", 100, "line one\n", false, false);
    id = recv_until(t, s, "\n", 100, 0);
    close_fd(fd);
    expect_line(t, s, id, "half a li", true, true);
    json_t *ev = tc_next_is(t, s, "socket.closed", H_TIMEOUT_MS);
    EXPECT_STR(jstr(ev, "reason"), "by_peer", "closed after the last piece: %s", jd(ev));
    json_decref(ev);
}

/* Delimiters of several bytes, binary ones through until_b64, and 16 bytes, the longest. */
static void
test_until_multibyte(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = line_pair(t, &s);
    static const unsigned char bin[] = {'a', 0, 0xff, 'b', 0xfe, 0, 0xff, 0xfe, 'c'};
    static const unsigned char delim[] = {0, 0xff, 0xfe};

    raw_write_str(fd, "HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody");
    line_expect(t, s, "\r\n\r\n", 4096, "HTTP/1.1 200 OK\r\nA: b\r\n\r\n", false, false);
    raw_write_str(fd, "--0123456789abcd--rest");
    line_expect(t, s, "0123456789abcd--", 4096, "body--0123456789abcd--", false, false);
    raw_write(fd, bin, sizeof bin);
    char *d64 = b64(delim, sizeof delim);
    json_t *r = tc_ok(t, &id, "socket.recv", "{s:I, s:i, s:s}", "socket", (json_int_t)s, "length",
                      100, "until_b64", d64);
    json_decref(r);
    free(d64);
    json_t *ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    size_t n;
    unsigned char *d = ev_data(ev, &n);
    /* "rest" then "a\0\xff" + "b\xfe" + "\0\xff\xfe": the first match is at 'b' + 2 */
    static const unsigned char want[] = {'r',  'e', 's',  't', 'a',  0,
                                         0xff, 'b', 0xfe, 0,   0xff, 0xfe};
    EXPECT_TRUE(n == sizeof want && memcmp(d, want, n) == 0 && !jflag(ev, "until_missing"),
                "binary delimiter: %s", jd(ev));
    free(d);
    json_decref(ev);
    recv_expect(t, s, "c");
}

/* Bad until params answer -32602 naming the param; the socket and the daemon go on. */
static void
test_until_invalid(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s;
    int fd = line_pair(t, &s);
    static const struct {
        const char *fmt, *key, *val, *param;
        int len;
    } bad[] = {
        {"{s:I, s:i, s:s}", "until", "", "until", 10},
        {"{s:I, s:i, s:s}", "until", "0123456789abcdefX", "until", 100},
        {"{s:I, s:i, s:s}", "until_b64", "", "until_b64", 10},
        {"{s:I, s:i, s:s}", "until_b64", "!!!!", "until_b64", 10},
        {"{s:I, s:i, s:s}", "until_b64", "MDEyMzQ1Njc4OWFiY2RlZlg=", "until_b64", 100},
        {"{s:I, s:i, s:s}", "until", "\n\n", "length", 1},
    };
    json_t *err;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.recv", bad[i].fmt, "socket",
                            (json_int_t)s, "length", bad[i].len, bad[i].key, bad[i].val);
        EXPECT_STR(jstr(err_data(err), "param"), bad[i].param, "case %zu: %s", i, jd(err));
        json_decref(err);
    }
    err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.recv", "{s:I, s:i, s:s, s:s}", "socket",
                        (json_int_t)s, "length", 10, "until", "\n", "until_b64", "Cg==");
    json_decref(err);
    err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.recv", "{s:I, s:i, s:s, s:b}", "socket",
                        (json_int_t)s, "length", 10, "until", "\n", "partial", 1);
    EXPECT_STR(jstr(err_data(err), "param"), "partial", "until with partial: %s", jd(err));
    json_decref(err);
    err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.recv", "{s:I, s:i, s:i}", "socket",
                        (json_int_t)s, "length", 10, "until", 10);
    json_decref(err);
    /* datagram sockets have no lines */
    json_t *r = tc_ok(t, NULL, "socket.open", "{s:s}", "type", "udp");
    long long u = jint(r, "socket");
    json_decref(r);
    json_decref(tc_ok(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)u, "address",
                      "127.0.0.1:0"));
    err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.recv", "{s:I, s:i, s:s}", "socket",
                        (json_int_t)u, "length", 10, "until", "\n");
    json_decref(err);
    /* the longest delimiter is fine, and nothing above armed a receive */
    raw_write_str(fd, "x0123456789abcdef");
    line_expect(t, s, "0123456789abcdef", 100, "x0123456789abcdef", false, false);
    r = tc_ok(t, NULL, "daemon.hello", NULL);
    json_t *f = jget(r, "features");
    bool found = false;
    for (size_t i = 0; i < json_array_size(f); i++) {
        const char *name = json_string_value(json_array_get(f, i));
        found |= name != NULL && strcmp(name, "recv_until") == 0;
    }
    EXPECT_TRUE(found, "daemon.hello features lists recv_until: %s", jd(r));
    json_decref(r);
}

/* stream with until: one event per line (or per length without one), until cancelled. */
static void
test_until_stream(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = line_pair(t, &s);

    id = recv_until(t, s, "\n", 6, 1);
    raw_write_str(fd, "a\nbb\nccc\n");
    expect_line(t, s, id, "a\n", false, false);
    expect_line(t, s, id, "bb\n", false, false);
    expect_line(t, s, id, "ccc\n", false, false);
    write_piece(t, s, fd, "dd");
    tc_no_event(t, s, 100);
    raw_write_str(fd, "d\n0123456789\n");
    expect_line(t, s, id, "ddd\n", false, false);
    expect_line(t, s, id, "012345", true, false);
    expect_line(t, s, id, "6789\n", false, false);
    EXPECT_TRUE(recv_canceled(t, s), "the until stream was pending");
    raw_write_str(fd, "after\n");
    tc_no_event(t, s, 100);
    /* a stream ends with the close: the last piece carries eof */
    id = recv_until(t, s, "\n", 100, 1);
    expect_line(t, s, id, "after\n", false, false);
    raw_write_str(fd, "tail");
    close_fd(fd);
    expect_line(t, s, id, "tail", true, true);
}

/* A timeout delivers what arrived, flagged: it does not end in the delimiter. */
static void
test_until_timeout(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = line_pair(t, &s);

    json_t *r = tc_ok(t, &id, "socket.recv", "{s:I, s:i, s:s, s:i}", "socket", (json_int_t)s,
                      "length", 100, "until", "\n", "timeout_ms", 200);
    json_decref(r);
    raw_write_str(fd, "no end");
    json_t *ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    expect_data(ev, "no end");
    EXPECT_TRUE(jflag(ev, "timeout") && jflag(ev, "until_missing"), "timed out: %s", jd(ev));
    json_decref(ev);
    raw_write_str(fd, " yet\n");
    line_expect(t, s, "\n", 100, " yet\n", false, false);
}

/* TLS: lines across records, the daemon on both ends. */
static void
test_until_tls(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    json_t *r = tc_ok(t, NULL, "context.create", "{s:b}", "verify", 0);
    long long ctx = jint(r, "context"), l, c, a, id;
    json_decref(r);
    json_decref(tc_ok(t, NULL, "context.generate_certificate", "{s:I, s:s}", "context",
                      (json_int_t)ctx, "role", "server"));
    r = tc_ok(t, NULL, "socket.open", "{s:s, s:I}", "type", "tls", "context", (json_int_t)ctx);
    l = jint(r, "socket");
    json_decref(r);
    r = tc_ok(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)l, "address",
              "127.0.0.1:0");
    int port = (int)jint(jget(r, "local"), "port");
    json_decref(r);
    json_decref(
        tc_ok(t, NULL, "socket.listen", "{s:I, s:b}", "socket", (json_int_t)l, "auto_accept", 1));
    r = tc_ok(t, NULL, "socket.open", "{s:s, s:I}", "type", "tls", "context", (json_int_t)ctx);
    c = jint(r, "socket");
    json_decref(r);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    json_decref(
        tc_ok(t, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)c, "address", addr));
    json_decref(tc_event(t, "socket.connected", c, H_TIMEOUT_MS));
    json_t *ev = tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS);
    a = jint(ev, "socket");
    json_decref(ev);

    id = recv_until(t, c, "\r\n", 1000, 0);
    long long sid = send_text(t, a, "* OK IMAP4rev1 ", 1);
    expect_sent(t, a, sid, 15);
    tc_no_event(t, c, 100);
    sid = send_text(t, a, "ready\r", 1); /* the delimiter split across two records */
    expect_sent(t, a, sid, 6);
    tc_no_event(t, c, 100);
    send_text(t, a, "\na1 OK done\r\n", 0);
    expect_line(t, c, id, "* OK IMAP4rev1 ready\r\n", false, false);
    line_expect(t, c, "\r\n", 1000, "a1 OK done\r\n", false, false);
}

/*
 * A peer sends 10 MiB without a delimiter: the daemon delivers it length bytes at a time,
 * flagged, and holds no more than its read-ahead (256 KiB) of it at any moment.
 */
static void
test_until_flood(void **state)
{
    (void)state;
    enum { TOTAL = 10 * MIB, LEN = 64 * KIB, READAHEAD = 256 * KIB };
    struct tc *t = tc_new(&g_d);
    long long s, most = 0;
    int fd = line_pair(t, &s);
    char *chunk = malloc(LEN);
    size_t sent = 0, got = 0;
    long hwm0 = h_hwm_kib(g_d.pid);

    EXPECT_TRUE(chunk != NULL, "chunk");
    memset(chunk, 'x', LEN);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (int i = 0; i < 4 * (TOTAL / LEN) && got < TOTAL; i++) {
        while (sent < TOTAL) { /* as much as the kernel takes now */
            size_t want = TOTAL - sent < LEN ? TOTAL - sent : LEN;
            ssize_t k = send(fd, chunk, want, MSG_NOSIGNAL);
            if (k <= 0)
                break;
            sent += (size_t)k;
        }
        long long buffered = info_int(t, s, "recv_buffered");
        most = buffered > most ? buffered : most;
        long long id = recv_until(t, s, "\n", LEN, 0);
        json_t *ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
        size_t n;
        unsigned char *d = ev_data(ev, &n);
        EXPECT_TRUE(n == LEN || (n == TOTAL - got && n <= LEN), "a piece of %zu bytes", n);
        EXPECT_TRUE(jflag(ev, "until_missing") && jint(ev, "request") == id, "flagged: %.200s",
                    jd(ev));
        got += n;
        free(d);
        json_decref(ev);
    }
    free(chunk);
    EXPECT_INT(got, TOTAL, "bytes delivered");
    EXPECT_TRUE(most <= READAHEAD, "the daemon held %lld bytes of the socket", most);
    raw_write_str(fd, "end\n");
    line_expect(t, s, "\n", LEN, "end\n", false, false);
    long grown = h_hwm_kib(g_d.pid) - hwm0;
    fprintf(stderr, "# 10 MiB without a delimiter: at most %lld bytes held, VmHWM +%ld KiB\n", most,
            grown);
    if (!h_asan_daemon(g_d.pid))
        EXPECT_TRUE(grown < 8 * 1024, "the daemon grew by %ld KiB", grown);
}

/* One sockd_client_recv_until call: rc, the bytes and the flags must be as given. */
static void
lib_line_(struct sockd_client *c, long long s, const char *until, size_t length, int timeout_ms,
          const char *text, int flags)
{
    unsigned char *d;
    size_t n;
    int f;
    int rc =
        sockd_client_recv_until(c, s, until, strlen(until), length, timeout_ms, &d, &n, &f, NULL);
    EXPECT_INT(rc, 0, "sockd_client_recv_until (errno %d)", errno);
    EXPECT_TRUE(n == strlen(text) && memcmp(d, text, n) == 0 && d[n] == '\0',
                "got %zu bytes \"%.*s\", expected \"%s\"", n, (int)n, (const char *)d, text);
    EXPECT_INT(f, flags, "flags of \"%s\"", text);
    free(d);
}
#define lib_line(...) (TC_AT(), lib_line_(__VA_ARGS__))

/* libsockd-client's sockd_client_recv_until against the same kind of peer. */
static void
test_until_client_library(void **state)
{
    (void)state;
    struct sockd_client *c = h_client_auto(&g_d);
    int port, lfd = raw_bound(0, 0, 4, &port);
    long long s = h_connect_tcp(c, port), other = h_open(c, "tcp");
    int fd = raw_accept(lfd, H_TIMEOUT_MS);
    unsigned char *d = NULL;
    size_t n;
    int f;
    json_t *err;

    EXPECT_TRUE(fd >= 0, "fd >= 0");
    raw_write_str(fd, "a line\r\nlong line here\r\n");
    lib_line(c, s, "\r\n", 100, -1, "a line\r\n", 0);
    /* an event of another socket that arrives meanwhile stays queued */
    json_decref(h_ok(c, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)other, "address",
                     "127.0.0.1", "port", port));
    lib_line(c, s, "\r\n", 4, -1, "long", SOCKD_RECV_UNTIL_MISSING);
    lib_line(c, s, "\r\n", 100, -1, " line here\r\n", 0);
    json_decref(h_event(c, "socket.connected", other, H_TIMEOUT_MS));
    /* nothing comes: the daemon's timeout, and no bytes */
    lib_line(c, s, "\n", 100, 200, "", SOCKD_RECV_TIMEOUT | SOCKD_RECV_UNTIL_MISSING);
    /* a binary delimiter */
    raw_write(fd, "x\0\1y\0\1", 6);
    EXPECT_INT(sockd_client_recv_until(c, s, "\0\1", 2, 100, -1, &d, &n, &f, NULL), 0, "binary");
    EXPECT_TRUE(n == 3 && memcmp(d, "x\0\1", 3) == 0 && f == 0, "binary line of %zu bytes", n);
    free(d);
    /* errors: a bad delimiter here, a bad length from the daemon */
    errno = 0;
    EXPECT_INT(sockd_client_recv_until(c, s, "0123456789abcdefX", 17, 100, -1, &d, &n, &f, NULL),
               -1, "a 17-byte delimiter");
    EXPECT_INT(errno, EINVAL, "errno of a 17-byte delimiter");
    EXPECT_INT(sockd_client_recv_until(c, s, "\r\n", 2, 1, -1, &d, &n, &f, &err), 1, "length 1");
    EXPECT_INT(sockd_client_error_code(err), SOCKD_E_INVALID_PARAMS, "length 1");
    json_decref(err);
    EXPECT_INT(sockd_client_recv_until(c, s, "\0\1", 2, 100, -1, &d, &n, &f, NULL), 0, "binary");
    EXPECT_TRUE(n == 3 && memcmp(d, "y\0\1", 3) == 0 && f == 0, "binary line of %zu bytes", n);
    free(d);
    /* the end: what is left with eof; then the handle is gone, its close still queued */
    raw_write_str(fd, "tail");
    close_fd(fd);
    lib_line(c, s, "\n", 100, -1, "tail", SOCKD_RECV_EOF | SOCKD_RECV_UNTIL_MISSING);
    EXPECT_INT(sockd_client_recv_until(c, s, "\n", 1, 100, -1, &d, &n, &f, &err), 1, "closed");
    EXPECT_INT(sockd_client_error_code(err), SOCKD_E_UNKNOWN_HANDLE, "recv on a closed socket");
    json_decref(err);
    json_t *ev = h_event(c, "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_STR(json_string_value(json_object_get(ev, "reason")), "by_peer", "closed: %s", jd(ev));
    json_decref(ev);
    close_fd(lfd);
}

/* tc_cleanup, and h_cleanup for the harness's own clients. */
static int
lines_teardown(void **state)
{
    tc_teardown(state);
    h_cleanup();
    return 0;
}

static int
group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    h_daemon_start(&g_d, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    h_daemon_stop(&g_d);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_until_split_segments, tc_teardown),
        cmocka_unit_test_teardown(test_until_delimiter_split, tc_teardown),
        cmocka_unit_test_teardown(test_until_length_reached, tc_teardown),
        cmocka_unit_test_teardown(test_until_eof_midline, tc_teardown),
        cmocka_unit_test_teardown(test_until_multibyte, tc_teardown),
        cmocka_unit_test_teardown(test_until_invalid, tc_teardown),
        cmocka_unit_test_teardown(test_until_stream, tc_teardown),
        cmocka_unit_test_teardown(test_until_timeout, tc_teardown),
        cmocka_unit_test_teardown(test_until_tls, tc_teardown),
        cmocka_unit_test_teardown(test_until_flood, tc_teardown),
        cmocka_unit_test_teardown(test_until_client_library, lines_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
