/*
 * Test client framework of the integration tests (test_tcp, test_udp_unix, test_names, test_tls),
 * built on harness.h.
 *
 * Requests are written on the control connection with ids chosen here, so that the "request"
 * member of notifications can be checked against them; every message read meanwhile is kept, in
 * arrival order, in a per-client inbox. Every wait is bounded (H_TIMEOUT_MS unless a test needs
 * less), every loop has a fixed bound. Resources made by a test (clients, fds, peers, daemons) are
 * tracked and released by tc_cleanup (the per-test teardown, or part of it), so a failing test does
 * not leak into the next one.
 *
 * A helper NAME_ has a macro NAME that records the calling test line first (TC_AT); FAIL shows
 * where it failed and that line. Helpers of a test file follow the same pattern; inside a helper,
 * call the NAME_ forms, so the recorded line stays the test's.
 */
#ifndef SOCKD_TEST_TC_H
#define SOCKD_TEST_TC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "harness.h"

#define KIB 1024
#define MIB (1024 * 1024)

/* ------------------------------------------------------------------------ */
/* where a failure happened                                                 */

/* Record the test line (and file) that calls a helper; TC_AT() records the current one. */
void tc_at(const char *file, int line);
#define TC_AT() tc_at(__FILE__, __LINE__)
/* Print "(file:line, helper called from test_x.c:N) " for a failure at file:line. */
void tc_fail_where(const char *file, int line);

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        tc_fail_where(__FILE__, __LINE__);                                                         \
        fail_msg(__VA_ARGS__);                                                                     \
    } while (0)

/* ------------------------------------------------------------------------ */
/* small utilities                                                          */

static inline long long
now_ms(void)
{
    return h_now_ms();
}

static inline void
sleep_ms(int ms)
{
    h_sleep_ms(ms);
}

/* A compact dump of a JSON value for failure messages (rotating buffers, truncated). */
const char *jd(const json_t *v);
/* printf into a static buffer: the context of a failed expectation. */
const char *ctx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define EXPECT_INT(actual, expected, ...)                                                          \
    do {                                                                                           \
        long long a_ = (long long)(actual), e_ = (long long)(expected);                            \
        if (a_ != e_)                                                                              \
            FAIL("%s: got %lld, expected %lld", ctx(__VA_ARGS__), a_, e_);                         \
    } while (0)

#define EXPECT_STR(actual, expected, ...)                                                          \
    do {                                                                                           \
        const char *a_ = (actual), *e_ = (expected);                                               \
        if (!a_ || strcmp(a_, e_) != 0)                                                            \
            FAIL("%s: got \"%s\", expected \"%s\"", ctx(__VA_ARGS__), a_ ? a_ : "(null)", e_);     \
    } while (0)

#define EXPECT_TRUE(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            FAIL("%s (expected %s)", ctx(__VA_ARGS__), #cond);                                     \
    } while (0)

/* Members of a JSON object: present, of the type asked for (else the test fails). */
json_t *jget_(const json_t *o, const char *k);
long long jint_(const json_t *o, const char *k);
const char *jstr_(const json_t *o, const char *k);
/* An optional boolean: absent (or null) is false; anything else but a boolean fails. */
bool jflag_(const json_t *o, const char *k);
/* An address object {address, port}: address must equal addr; port must equal port (or any valid
 * one when port < 0). Returns the port. */
int check_addr_(const json_t *o, const char *k, const char *addr, int port);

/* Base64 (malloc'ed). unb64_ fails the test on malformed input. */
char *b64_(const void *data, size_t len);
unsigned char *unb64_(const char *text, size_t *len);
/* The bytes of a socket.received event's data member (malloc'ed). */
unsigned char *ev_data_(const json_t *ev, size_t *len);
/* Assert that the data of a socket.received event equals the text. */
void expect_data_(const json_t *ev, const char *text);
void sha256_(const void *data, size_t len, unsigned char out[32]);
/* len random bytes (malloc'ed). */
unsigned char *random_bytes_(size_t len);

/* ------------------------------------------------------------------------ */
/* resources of the running test, released by tc_cleanup                    */

struct tc {
    struct sockd_client *c;
    json_t *inbox;     /* messages read but not consumed yet, in arrival order */
    long long next_id; /* our request ids */
};

/* The first request id of a new client (7000 unless a test file sets another). */
extern long long tc_first_id;

/* Track fd (asserted >= 0): closed by tc_cleanup. Returns fd. */
int track_fd(int fd);
/* Close a (tracked or not) fd now and forget it. */
void close_fd_(int fd);
/* A new tracked control connection to d. */
struct tc *tc_new_(struct h_daemon *d);
/* Close a tracked client's control connection now (the daemon sees it go). */
void tc_close(struct tc *t);
/* A tracked loopback peer (harness), started. */
struct h_peer *peer_new_(enum h_peer_mode mode, int v6);
/* A tracked daemon of its own (conf may be NULL), started; stopped by tc_cleanup. */
struct h_daemon *daemon_new_(const char *conf);
/* Stop a tracked daemon now (h_daemon_stop: asserts a clean exit) and forget it. */
void daemon_stop_(struct h_daemon *d);
/* Release what the test made: clients, fds, peers, daemons (in that order). */
void tc_cleanup(void);
/* tc_cleanup as a cmocka teardown. */
int tc_teardown(void **state);

/* ------------------------------------------------------------------------ */
/* the control connection, with our own ids                                 */

bool is_response(const json_t *m);
/* Read one message (waiting up to ms) into the inbox. 1 if one came, 0 on timeout; fails on EOF. */
int tc_pump(struct tc *t, int ms);
/* Write a whole request line, reading what the daemon sends meanwhile (it may stop reading us while
 * its output to us is full). */
void tc_write(struct tc *t, const char *buf, size_t len);
/* A request object METHOD with PARAMS (stolen; NULL = {}); *id gets the id used. */
json_t *mkreq(struct tc *t, const char *method, json_t *params, long long *id);
/* Write a JSON value as one line. */
void tc_write_json(struct tc *t, json_t *v);
/* Send METHOD with PARAMS (stolen; NULL = {}); returns the id used. */
long long tc_send(struct tc *t, const char *method, json_t *params);
/* The response to id (whole message), waiting up to ms. */
json_t *tc_response(struct tc *t, long long id, const char *method, int ms);
/* Params from json_pack(fmt, ...) (fmt NULL: {}). */
json_t *vparams(const char *fmt, va_list ap);
/* Call with params (stolen); assert a result; return it (caller decrefs). */
json_t *tc_okp(struct tc *t, long long *id_out, const char *method, json_t *params);
/* Call; assert a result; return it (caller decrefs). *id_out gets the request id. */
json_t *tc_ok_(struct tc *t, long long *id_out, const char *method, const char *fmt, ...);
/* Call; assert an error response; return its code. *err_out (if not NULL) gets the error object. */
int tc_err_(struct tc *t, json_t **err_out, const char *method, const char *fmt, ...);
/* Call expecting error CODE; returns the error object (caller decrefs). */
json_t *tc_expect_err_(struct tc *t, int code, const char *method, const char *fmt, ...);
/* The data member of an error object (must be an object). */
json_t *err_data_(const json_t *err);
/* A batch of n requests on one line; returns the array of responses (caller decrefs). */
json_t *tc_batch_(struct tc *t, int n, const char *const *methods, json_t **params, long long *ids);

bool note_matches(const json_t *m, const char *method, long long sock);
/* The first notification (whole message) METHOD (NULL any) of SOCK (0 any), waiting up to ms; NULL
 * on timeout. */
json_t *tc_wait_msg(struct tc *t, const char *method, long long sock, int ms);
/* Wait for notification METHOD of SOCK; assert it came; return its params (caller decrefs). */
json_t *tc_event_(struct tc *t, const char *method, long long sock, int ms);
/* The next notification of SOCK, whatever it is: must be METHOD. Returns params. */
json_t *tc_next_is_(struct tc *t, long long sock, const char *method, int ms);
/* Assert that no notification for SOCK (0: any) arrives within ms (nor is waiting unread). */
void tc_no_event_(struct tc *t, long long sock, int ms);

/* ------------------------------------------------------------------------ */
/* socket-level shorthands                                                  */

/* socket.open {type, ipv6}; returns the handle. */
long long open_type_(struct tc *t, const char *type, int v6);
/* socket.info of s (its socket member checked); caller decrefs. */
json_t *tc_info_(struct tc *t, long long s);
void expect_state_(struct tc *t, long long s, const char *state);
long long info_int_(struct tc *t, long long s, const char *k);
/* The handle must be dead: socket.info answers -32001. */
void expect_gone_(struct tc *t, long long s);
void expect_result_empty_(const json_t *r, const char *what);
/* socket.send of text ("text" member); returns the send's request id (queued checked). */
long long send_text_(struct tc *t, long long s, const char *text, int notify);
/* socket.send of bytes ("data" member); returns the send's request id (queued checked). */
long long send_bytes_(struct tc *t, long long s, const void *data, size_t len, int notify);
/* Wait for socket.sent of the send with request id and byte count. */
void expect_sent_(struct tc *t, long long s, long long req, size_t bytes);
/* Start a recv (length, partial, stream, timeout_ms if > 0); returns the request id. */
long long start_recv_(struct tc *t, long long s, json_int_t length, int partial, int stream,
                      int timeout_ms);
/* Exact recv of len bytes; asserts one socket.received with exactly that text, no eof/timeout. */
void recv_expect_(struct tc *t, long long s, const char *text);
/* socket.recv_cancel; returns its canceled member. */
bool recv_canceled_(struct tc *t, long long s);

/* ------------------------------------------------------------------------ */
/* raw loopback sockets of the test process                                 */

void fill_sa(struct sockaddr_storage *ss, socklen_t *sl, int v6, int port);
int sa_port(const struct sockaddr_storage *ss);
int local_port_(int fd);
/* A tracked TCP socket bound to the loopback address (port 0: any). listen if backlog >= 0. */
int raw_bound_(int v6, int port, int backlog, int *port_out);
/* Accept one connection within ms (tracked); -1 on timeout. */
int raw_accept(int lfd, int ms);
void raw_write_(int fd, const void *data, size_t len);
void raw_write_str_(int fd, const char *s);
/* Read up to len bytes (stops early at EOF or after H_TIMEOUT_MS without progress); returns the
 * count. */
size_t raw_read_(int fd, void *buf, size_t len);
/* The same within H_TIMEOUT_MS in all. */
size_t raw_read_within(int fd, void *buf, size_t len);
/* The peer reads exactly the text. */
void raw_expect_(int fd, const char *text);
/* Is there something to read (data or EOF) within ms? */
bool raw_readable_(int fd, int ms);
/* Wait up to ms for the connection to end. Returns 0 on EOF, the errno of a reset (ECONNRESET), -1
 * on timeout, -2 if data arrived instead. */
int raw_wait_closed_(int fd, int ms);

/* ------------------------------------------------------------------------ */
/* the same, recording the calling test line                                */

#define tc_new(...) (TC_AT(), tc_new_(__VA_ARGS__))
#define peer_new(...) (TC_AT(), peer_new_(__VA_ARGS__))
#define daemon_new(...) (TC_AT(), daemon_new_(__VA_ARGS__))
#define daemon_stop(...) (TC_AT(), daemon_stop_(__VA_ARGS__))
#define close_fd(...) (TC_AT(), close_fd_(__VA_ARGS__))
#define jget(...) (TC_AT(), jget_(__VA_ARGS__))
#define jint(...) (TC_AT(), jint_(__VA_ARGS__))
#define jstr(...) (TC_AT(), jstr_(__VA_ARGS__))
#define jflag(...) (TC_AT(), jflag_(__VA_ARGS__))
#define check_addr(...) (TC_AT(), check_addr_(__VA_ARGS__))
#define b64(...) (TC_AT(), b64_(__VA_ARGS__))
#define unb64(...) (TC_AT(), unb64_(__VA_ARGS__))
#define ev_data(...) (TC_AT(), ev_data_(__VA_ARGS__))
#define expect_data(...) (TC_AT(), expect_data_(__VA_ARGS__))
#define sha256(...) (TC_AT(), sha256_(__VA_ARGS__))
#define random_bytes(...) (TC_AT(), random_bytes_(__VA_ARGS__))
#define tc_ok(...) (TC_AT(), tc_ok_(__VA_ARGS__))
#define tc_err(...) (TC_AT(), tc_err_(__VA_ARGS__))
#define tc_expect_err(...) (TC_AT(), tc_expect_err_(__VA_ARGS__))
#define err_data(...) (TC_AT(), err_data_(__VA_ARGS__))
#define tc_batch(...) (TC_AT(), tc_batch_(__VA_ARGS__))
#define tc_event(...) (TC_AT(), tc_event_(__VA_ARGS__))
#define tc_next_is(...) (TC_AT(), tc_next_is_(__VA_ARGS__))
#define tc_no_event(...) (TC_AT(), tc_no_event_(__VA_ARGS__))
#define open_type(...) (TC_AT(), open_type_(__VA_ARGS__))
#define tc_info(...) (TC_AT(), tc_info_(__VA_ARGS__))
#define expect_state(...) (TC_AT(), expect_state_(__VA_ARGS__))
#define info_int(...) (TC_AT(), info_int_(__VA_ARGS__))
#define expect_gone(...) (TC_AT(), expect_gone_(__VA_ARGS__))
#define expect_result_empty(...) (TC_AT(), expect_result_empty_(__VA_ARGS__))
#define send_text(...) (TC_AT(), send_text_(__VA_ARGS__))
#define send_bytes(...) (TC_AT(), send_bytes_(__VA_ARGS__))
#define expect_sent(...) (TC_AT(), expect_sent_(__VA_ARGS__))
#define start_recv(...) (TC_AT(), start_recv_(__VA_ARGS__))
#define recv_expect(...) (TC_AT(), recv_expect_(__VA_ARGS__))
#define recv_canceled(...) (TC_AT(), recv_canceled_(__VA_ARGS__))
#define local_port(...) (TC_AT(), local_port_(__VA_ARGS__))
#define raw_bound(...) (TC_AT(), raw_bound_(__VA_ARGS__))
#define raw_write(...) (TC_AT(), raw_write_(__VA_ARGS__))
#define raw_write_str(...) (TC_AT(), raw_write_str_(__VA_ARGS__))
#define raw_read(...) (TC_AT(), raw_read_(__VA_ARGS__))
#define raw_expect(...) (TC_AT(), raw_expect_(__VA_ARGS__))
#define raw_readable(...) (TC_AT(), raw_readable_(__VA_ARGS__))
#define raw_wait_closed(...) (TC_AT(), raw_wait_closed_(__VA_ARGS__))

#endif
