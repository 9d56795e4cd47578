/* Integration test harness: a real sockd on a temporary socket, real loopback peers. */
#ifndef SOCKD_TEST_HARNESS_H
#define SOCKD_TEST_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <setjmp.h>
#include <sys/types.h>
#include <cmocka.h>
#include <jansson.h>
#include <sockd/client.h>

/* Default time any single wait in a test may take before it fails. */
#define H_TIMEOUT_MS 5000

/* A running daemon: its own temp directory, socket path and optional config file. */
struct h_daemon {
    pid_t pid;
    char dir[256];  /* mkdtemp'ed directory, removed by h_daemon_stop */
    char sock[320]; /* control socket path inside dir */
    char conf[320]; /* config file path inside dir ("" if none) */
    char log[320];  /* daemon stderr is written here */
};

/* Start $SOCKD_BIN (-s dir/sockd.sock [-c conf] -v) and wait until it accepts; conf_text may be
 * NULL. */
void h_daemon_start(struct h_daemon *d, const char *conf_text);
/* SIGTERM, wait for exit, assert exit status 0 and that the socket file is gone; remove dir. */
void h_daemon_stop(struct h_daemon *d);
/* Number of open fds of a process (from /proc/PID/fd). */
int h_count_fds(pid_t pid);
/* Resident set size of a process in KiB (from /proc/PID/status). */
long h_rss_kib(pid_t pid);

/* Peak resident set size (VmHWM) of a process in KiB. */
long h_hwm_kib(pid_t pid);

/* The uid and gid hostile clients run as. */
#define H_NOBODY 65534
/*
 * A control connection made by a forked child that dropped to uid/gid (no supplementary groups)
 * before connecting, so the daemon's SO_PEERCRED sees that uid; the connected fd comes back to
 * this process (which stays root), so the test drives the other-uid client from here.
 */
int h_connect_as(const char *path, uid_t uid, gid_t gid);
/* Make d's directory and control socket reachable by every uid (0755 / 0666). */
void h_daemon_open_to_all(struct h_daemon *d);
/* h_connect_as wrapped in a client (the directory opened to all first); asserts success. */
struct sockd_client *h_client_as(struct h_daemon *d, uid_t uid, gid_t gid);
/* h_client_as(d, H_NOBODY, H_NOBODY). */
struct sockd_client *h_client_nobody(struct h_daemon *d);

/* A new control connection to d (asserts success). */
struct sockd_client *h_client(struct h_daemon *d);

/* Call with params built by json_pack(fmt, ...) (fmt NULL: {}); assert success; return result
 * (caller decrefs). */
json_t *h_ok(struct sockd_client *c, const char *method, const char *fmt, ...);
/* Call; assert an error response; return its code; *error_out (if not NULL) gets the error object.
 */
int h_err(struct sockd_client *c, json_t **error_out, const char *method, const char *fmt, ...);
/* Wait for notification METHOD for SOCKET (0 any); assert it came; return its params (caller
 * decrefs). */
json_t *h_event(struct sockd_client *c, const char *method, long long socket, int timeout_ms);
/* Assert that no notification arrives within ms. */
void h_no_event(struct sockd_client *c, int ms);

/* socket.open {type:"tcp"} -> handle. */
long long h_open(struct sockd_client *c, const char *type);
/* open + connect to 127.0.0.1:port + wait socket.connected -> handle. */
long long h_connect_tcp(struct sockd_client *c, int port);
/* Base64 helpers (OpenSSL). h_b64 returns malloc'ed NUL-terminated text; h_unb64 malloc'ed bytes.
 */
char *h_b64(const void *data, size_t len);
unsigned char *h_unb64(const char *text, size_t *len);
/* Receive exactly len bytes via socket.recv on socket s (several events if needed); malloc'ed. */
unsigned char *h_recv_exact(struct sockd_client *c, long long s, size_t len, int timeout_ms);

/* Loopback peers run in a thread of the test process. */
enum h_peer_mode {
    H_ECHO,  /* echo every byte back until EOF, then close */
    H_SINK,  /* accept and never read (fills the kernel buffers) */
    H_DRAIN, /* read and discard until EOF; bytes counted */
    H_CLOSE, /* accept and close at once (orderly EOF) */
    H_RESET, /* accept and reset (SO_LINGER 0) */
    H_GREET, /* write the greeting, then echo */
};
struct h_peer {
    int port; /* bound port on 127.0.0.1 (or ::1 when v6) */
    int lfd;
    int v6;
    enum h_peer_mode mode;
    const char *greeting;  /* for H_GREET */
    volatile size_t bytes; /* bytes read by the peer */
    volatile int accepted; /* connections accepted */
    void *priv;
};
/* Start a peer listening on 127.0.0.1 (v6: ::1) with a random port. */
void h_peer_start(struct h_peer *p, enum h_peer_mode mode, int v6);
void h_peer_stop(struct h_peer *p);

/* A plain client TCP connection to 127.0.0.1:port (blocking fd). */
int h_tcp_connect(int port);

/* Additions (existing declarations above are unchanged). */

/* Switch a running peer's mode; its open connections follow (e.g. H_SINK -> H_DRAIN). */
void h_peer_set_mode(struct h_peer *p, enum h_peer_mode mode);
/* Connections of the peer that saw an orderly EOF (read() == 0) from the other side. */
int h_peer_eofs(struct h_peer *p);
/* Wait (bounded) until at least n of the peer's connections saw EOF; returns the count reached. */
int h_peer_wait_eofs(struct h_peer *p, int n, int timeout_ms);
/* Wait (bounded) until the peer has read at least n bytes; returns the count it reached. */
size_t h_peer_wait_bytes(struct h_peer *p, size_t n, int timeout_ms);

/* Write a raw line (or any bytes) on the control connection; assert it was written. */
void h_send_raw(struct sockd_client *c, const char *text);
/* Read the next whole message from the wire (sockd_client_read_message); assert one came. */
json_t *h_read(struct sockd_client *c, int timeout_ms);
/* Print a JSON value to stderr with a label (diagnostics). */
void h_dump(const char *label, const json_t *v);
/* Monotonic clock in ms; sleep for ms. */
long long h_now_ms(void);
void h_sleep_ms(int ms);
/* Wait (bounded) until h_count_fds(pid) == n; returns the last count seen. */
int h_wait_fds(pid_t pid, int n, int timeout_ms);
/* Poll daemon.stats on c until "clients" == n (bounded by H_TIMEOUT_MS; asserts it got there);
   returns the last stats result (caller decrefs). */
json_t *h_wait_clients(struct sockd_client *c, long long n);

/* Tracked resources, released by h_cleanup() even when a test fails half-way (cmocka longjmps
   out of the test, so locals are lost). Use h_cleanup (or h_teardown) as the per-test teardown. */
struct sockd_client *h_client_auto(struct h_daemon *d);
/* Close a client (tracked or not) and forget it. */
void h_client_close(struct sockd_client *c);
/* A heap-allocated peer, started; stopped and freed by h_cleanup. */
struct h_peer *h_peer_auto(enum h_peer_mode mode, int v6);
/* SIGKILL a daemon (no assertions) and remove its directory; for cleanup paths. */
void h_daemon_kill(struct h_daemon *d);
/* Close tracked clients, then stop and free tracked peers. */
void h_cleanup(void);
/* h_cleanup as a cmocka teardown. */
int h_teardown(void **state);

/*
 * A daemon built with AddressSanitizer (its shadow memory makes VmSize terabytes): freed memory
 * sits in ASan's quarantine (256 MiB by default) instead of being reused, so RSS and VmHWM
 * bounds do not apply to it; ASan's own leak check does that job there.
 */
int h_asan_daemon(pid_t pid);

#endif
