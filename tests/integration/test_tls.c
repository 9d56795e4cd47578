/*
 * Integration tests: TLS through a real sockd (context.*, type "tls", socket.starttls), against
 * real peers on 127.0.0.1 only:
 *   - `openssl s_server` / `openssl s_client` child processes (stdin kept open through a pipe so
 *     they do not end the connection at EOF; output written to a file we read);
 *   - in-process TLS peers: one thread per connection running a small script of steps with the
 *     OpenSSL API (plaintext send/recv, handshake, send, recv, echo, drain until the end, send
 *     close_notify, close TCP without close_notify).
 *
 * Certificates are made at group setup with the `openssl` command in a mkdtemp directory: a CA,
 * a server certificate for DNS:test.local + IP:127.0.0.1 signed by it, a client certificate, an
 * expired server certificate, a server certificate from another CA, and one with the DNS name
 * only (to show that an IP connect is checked against the IP SAN).
 *
 * Every wait is bounded; every loop has a fixed bound. Resources made by a test (control
 * connections, fds, child processes, peer threads, SSL_CTXs) are tracked and released by the
 * per-test teardown, so a failing test does not leak into the next one.
 *
 * Environment: SOCKD_BIN (the daemon, required); SOCKD_TLSIT_FILTER runs only the tests matching
 * a cmocka pattern ("test_starttls*"); SOCKD_TLSIT_KEEP_LOG=PATH copies the daemon's log there.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, pipe2, strcasestr */
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tc.h"

#define PEER_WAIT_MS 10000 /* the longest any in-process peer waits for anything */
#define FP_MAX 200

static struct h_daemon g_d;   /* the group's daemon */
static char g_deferred[2048]; /* a failure reported at the end of the test (check_deferred) */

/* ------------------------------------------------------------------------ */
/* small utilities                                                           */

/* "sha-256 AB:CD:..." of a certificate (RFC 8122 form). */
static void
x509_fp(X509 *x, char *out, size_t n)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    size_t at;

    out[0] = 0;
    if (x == NULL || X509_digest(x, EVP_sha256(), md, &len) != 1)
        return;
    at = (size_t)snprintf(out, n, "sha-256 ");
    for (unsigned i = 0; i < len && at + 4 < n; i++)
        at += (size_t)snprintf(out + at, n - at, "%02X%s", md[i], i + 1 < len ? ":" : "");
}

/* ------------------------------------------------------------------------ */
/* certificates                                                              */

static char tdir[64];

static const char gen_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "EC='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
    "CA_EXT='-addext basicConstraints=critical,CA:TRUE -addext "
    "keyUsage=critical,keyCertSign,cRLSign'\n"
    "openssl req -x509 $EC -keyout ca.key -out ca.pem -subj /CN=sockd-it-ca -days 2 $CA_EXT\n"
    "openssl req -x509 $EC -keyout other.key -out other.pem -subj /CN=sockd-it-other-ca "
    "-days 2 $CA_EXT\n"
    "printf 'subjectAltName=DNS:test.local,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' "
    "> server.ext\n"
    "printf 'subjectAltName=DNS:test.local\\nextendedKeyUsage=serverAuth\\n' > dnsonly.ext\n"
    "printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n"
    "sign() {\n"
    "  openssl req $EC -keyout $1.key -out $1.csr -subj \"$2\"\n"
    "  openssl x509 -req -in $1.csr -CA $4.pem -CAkey $4.key -CAcreateserial -days $5 "
    "-extfile $3 -out $1.pem\n"
    "}\n"
    "sign server /CN=test.local server.ext ca 2\n"
    "sign client /CN=sockd-it-client client.ext ca 2\n"
    "sign expired /CN=test.local server.ext ca -1\n"
    "sign othersrv /CN=test.local server.ext other 2\n"
    "sign dnsonly /CN=test.local dnsonly.ext ca 2\n"
    "sign revoked /CN=sockd-it-revoked client.ext ca 2\n"
    "sign revsrv /CN=test.local server.ext ca 2\n"
    "printf 'subjectAltName=DNS:alpha.test\\nextendedKeyUsage=serverAuth\\n' > alpha.ext\n"
    "printf 'subjectAltName=DNS:*.beta.test,DNS:beta.test\\nextendedKeyUsage=serverAuth\\n' "
    "> beta.ext\n"
    "sign alpha /CN=alpha.test alpha.ext ca 2\n"
    "sign beta /CN=wild.beta.test beta.ext ca 2\n"
    /* a CRL of the CA revoking revoked and revsrv */
    "touch index.txt; echo 1000 > crlnumber\n"
    "printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\ncrlnumber=crlnumber\\n"
    "default_md=sha256\\ndefault_crl_days=2\\n' > crl.cnf\n"
    "openssl ca -config crl.cnf -keyfile ca.key -cert ca.pem -revoke revoked.pem\n"
    "openssl ca -config crl.cnf -keyfile ca.key -cert ca.pem -revoke revsrv.pem\n"
    "openssl ca -config crl.cnf -keyfile ca.key -cert ca.pem -gencrl -out ca.crl\n"
    /* the expired one must really be expired, the others valid */
    "! openssl x509 -noout -checkend 0 -in expired.pem\n"
    "openssl x509 -noout -checkend 3600 -in server.pem\n";

struct cert {
    const char *name;
    char *pem, *key;
    char fp[FP_MAX];      /* `openssl x509 -fingerprint -sha256`, RFC 8122 form */
    char fp_sha1[FP_MAX]; /* the same with -sha1 */
    char fp_sha512[FP_MAX];
};
static struct cert certs[] = {
    {"ca", 0, 0, "", "", ""},      {"other", 0, 0, "", "", ""},   {"server", 0, 0, "", "", ""},
    {"client", 0, 0, "", "", ""},  {"expired", 0, 0, "", "", ""}, {"othersrv", 0, 0, "", "", ""},
    {"dnsonly", 0, 0, "", "", ""}, {"revoked", 0, 0, "", "", ""}, {"revsrv", 0, 0, "", "", ""},
    {"alpha", 0, 0, "", "", ""},   {"beta", 0, 0, "", "", ""},
};
#define NCERTS (sizeof certs / sizeof certs[0])

static struct cert *
cert(const char *name)
{
    for (size_t i = 0; i < NCERTS; i++)
        if (strcmp(certs[i].name, name) == 0)
            return &certs[i];
    fail_msg("no certificate named %s", name);
    return NULL;
}

static char *
slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    size_t cap = 8192, len = 0, n;
    char *p;

    if (fp == NULL)
        return NULL;
    p = malloc(cap);
    while (p != NULL && (n = fread(p + len, 1, cap - len - 1, fp)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *q = realloc(p, cap * 2);
            if (q == NULL) {
                free(p);
                p = NULL;
                break;
            }
            p = q;
            cap *= 2;
        }
    }
    fclose(fp);
    if (p != NULL)
        p[len] = '\0';
    return p;
}

static char *
slurp_cert(const char *name, const char *ext)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s.%s", tdir, name, ext);
    return slurp(path);
}

/* `openssl x509 -noout -fingerprint -ALG` of tdir/name.pem, in RFC 8122 form. -1 on failure. */
static int
openssl_fp(const char *name, const char *alg, char *out, size_t n)
{
    char cmd[256], line[512];
    FILE *p;
    char *got, *eq;

    snprintf(cmd, sizeof cmd, "openssl x509 -noout -fingerprint -%s -in %s/%s.pem", alg, tdir,
             name);
    p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    got = fgets(line, sizeof line, p);
    if (pclose(p) != 0 || got == NULL || (eq = strchr(line, '=')) == NULL)
        return -1;
    eq[strcspn(eq, "\r\n")] = '\0';
    /* "sha256" -> "sha-256" */
    snprintf(out, n, "sha-%s %s", alg + 3, eq + 1);
    return 0;
}

static const char *
cert_path(const char *name, const char *ext)
{
    static char bufs[4][160];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s.%s", tdir, name, ext);
    return b;
}

/* ------------------------------------------------------------------------ */
/* openssl s_server / s_client child processes                               */

struct proc {
    pid_t pid;
    int in;        /* write end of its stdin (kept open: EOF would end its connection) */
    char log[160]; /* its stdout and stderr */
    int port;      /* s_server: the port it listens on */
};
#define PROC_MAX 32
static struct proc *trk_proc[PROC_MAX];
static int n_proc;
static int proc_seq;

/* The whole output so far (malloc'ed, maybe ""). */
static char *
proc_output(const struct proc *p)
{
    char *s = slurp(p->log);
    if (s == NULL) {
        s = strdup("");
        EXPECT_TRUE(s != NULL, "s");
    }
    return s;
}

/* Whether the process has exited (reaped here; pid becomes 0). */
static bool
proc_reap(struct proc *p)
{
    int st;
    if (p->pid <= 0)
        return true;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->pid = 0;
        return true;
    }
    return false;
}

/* Wait up to ms for needle in the output. */
static bool
proc_wait_for(struct proc *p, const char *needle, int ms)
{
    long long deadline = now_ms() + ms;
    for (int guard = 0; guard < 100000; guard++) {
        char *out = proc_output(p);
        bool found = strstr(out, needle) != NULL;
        free(out);
        if (found)
            return true;
        if (now_ms() > deadline)
            return false;
        sleep_ms(20);
    }
    return false;
}

static void
proc_stop(struct proc *p)
{
    int st;
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
        p->pid = 0;
    }
    if (p->in >= 0)
        close(p->in);
    p->in = -1;
}

/*
 * Run cmd (through sh, exec'ed) with stdin from a pipe we keep and output to a file. With
 * want_accept, wait for s_server's "ACCEPT 127.0.0.1:PORT" line; NULL (process stopped) if it
 * exits first and may_fail, else the test fails.
 */
static struct proc *
proc_start_(const char *cmd, bool want_accept, bool may_fail)
{
    struct proc *p = calloc(1, sizeof *p);
    int pfd[2];

    EXPECT_TRUE(p != NULL, "p");
    EXPECT_TRUE(n_proc < PROC_MAX, "n_proc < PROC_MAX");
    snprintf(p->log, sizeof p->log, "%s/proc-%d.log", tdir, ++proc_seq);
    EXPECT_INT(pipe2(pfd, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    p->pid = fork();
    EXPECT_TRUE(p->pid >= 0, "p->pid >= 0");
    if (p->pid == 0) {
        int out = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0)
            _exit(126);
        dup2(pfd[0], 0);
        dup2(out, 1);
        dup2(out, 2);
        for (int i = 3; i < 4096; i++)
            close(i);
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(pfd[0]);
    p->in = pfd[1];
    trk_proc[n_proc++] = p;
    if (!want_accept)
        return p;

    long long deadline = now_ms() + 10000;
    for (int guard = 0; guard < 100000; guard++) {
        char *out = proc_output(p), *a = strstr(out, "ACCEPT 127.0.0.1:");
        if (a != NULL && strchr(a, '\n') != NULL) {
            p->port = atoi(a + strlen("ACCEPT 127.0.0.1:"));
            free(out);
            break;
        }
        if (proc_reap(p) || now_ms() > deadline) {
            if (may_fail) {
                fprintf(stderr, "  (note) `%s` did not start: %.300s\n", cmd, out);
                free(out);
                proc_stop(p);
                return NULL;
            }
            FAIL("`%s` did not start listening: %.600s", cmd, out);
        }
        free(out);
        sleep_ms(20);
    }
    EXPECT_TRUE(p->port > 0 && p->port < 65536, "s_server port %d", p->port);
    return p;
}
#define proc_start(...) (TC_AT(), proc_start_(__VA_ARGS__))

/* `openssl s_server` with tdir/NAME.pem and .key on 127.0.0.1, any port, one connection. */
static struct proc *
s_server_(const char *name, const char *extra, bool may_fail)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd,
             "exec openssl s_server -accept 127.0.0.1:0 -naccept 1 -cert %s -key %s %s",
             cert_path(name, "pem"), cert_path(name, "key"), extra ? extra : "");
    return proc_start_(cmd, true, may_fail);
}
#define s_server(...) (TC_AT(), s_server_(__VA_ARGS__))

static void
proc_write_(struct proc *p, const char *text)
{
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(p->in, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            FAIL("writing to the stdin of pid %d: %s", (int)p->pid, strerror(errno));
        off += (size_t)n;
    }
}
#define proc_write(...) (TC_AT(), proc_write_(__VA_ARGS__))

/* ------------------------------------------------------------------------ */
/* in-process TLS peers: one thread, one connection, a script of steps        */

enum tp_op {
    OP_PSEND,  /* plaintext send of data/len */
    OP_PRECV,  /* plaintext recv of exactly len bytes (compared with data if not NULL) */
    OP_HS,     /* the TLS handshake */
    OP_SEND,   /* SSL_write all of data/len */
    OP_RECV,   /* SSL_read exactly len bytes (compared with data if not NULL) */
    OP_ECHO,   /* SSL_read and write back until the peer ends (close_notify or EOF) */
    OP_DRAIN,  /* SSL_read and keep until the peer ends */
    OP_NOTIFY, /* send close_notify */
    OP_CLOSE,  /* end TCP (FIN) without close_notify, then wait for the peer's close */
    OP_SLEEP,  /* sleep len ms */
    OP_GO,     /* wait until the test calls tp_go */
};

enum tp_end {
    END_NONE,
    END_NOTIFY, /* the peer sent close_notify (SSL_ERROR_ZERO_RETURN) */
    END_EOF,    /* TCP ended without close_notify */
    END_ERR,    /* another error (text in err) */
};

static const char *const tp_end_names[] = {"none", "close_notify", "eof without close_notify",
                                           "error"};

struct tp_step {
    enum tp_op op;
    const void *data;
    size_t len;
};

#define TP_STEPS 16
struct tp {
    int server;      /* listen on 127.0.0.1 (any port) and accept one connection; else connect */
    int port;        /* server: our port; client: the port to connect to */
    SSL_CTX *ctx;    /* borrowed */
    const char *sni; /* client: SNI, and the host name checked when ctx verifies */
    struct tp_step st[TP_STEPS];
    int n;
    /* runtime */
    int lfd, fd;
    SSL *ssl;
    pthread_t th;
    int running;
    int stop, go, steps_done, finished; /* atomics */
    /* results, read after tp_join (or, for steps_done, with atomics) */
    int failed, fail_step;
    char err[800];
    int end;
    unsigned char *got; /* every byte received (plaintext and TLS) */
    size_t got_len, got_cap;
    char alpn[64], version[32], cipher[80], peer_fp[FP_MAX], peer_cn[128];
    int verified; /* a peer certificate that verified */
    int local_port;
};

#define TP_MAX 16
static struct tp *trk_tp[TP_MAX];
static int n_tp;
static SSL_CTX *trk_ctx[TP_MAX];
static int n_ctx;

static bool
tp_stopping(struct tp *p)
{
    return __atomic_load_n(&p->stop, __ATOMIC_SEQ_CST) != 0;
}

static int tp_fail(struct tp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int
tp_fail(struct tp *p, const char *fmt, ...)
{
    va_list ap;
    size_t at;
    unsigned long e;
    int err = errno;

    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    at = strlen(p->err);
    while ((e = ERR_get_error()) != 0 && at + 4 < sizeof p->err) {
        char one[256];
        ERR_error_string_n(e, one, sizeof one);
        at += (size_t)snprintf(p->err + at, sizeof p->err - at, " [%s]", one);
    }
    if (at + 4 < sizeof p->err && err != 0)
        snprintf(p->err + at, sizeof p->err - at, " (errno %s)", strerror(err));
    return -1;
}

static int
tp_keep(struct tp *p, const void *data, size_t n)
{
    if (p->got_len + n > p->got_cap) {
        size_t cap = p->got_cap ? p->got_cap : 4096;
        while (cap < p->got_len + n)
            cap *= 2;
        unsigned char *q = realloc(p->got, cap);
        if (q == NULL)
            return tp_fail(p, "out of memory");
        p->got = q;
        p->got_cap = cap;
    }
    memcpy(p->got + p->got_len, data, n);
    p->got_len += n;
    return 0;
}

/* An SSL call's result: 1 done, 0 retry (a 200 ms socket timeout or a want), -1 failed. */
static int
tp_ssl_result(struct tp *p, int r, long long deadline)
{
    int e;
    if (r > 0)
        return 1;
    e = SSL_get_error(p->ssl, r);
    if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && !tp_stopping(p) &&
        now_ms() < deadline) {
        ERR_clear_error();
        return 0;
    }
    return -1;
}

/* How an SSL_read that returned r ended the stream (END_*), or -1 to retry. */
static int
tp_read_end(struct tp *p, int r, long long deadline)
{
    int e = SSL_get_error(p->ssl, r);
    unsigned long last = ERR_peek_last_error();

    if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && !tp_stopping(p) &&
        now_ms() < deadline) {
        ERR_clear_error();
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return END_NOTIFY;
    if ((e == SSL_ERROR_SYSCALL && last == 0 && errno == 0) ||
        (e == SSL_ERROR_SSL && ERR_GET_LIB(last) == ERR_LIB_SSL &&
         ERR_GET_REASON(last) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        ERR_clear_error();
        return END_EOF;
    }
    tp_fail(p, "SSL_read: SSL error %d", e);
    return END_ERR;
}

static int
tp_ssl_write_all(struct tp *p, const unsigned char *b, size_t len)
{
    long long deadline = now_ms() + PEER_WAIT_MS;
    while (len > 0) {
        int r, k;
        ERR_clear_error();
        errno = 0;
        r = SSL_write(p->ssl, b, len > 16384 ? 16384 : (int)len);
        k = tp_ssl_result(p, r, deadline);
        if (k < 0)
            return tp_fail(p, "SSL_write: SSL error %d", SSL_get_error(p->ssl, r));
        if (k > 0) {
            b += r;
            len -= (size_t)r;
            deadline = now_ms() + PEER_WAIT_MS;
        }
    }
    return 0;
}

static int
tp_handshake(struct tp *p)
{
    long long deadline = now_ms() + PEER_WAIT_MS;
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    X509 *peer;

    p->ssl = SSL_new(p->ctx);
    if (p->ssl == NULL || SSL_set_fd(p->ssl, p->fd) != 1)
        return tp_fail(p, "SSL_new");
    if (p->server) {
        SSL_set_accept_state(p->ssl);
    } else {
        SSL_set_connect_state(p->ssl);
        if (p->sni != NULL) {
            SSL_set_tlsext_host_name(p->ssl, p->sni);
            if (SSL_CTX_get_verify_mode(p->ctx) & SSL_VERIFY_PEER)
                SSL_set1_host(p->ssl, p->sni);
        }
    }
    for (;;) {
        int r, k;
        ERR_clear_error();
        errno = 0;
        r = SSL_do_handshake(p->ssl);
        k = tp_ssl_result(p, r, deadline);
        if (k > 0)
            break;
        if (k < 0) {
            long vr = SSL_get_verify_result(p->ssl);
            return tp_fail(p, "handshake: SSL error %d, verify result %ld (%s)",
                           SSL_get_error(p->ssl, r), vr, X509_verify_cert_error_string(vr));
        }
    }
    SSL_get0_alpn_selected(p->ssl, &alpn, &alpn_len);
    if (alpn != NULL && alpn_len < sizeof p->alpn) {
        memcpy(p->alpn, alpn, alpn_len);
        p->alpn[alpn_len] = 0;
    }
    snprintf(p->version, sizeof p->version, "%s", SSL_get_version(p->ssl));
    if (SSL_get_current_cipher(p->ssl) != NULL)
        snprintf(p->cipher, sizeof p->cipher, "%s",
                 SSL_CIPHER_get_name(SSL_get_current_cipher(p->ssl)));
    peer = SSL_get0_peer_certificate(p->ssl);
    if (peer != NULL) {
        x509_fp(peer, p->peer_fp, sizeof p->peer_fp);
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, p->peer_cn,
                                  sizeof p->peer_cn);
        p->verified = SSL_get_verify_result(p->ssl) == X509_V_OK;
    }
    return 0;
}

/* Read until the peer ends the stream; echo when echo. Records p->end. */
static int
tp_until_end(struct tp *p, bool echo)
{
    unsigned char buf[16384];
    long long deadline = now_ms() + PEER_WAIT_MS;

    for (;;) {
        int r;
        ERR_clear_error();
        errno = 0;
        r = SSL_read(p->ssl, buf, sizeof buf);
        if (r > 0) {
            deadline = now_ms() + PEER_WAIT_MS;
            if (tp_keep(p, buf, (size_t)r) < 0)
                return -1;
            if (echo && tp_ssl_write_all(p, buf, (size_t)r) < 0)
                return -1;
            continue;
        }
        int end = tp_read_end(p, r, deadline);
        if (end < 0)
            continue;
        p->end = end;
        if (end == END_NOTIFY) {
            ERR_clear_error();
            SSL_shutdown(p->ssl); /* our close_notify back; the peer may be gone already */
            ERR_clear_error();
        }
        return 0;
    }
}

static int
tp_step(struct tp *p, const struct tp_step *s)
{
    long long deadline = now_ms() + PEER_WAIT_MS;

    switch (s->op) {
    case OP_PSEND: {
        const char *b = s->data;
        size_t left = s->len;
        while (left > 0) {
            ssize_t n = send(p->fd, b, left, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EINTR) && !tp_stopping(p) &&
                now_ms() < deadline)
                continue;
            if (n <= 0)
                return tp_fail(p, "plaintext send");
            b += n;
            left -= (size_t)n;
            deadline = now_ms() + PEER_WAIT_MS;
        }
        return 0;
    }
    case OP_PRECV: {
        size_t start = p->got_len, have = 0;
        char buf[65536];
        while (have < s->len) {
            size_t want = s->len - have < sizeof buf ? s->len - have : sizeof buf;
            ssize_t n = recv(p->fd, buf, want, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR) && !tp_stopping(p) &&
                now_ms() < deadline)
                continue;
            if (n <= 0)
                return tp_fail(p, "plaintext recv: %s after %zu of %zu bytes",
                               n == 0 ? "EOF" : "error", have, s->len);
            if (tp_keep(p, buf, (size_t)n) < 0)
                return -1;
            have += (size_t)n;
            deadline = now_ms() + PEER_WAIT_MS;
        }
        if (s->data != NULL && memcmp(p->got + start, s->data, s->len) != 0)
            return tp_fail(p, "plaintext recv: %zu bytes arrived but differ from the expected",
                           s->len);
        return 0;
    }
    case OP_HS:
        return tp_handshake(p);
    case OP_SEND:
        return tp_ssl_write_all(p, s->data, s->len);
    case OP_RECV: {
        size_t start = p->got_len, have = 0;
        unsigned char buf[16384];
        while (have < s->len) {
            size_t want = s->len - have < sizeof buf ? s->len - have : sizeof buf;
            int r;
            ERR_clear_error();
            errno = 0;
            r = SSL_read(p->ssl, buf, (int)want);
            if (r > 0) {
                if (tp_keep(p, buf, (size_t)r) < 0)
                    return -1;
                have += (size_t)r;
                deadline = now_ms() + PEER_WAIT_MS;
                continue;
            }
            int end = tp_read_end(p, r, deadline);
            if (end < 0)
                continue;
            p->end = end;
            return tp_fail(p, "SSL_read: stream ended (%s) after %zu of %zu bytes",
                           tp_end_names[end], have, s->len);
        }
        if (s->data != NULL && memcmp(p->got + start, s->data, s->len) != 0)
            return tp_fail(p, "SSL_read: got \"%.*s\", expected \"%.*s\"", (int)s->len,
                           (const char *)p->got + start, (int)s->len, (const char *)s->data);
        return 0;
    }
    case OP_ECHO:
        return tp_until_end(p, true);
    case OP_DRAIN:
        return tp_until_end(p, false);
    case OP_NOTIFY:
        for (;;) {
            int r;
            ERR_clear_error();
            r = SSL_shutdown(p->ssl);
            if (r >= 0)
                return 0;
            if (tp_ssl_result(p, r, deadline) < 0)
                return tp_fail(p, "SSL_shutdown");
        }
    case OP_CLOSE: {
        char c;
        shutdown(p->fd, SHUT_WR);
        for (;;) {
            ssize_t n = recv(p->fd, &c, 1, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR) && !tp_stopping(p) &&
                now_ms() < deadline)
                continue;
            if (n == 0 || (n < 0 && errno == ECONNRESET))
                return 0;
            if (n < 0)
                return tp_fail(p, "waiting for the peer's close after our FIN");
            /* bytes after our FIN (e.g. an alert): keep waiting */
        }
    }
    case OP_SLEEP:
        sleep_ms((int)s->len);
        return 0;
    case OP_GO:
        while (!__atomic_load_n(&p->go, __ATOMIC_SEQ_CST)) {
            if (tp_stopping(p) || now_ms() > deadline)
                return tp_fail(p, "never told to go on");
            sleep_ms(5);
        }
        return 0;
    }
    return tp_fail(p, "unknown step");
}

static void *
tp_main(void *arg)
{
    struct tp *p = arg;
    struct timeval tv = {0, 200000};
    int fd = -1;

    if (p->server) {
        long long deadline = now_ms() + PEER_WAIT_MS;
        while (fd < 0 && !tp_stopping(p) && now_ms() < deadline) {
            struct pollfd pf = {p->lfd, POLLIN, 0};
            if (poll(&pf, 1, 100) > 0)
                fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
        }
        if (fd < 0)
            tp_fail(p, "nobody connected");
    } else {
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)p->port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            tp_fail(p, "connect to 127.0.0.1:%d", p->port);
            close(fd);
            fd = -1;
        }
        if (fd >= 0) {
            struct sockaddr_in me;
            socklen_t ml = sizeof me;
            if (getsockname(fd, (struct sockaddr *)&me, &ml) == 0)
                p->local_port = ntohs(me.sin_port);
        }
    }
    if (fd < 0) {
        p->failed = 1;
        p->fail_step = -1;
    } else {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        __atomic_store_n(&p->fd, fd, __ATOMIC_SEQ_CST);
        for (int i = 0; i < p->n; i++) {
            if (tp_step(p, &p->st[i]) < 0) {
                p->failed = 1;
                p->fail_step = i;
                break;
            }
            __atomic_add_fetch(&p->steps_done, 1, __ATOMIC_SEQ_CST);
        }
        /* The end of the script ends the connection (FIN; no close_notify unless a step sent
         * it). The fd itself is closed by tp_join. */
        shutdown(fd, SHUT_RDWR);
    }
    __atomic_store_n(&p->finished, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* A new peer (tracked): server listens now on 127.0.0.1 (p->port set); steps added with tp_add. */
static struct tp *
tp_new(int server, int port, SSL_CTX *c, const char *sni)
{
    struct tp *p = calloc(1, sizeof *p);
    EXPECT_TRUE(p != NULL, "p");
    EXPECT_TRUE(n_tp < TP_MAX, "n_tp < TP_MAX");
    p->server = server;
    p->port = port;
    p->ctx = c;
    p->sni = sni;
    p->lfd = -1;
    p->fd = -1;
    if (server) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        EXPECT_TRUE(p->lfd >= 0, "p->lfd >= 0");
        EXPECT_INT(bind(p->lfd, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s", strerror(errno));
        EXPECT_INT(listen(p->lfd, 8), 0, "listen: %s", strerror(errno));
        EXPECT_INT(getsockname(p->lfd, (struct sockaddr *)&sa, &sl), 0, "getsockname: %s",
                   strerror(errno));
        p->port = ntohs(sa.sin_port);
    }
    trk_tp[n_tp++] = p;
    return p;
}

static void
tp_add(struct tp *p, enum tp_op op, const void *data, size_t len)
{
    EXPECT_TRUE(p->n < TP_STEPS, "p->n < TP_STEPS");
    p->st[p->n].op = op;
    p->st[p->n].data = data;
    p->st[p->n].len = len;
    p->n++;
}

static void
tp_text(struct tp *p, enum tp_op op, const char *text)
{
    tp_add(p, op, text, strlen(text));
}

static void
tp_start(struct tp *p)
{
    EXPECT_INT(pthread_create(&p->th, NULL, tp_main, p), 0,
               "pthread_create(&p->th, NULL, tp_main, p)");
    p->running = 1;
}

static void
tp_go(struct tp *p)
{
    __atomic_store_n(&p->go, 1, __ATOMIC_SEQ_CST);
}

/* Wait (bounded) until the peer finished its script; join it. */
static void
tp_join_(struct tp *p)
{
    long long deadline = now_ms() + PEER_WAIT_MS + 2000;
    while (!__atomic_load_n(&p->finished, __ATOMIC_SEQ_CST) && now_ms() < deadline)
        sleep_ms(5);
    if (!__atomic_load_n(&p->finished, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&p->stop, 1, __ATOMIC_SEQ_CST);
        pthread_join(p->th, NULL);
        p->running = 0;
        FAIL("the in-process peer did not finish its script (%d of %d steps done)", p->steps_done,
             p->n);
    }
    pthread_join(p->th, NULL);
    p->running = 0;
}
#define tp_join(...) (TC_AT(), tp_join_(__VA_ARGS__))

/* Join and assert that every step succeeded. */
static void
tp_expect_ok_(struct tp *p)
{
    tp_join_(p);
    if (p->failed)
        FAIL("in-process peer failed at step %d: %s", p->fail_step, p->err);
}
#define tp_expect_ok(...) (TC_AT(), tp_expect_ok_(__VA_ARGS__))

static void
tp_free(struct tp *p)
{
    if (p->running) {
        __atomic_store_n(&p->stop, 1, __ATOMIC_SEQ_CST);
        pthread_join(p->th, NULL);
    }
    SSL_free(p->ssl);
    if (p->fd >= 0)
        close(p->fd);
    if (p->lfd >= 0)
        close(p->lfd);
    free(p->got);
    free(p);
}

static SSL_CTX *
track_ctx(SSL_CTX *c)
{
    EXPECT_TRUE(c != NULL, "c");
    EXPECT_TRUE(n_ctx < TP_MAX, "n_ctx < TP_MAX");
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    trk_ctx[n_ctx++] = c;
    return c;
}

/* A server SSL_CTX with tdir/NAME.pem and .key. */
static SSL_CTX *
peer_server_ctx(const char *name)
{
    SSL_CTX *c = track_ctx(SSL_CTX_new(TLS_server_method()));
    EXPECT_INT(SSL_CTX_use_certificate_file(c, cert_path(name, "pem"), SSL_FILETYPE_PEM), 1,
               "SSL_CTX_use_certificate_file");
    EXPECT_INT(SSL_CTX_use_PrivateKey_file(c, cert_path(name, "key"), SSL_FILETYPE_PEM), 1,
               "SSL_CTX_use_PrivateKey_file");
    return c;
}

/* A client SSL_CTX: verifying against ca.pem when verify; client certificate NAME if not NULL;
 * ALPN list (wire form) if not NULL. */
static SSL_CTX *
peer_client_ctx(bool verify, const char *name, const char *alpn_wire)
{
    SSL_CTX *c = track_ctx(SSL_CTX_new(TLS_client_method()));
    if (verify) {
        EXPECT_INT(SSL_CTX_load_verify_locations(c, cert_path("ca", "pem"), NULL), 1,
                   "SSL_CTX_load_verify_locations");
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    }
    if (name != NULL) {
        EXPECT_INT(SSL_CTX_use_certificate_file(c, cert_path(name, "pem"), SSL_FILETYPE_PEM), 1,
                   "SSL_CTX_use_certificate_file");
        EXPECT_INT(SSL_CTX_use_PrivateKey_file(c, cert_path(name, "key"), SSL_FILETYPE_PEM), 1,
                   "SSL_CTX_use_PrivateKey_file");
    }
    if (alpn_wire != NULL)
        EXPECT_INT(SSL_CTX_set_alpn_protos(c, (const unsigned char *)alpn_wire,
                                           (unsigned)strlen(alpn_wire)),
                   0, "SSL_CTX_set_alpn_protos");
    return c;
}

/* ------------------------------------------------------------------------ */
/* teardown                                                                  */

static int
t_cleanup(void **state)
{
    (void)state;
    tc_cleanup();
    for (int i = 0; i < n_proc; i++) {
        proc_stop(trk_proc[i]);
        free(trk_proc[i]);
    }
    n_proc = 0;
    for (int i = 0; i < n_tp; i++)
        tp_free(trk_tp[i]);
    n_tp = 0;
    for (int i = 0; i < n_ctx; i++)
        SSL_CTX_free(trk_ctx[i]);
    n_ctx = 0;
    g_deferred[0] = '\0';
    return 0;
}

/* ------------------------------------------------------------------------ */
/* daemon-side shorthands                                                    */

/* context.create with params from fmt (NULL: {}); returns the handle. */
static long long
ctx_new_(struct tc *t, const char *fmt, ...)
{
    va_list ap;
    json_t *params, *r;
    long long c;

    va_start(ap, fmt);
    params = vparams(fmt, ap);
    va_end(ap);
    r = tc_okp(t, NULL, "context.create", params);
    c = jint_(r, "context");
    EXPECT_TRUE(c > 0, "context.create handle: %s", jd(r));
    json_decref(r);
    return c;
}
#define ctx_new(...) (TC_AT(), ctx_new_(__VA_ARGS__))

/* context.set_server_certificate with certificate NAME; checks the fingerprint it answers. */
static void
ctx_server_cert_(struct tc *t, long long c, const char *name)
{
    struct cert *ce = cert(name);
    json_t *r = tc_ok_(t, NULL, "context.set_server_certificate", "{s:I, s:s, s:s}", "context",
                       (json_int_t)c, "cert", ce->pem, "key", ce->key);
    EXPECT_STR(jstr_(r, "fingerprint"), ce->fp, "set_server_certificate(%s) fingerprint", name);
    json_decref(r);
}
#define ctx_server_cert(...) (TC_AT(), ctx_server_cert_(__VA_ARGS__))

static long long
open_tls_(struct tc *t, long long c)
{
    json_t *r =
        tc_ok_(t, NULL, "socket.open", "{s:s, s:I}", "type", "tls", "context", (json_int_t)c);
    long long s = jint_(r, "socket");
    EXPECT_TRUE(s > 0, "socket.open handle: %s", jd(r));
    json_decref(r);
    return s;
}
#define open_tls(...) (TC_AT(), open_tls_(__VA_ARGS__))

/* open a tls socket with context c and connect it to 127.0.0.1:port (server_name if not NULL);
 * returns the socket, *id the connect's request id. */
static long long
tls_connect_(struct tc *t, long long c, int port, const char *sni, long long *id)
{
    long long s = open_tls_(t, c);
    json_t *r;
    if (sni != NULL)
        r = tc_ok_(t, id, "socket.connect", "{s:I, s:s, s:i, s:s}", "socket", (json_int_t)s,
                   "address", "127.0.0.1", "port", port, "server_name", sni);
    else
        r = tc_ok_(t, id, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s, "address",
                   "127.0.0.1", "port", port);
    EXPECT_TRUE(json_is_object(r) && json_object_size(r) == 0, "socket.connect result %s", jd(r));
    json_decref(r);
    return s;
}
#define tls_connect(...) (TC_AT(), tls_connect_(__VA_ARGS__))

/* socket.connected of s for request id (the first notification of s); returns its tls object. */
static json_t *
expect_connected_(struct tc *t, long long s, long long id, int port)
{
    json_t *ev = tc_next_is_(t, s, "socket.connected", H_TIMEOUT_MS), *tls;
    EXPECT_INT(jint_(ev, "request"), id, "socket.connected request: %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "remote"), "address"), "127.0.0.1", "remote: %s", jd(ev));
    EXPECT_INT(jint_(jget_(ev, "remote"), "port"), port, "remote port: %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "local"), "address"), "127.0.0.1", "local: %s", jd(ev));
    tls = jget_(ev, "tls");
    if (!json_is_object(tls))
        FAIL("socket.connected tls is not an object: %s", jd(ev));
    json_incref(tls);
    json_decref(ev);
    return tls;
}
#define expect_connected(...) (TC_AT(), expect_connected_(__VA_ARGS__))

/* socket.closed of s with reason (the next notification of s); request must be id (> 0), absent
 * (0) or anything (-1). Returns the params. */
static json_t *
expect_closed_(struct tc *t, long long s, const char *reason, long long id)
{
    json_t *ev = tc_next_is_(t, s, "socket.closed", H_TIMEOUT_MS);
    EXPECT_STR(jstr_(ev, "reason"), reason, "socket.closed reason: %s", jd(ev));
    if (id > 0)
        EXPECT_INT(jint_(ev, "request"), id, "socket.closed request: %s", jd(ev));
    else if (id == 0)
        EXPECT_TRUE(json_object_get(ev, "request") == NULL, "socket.closed has no request: %s",
                    jd(ev));
    return ev;
}
#define expect_closed(...) (TC_AT(), expect_closed_(__VA_ARGS__))

/* socket.closed tls_handshake_failed with a non-empty detail; the handle is gone after it. The
 * detail must contain one of the words in any_of ("|"-separated, case-insensitive; NULL: any). */
static void
expect_hs_failed_(struct tc *t, long long s, long long id, const char *any_of)
{
    json_t *ev = expect_closed_(t, s, "tls_handshake_failed", id);
    const char *detail = jstr_(ev, "detail");
    EXPECT_TRUE(detail[0] != '\0', "socket.closed detail is empty: %s", jd(ev));
    if (any_of != NULL) {
        char words[256], *save = NULL;
        bool found = false;
        snprintf(words, sizeof words, "%s", any_of);
        for (char *w = strtok_r(words, "|", &save); w && !found; w = strtok_r(NULL, "|", &save))
            found = strcasestr(detail, w) != NULL;
        EXPECT_TRUE(found, "detail \"%s\" names none of \"%s\"", detail, any_of);
    }
    json_decref(ev);
    json_t *err = NULL;
    EXPECT_INT(tc_err_(t, &err, "socket.info", "{s:I}", "socket", (json_int_t)s),
               SOCKD_E_UNKNOWN_HANDLE, "socket.info after tls_handshake_failed");
    json_decref(err);
}
#define expect_hs_failed(...) (TC_AT(), expect_hs_failed_(__VA_ARGS__))

#define ANY "*"
/*
 * Check a tls object: version (NULL: TLSv1.2 or TLSv1.3), cipher present, verified, and the
 * optional members peer_fingerprint, server_name and alpn: NULL must be absent, ANY present,
 * else equal.
 */
static void
check_tls_(const json_t *tls, const char *version, bool verified, const char *fp, const char *sni,
           const char *alpn)
{
    const char *v = jstr_(tls, "version");
    const struct {
        const char *key, *want;
    } opt[] = {{"peer_fingerprint", fp}, {"server_name", sni}, {"alpn", alpn}};

    if (version)
        EXPECT_STR(v, version, "tls.version in %s", jd(tls));
    else
        EXPECT_TRUE(!strcmp(v, "TLSv1.2") || !strcmp(v, "TLSv1.3"), "tls.version in %s", jd(tls));
    EXPECT_TRUE(jstr_(tls, "cipher")[0] != '\0', "tls.cipher in %s", jd(tls));
    json_t *vf = jget_(tls, "verified");
    EXPECT_TRUE(json_is_boolean(vf), "tls.verified is a boolean in %s", jd(tls));
    EXPECT_INT(json_is_true(vf), verified, "tls.verified in %s", jd(tls));
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
        json_t *m = json_object_get(tls, opt[i].key);
        if (opt[i].want == NULL)
            EXPECT_TRUE(m == NULL, "tls.%s must be absent in %s", opt[i].key, jd(tls));
        else if (strcmp(opt[i].want, ANY) == 0)
            EXPECT_TRUE(json_is_string(m), "tls.%s must be present in %s", opt[i].key, jd(tls));
        else
            EXPECT_STR(jstr_(tls, opt[i].key), opt[i].want, "tls.%s in %s", opt[i].key, jd(tls));
    }
}
#define check_tls(...) (TC_AT(), check_tls_(__VA_ARGS__))

/* socket.send of the bytes of text ("data", notify); returns the request id. */
#define send_str(t, s, text) send_bytes(t, s, text, strlen(text), 1)

/* An exact recv of strlen(text) bytes (params socket and length only): one socket.received with
 * exactly that text, no timeout flag. */
static void
recv_text_(struct tc *t, long long s, const char *text)
{
    long long id;
    json_t *r = tc_ok_(t, &id, "socket.recv", "{s:I, s:I}", "socket", (json_int_t)s, "length",
                       (json_int_t)strlen(text));
    json_decref(r);
    json_t *ev = tc_event_(t, "socket.received", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.received request: %s", jd(ev));
    expect_data_(ev, text);
    EXPECT_TRUE(!jflag_(ev, "timeout"), "socket.received timeout flag: %s", jd(ev));
    json_decref(ev);
}
#define recv_text(...) (TC_AT(), recv_text_(__VA_ARGS__))

/* socket.shutdown; then socket.closed reason normal for that request. */
static void
shutdown_normal_(struct tc *t, long long s)
{
    long long id;
    json_decref(tc_ok_(t, &id, "socket.shutdown", "{s:I}", "socket", (json_int_t)s));
    json_t *ev = tc_event_(t, "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_STR(jstr_(ev, "reason"), "normal", "socket.closed after shutdown: %s", jd(ev));
    EXPECT_INT(jint_(ev, "request"), id, "socket.closed request: %s", jd(ev));
    json_decref(ev);
}
#define shutdown_normal(...) (TC_AT(), shutdown_normal_(__VA_ARGS__))

/* A tls listener on 127.0.0.1 (any port) with context c; *port gets its port. */
static long long
tls_listener_(struct tc *t, long long c, bool auto_accept, int *port)
{
    long long l = open_tls_(t, c);
    json_t *r = tc_ok_(t, NULL, "socket.bind", "{s:I, s:s, s:i}", "socket", (json_int_t)l,
                       "address", "127.0.0.1", "port", 0);
    *port = (int)jint_(jget_(r, "local"), "port");
    json_decref(r);
    json_decref(tc_ok_(t, NULL, "socket.listen", "{s:I, s:b}", "socket", (json_int_t)l,
                       "auto_accept", auto_accept));
    return l;
}
#define tls_listener(...) (TC_AT(), tls_listener_(__VA_ARGS__))

/* socket.incoming on listener l; returns the pending number. */
static long long
expect_incoming_(struct tc *t, long long l)
{
    json_t *ev = tc_event_(t, "socket.incoming", l, H_TIMEOUT_MS);
    long long p = jint_(ev, "pending");
    EXPECT_STR(jstr_(jget_(ev, "remote"), "address"), "127.0.0.1", "incoming remote: %s", jd(ev));
    json_decref(ev);
    return p;
}
#define expect_incoming(...) (TC_AT(), expect_incoming_(__VA_ARGS__))

/* socket.accept of pending p; returns the new handle, *id the request id. */
static long long
accept_(struct tc *t, long long l, long long p, long long *id)
{
    json_t *r = tc_ok_(t, id, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
                       (json_int_t)p);
    long long s = jint_(r, "socket");
    json_decref(r);
    return s;
}
#define accept_pending(...) (TC_AT(), accept_(__VA_ARGS__))

/* socket.accepted for s (its first notification): checks listener/request; returns tls. */
static json_t *
expect_accepted_(struct tc *t, long long s, long long l, long long id)
{
    json_t *ev = tc_next_is_(t, s, "socket.accepted", H_TIMEOUT_MS), *tls;
    EXPECT_INT(jint_(ev, "listener"), l, "socket.accepted listener: %s", jd(ev));
    if (id > 0)
        EXPECT_INT(jint_(ev, "request"), id, "socket.accepted request: %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "remote"), "address"), "127.0.0.1", "accepted remote: %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "local"), "address"), "127.0.0.1", "accepted local: %s", jd(ev));
    tls = jget_(ev, "tls");
    if (!json_is_object(tls))
        FAIL("socket.accepted tls is not an object: %s", jd(ev));
    json_incref(tls);
    json_decref(ev);
    return tls;
}
#define expect_accepted(...) (TC_AT(), expect_accepted_(__VA_ARGS__))

static json_t *
stats_(struct tc *t)
{
    return tc_ok_(t, NULL, "daemon.stats", NULL);
}

static long long
stat_tls(const json_t *st)
{
    return jint_(jget_(st, "sockets"), "tls");
}

/* Poll daemon.stats until sockets.tls == n (bounded); returns the last value. */
static long long
wait_stat_tls(struct tc *t, long long n)
{
    long long deadline = now_ms() + H_TIMEOUT_MS, v = -1;
    for (int guard = 0; guard < 10000; guard++) {
        json_t *st = stats_(t);
        v = stat_tls(st);
        json_decref(st);
        if (v == n || now_ms() > deadline)
            break;
        sleep_ms(20);
    }
    return v;
}

/* The daemon's fd count once it stops changing (two equal readings 100 ms apart; bounded). */
static int
steady_fds(pid_t pid)
{
    int a = h_count_fds(pid), b = a;
    for (int i = 0; i < 30; i++) {
        sleep_ms(100);
        b = h_count_fds(pid);
        if (a == b)
            break;
        a = b;
    }
    return b;
}

/* Wait until the daemon has no client but t and no socket (what earlier tests left is gone);
 * returns its steady fd count. */
static int
settle_(struct tc *t)
{
    long long deadline = now_ms() + H_TIMEOUT_MS, cl = -1, socks = -1;
    for (int guard = 0; guard < 10000; guard++) {
        json_t *st = stats_(t);
        cl = jint_(st, "clients");
        socks = jint_(jget_(st, "sockets"), "total");
        json_decref(st);
        if ((cl == 1 && socks == 0) || now_ms() > deadline)
            break;
        sleep_ms(20);
    }
    EXPECT_TRUE(cl == 1 && socks == 0, "the daemon still has %lld clients and %lld sockets", cl,
                socks);
    return steady_fds(g_d.pid);
}
#define settle(...) (TC_AT(), settle_(__VA_ARGS__))

/* A port on 127.0.0.1 with a listener that never accepts (tracked fd); the kernel completes TCP
 * connects, and whatever is sent waits unread. */
static int
silent_listener(int *port)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int fd = track_fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s", strerror(errno));
    EXPECT_INT(listen(fd, 8), 0, "listen: %s", strerror(errno));
    EXPECT_INT(getsockname(fd, (struct sockaddr *)&sa, &sl), 0, "getsockname: %s", strerror(errno));
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Wait up to ms for the connection to end, reading past what arrives first (TLS alerts or records):
 * 0 EOF, an errno for a reset, -1 timeout, -2 still data when the loop bound ran out. */
static int
raw_drain_closed(int fd, int ms)
{
    long long deadline = now_ms() + ms;
    char buf[4096];
    for (int guard = 0; guard < 100000; guard++) {
        struct pollfd pf = {fd, POLLIN, 0};
        long long left = deadline - now_ms();
        if (left <= 0)
            return -1;
        if (poll(&pf, 1, (int)left) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
            return 0;
        if (n < 0)
            return errno == EAGAIN ? -1 : errno;
        /* TLS alerts or records: not the end yet */
    }
    return -2;
}

/* A real ClientHello (bytes a TLS client sends first), made with memory BIOs. */
static size_t
client_hello(unsigned char *buf, size_t cap)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL *s = SSL_new(c);
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    int n;

    EXPECT_TRUE(s != NULL, "s");
    SSL_set_bio(s, r, w);
    SSL_set_tlsext_host_name(s, "test.local");
    EXPECT_TRUE(SSL_connect(s) <= 0, "SSL_connect(s) <= 0"); /* wants the ServerHello */
    n = BIO_read(w, buf, (int)cap);
    SSL_free(s);
    SSL_CTX_free(c);
    ERR_clear_error();
    EXPECT_TRUE(n > 100, "n > 100");
    EXPECT_INT(buf[0], 0x16, "buf[0]"); /* handshake record */
    return (size_t)n;
}

/* A failure found half-way that should not stop the rest of the test from running; reported by
 * check_deferred at the end of the test (g_deferred). */

static void
check_deferred_(void)
{
    if (g_deferred[0] != '\0') {
        char msg[sizeof g_deferred];
        snprintf(msg, sizeof msg, "%s", g_deferred);
        g_deferred[0] = '\0';
        FAIL("%s", msg);
    }
}
#define check_deferred() (TC_AT(), check_deferred_())

/*
 * socket.accept of pending p whose TLS handshake must fail: the accept answers the new handle and
 * socket.closed tls_handshake_failed follows for it (request = the accept). If the daemon answers
 * the accept with an error instead, that is recorded (check_deferred fails the test at its end),
 * a socket.closed for the handle it never returned is consumed, and the test goes on.
 */
static void
accept_hs_fail_(struct tc *t, long long l, long long p)
{
    long long id =
        tc_send(t, "socket.accept",
                json_pack("{s:I, s:I}", "socket", (json_int_t)l, "pending", (json_int_t)p));
    json_t *resp = tc_response(t, id, "socket.accept", H_TIMEOUT_MS);
    json_t *res = json_object_get(resp, "result");

    if (res != NULL) {
        long long s = jint_(res, "socket");
        json_decref(resp);
        expect_hs_failed_(t, s, id, NULL);
        return;
    }
    json_t *stray = tc_wait_msg(t, "socket.closed", 0, 500);
    if (g_deferred[0] == '\0')
        snprintf(g_deferred, sizeof g_deferred,
                 "DAEMON BUG: socket.accept of a pending TLS connection whose handshake fails "
                 "at once answered %s instead of {socket} followed by socket.closed "
                 "tls_handshake_failed; then came %s",
                 jd(resp), stray ? jd(stray) : "(no socket.closed)");
    json_decref(stray);
    json_decref(resp);
}
#define accept_hs_fail(...) (TC_AT(), accept_hs_fail_(__VA_ARGS__))

/* ------------------------------------------------------------------------ */
/* sockd as TLS client against openssl s_server                               */

/* Verified connect with the CA and server_name test.local; data both ways; shutdown. */
static void
test_connect_verified_sni(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct proc *sv = s_server("server", NULL, false);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id;
    long long s = tls_connect(t, c, sv->port, "test.local", &id);
    json_t *tls = expect_connected(t, s, id, sv->port), *i;

    check_tls(tls, "TLSv1.3", true, cert("server")->fp, "test.local", NULL);
    json_decref(tls);

    i = tc_info(t, s);
    EXPECT_STR(jstr(i, "type"), "tls", "socket.info type: %s", jd(i));
    EXPECT_STR(jstr(i, "state"), "connected", "socket.info state: %s", jd(i));
    tls = jget(i, "tls");
    check_tls(tls, "TLSv1.3", true, cert("server")->fp, "test.local", NULL);
    json_decref(i);

    /* s_server shows the SNI it got and prints what it receives */
    long long sid = send_str(t, s, "ping from sockd 1234\n");
    expect_sent(t, s, sid, strlen("ping from sockd 1234\n"));
    if (!proc_wait_for(sv, "ping from sockd 1234", H_TIMEOUT_MS)) {
        char *out = proc_output(sv);
        FAIL("s_server never printed the bytes sockd sent; its output: %.1500s", out);
    }
    /* what we type into s_server's stdin goes to sockd */
    proc_write(sv, "pong from s_server 5678\n");
    recv_text(t, s, "pong from s_server 5678\n");

    shutdown_normal(t, s);
    /* s_server saw the close_notify: it reports the connection closed */
    if (!proc_wait_for(sv, "DONE", H_TIMEOUT_MS)) {
        char *out = proc_output(sv);
        FAIL("s_server did not end the connection after our shutdown: %.1500s", out);
    }
}

/* Connect by IP with no server_name: verified against the IP SAN; a certificate without the IP
 * SAN is refused the same way. */
static void
test_connect_ip_san(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct proc *sv = s_server("server", NULL, false);
    struct proc *sv2 = s_server("dnsonly", NULL, false);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id;
    long long s = tls_connect(t, c, sv->port, NULL, &id);
    json_t *tls = expect_connected(t, s, id, sv->port);

    /* an IP literal is never sent as SNI (RFC 6066 3), so none is reported */
    check_tls(tls, NULL, true, cert("server")->fp, NULL, NULL);
    json_decref(tls);
    proc_write(sv, "over ip\n");
    recv_text(t, s, "over ip\n");
    shutdown_normal(t, s);

    /* same CA, DNS:test.local only: the IP check fails */
    s = tls_connect(t, c, sv2->port, NULL, &id);
    expect_hs_failed(t, s, id, "ip address|mismatch");
}

static void
test_reject_wrong_name(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct proc *sv = s_server("server", NULL, false);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id;
    long long s = tls_connect(t, c, sv->port, "wrong.example", &id);
    expect_hs_failed(t, s, id, "hostname|mismatch");
    tc_no_event(t, s, 200);
}

static void
test_reject_untrusted_ca(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct proc *sv = s_server("server", NULL, false);
    long long c = ctx_new(t, "{s:s}", "ca", cert("other")->pem), id;
    long long s = tls_connect(t, c, sv->port, "test.local", &id);
    expect_hs_failed(t, s, id, "issuer|certificate verify|unable to get");
}

static void
test_reject_expired(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct proc *sv = s_server("expired", NULL, false);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id;
    long long s = tls_connect(t, c, sv->port, "test.local", &id);
    expect_hs_failed(t, s, id, "expired");
}

/*
 * A server that speaks only TLS 1.0 is refused (the context's minimum is TLS 1.2). The server is
 * first shown to work with an in-process TLS 1.0 client, so the refusal is about the version. If
 * the local OpenSSL cannot run a TLS 1.0 server, a TLS 1.1-only server is used instead (said on
 * stderr).
 */
static void
test_reject_old_protocol(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    static const struct {
        const char *flags, *name;
        int version;
    } tries[] = {
        {"-naccept 2 -tls1 -cipher DEFAULT@SECLEVEL=0", "TLSv1", TLS1_VERSION},
        {"-naccept 2 -tls1_1 -cipher DEFAULT@SECLEVEL=0", "TLSv1.1", TLS1_1_VERSION},
    };
    struct proc *sv = NULL;
    size_t k;

    for (k = 0; k < sizeof tries / sizeof tries[0] && sv == NULL; k++) {
        struct proc *p = s_server("server", tries[k].flags, true);
        if (p == NULL)
            continue;
        /* probe: an old-protocol client of ours must get through */
        SSL_CTX *pc = peer_client_ctx(false, NULL, NULL);
        SSL_CTX_set_min_proto_version(pc, tries[k].version);
        SSL_CTX_set_max_proto_version(pc, tries[k].version);
        SSL_CTX_set_security_level(pc, 0);
        SSL_CTX_set_cipher_list(pc, "DEFAULT@SECLEVEL=0");
        struct tp *probe = tp_new(0, p->port, pc, NULL);
        tp_add(probe, OP_HS, NULL, 0);
        tp_add(probe, OP_NOTIFY, NULL, 0);
        tp_start(probe);
        tp_join(probe);
        if (!probe->failed && strcmp(probe->version, tries[k].name) == 0) {
            sv = p;
            break;
        }
        fprintf(stderr, "  (note) s_server %s cannot speak %s here: %s\n", tries[k].flags,
                tries[k].name, probe->failed ? probe->err : probe->version);
        proc_stop(p);
    }
    if (sv == NULL)
        FAIL("neither a TLS 1.0 nor a TLS 1.1 server can run with this OpenSSL");
    if (k > 0)
        fprintf(stderr,
                "  (note) testing the refusal of a TLS 1.1-only server instead of TLS 1.0\n");

    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id;
    long long s = tls_connect(t, c, sv->port, "test.local", &id);
    expect_hs_failed(t, s, id, "version|protocol");
}

/* verify:false gets through to the server of the other CA and reports verified:false. */
static void
test_verify_false(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct proc *sv = s_server("othersrv", NULL, false);
    struct proc *sv2 = s_server("othersrv", NULL, false);
    long long c = ctx_new(t, "{s:b}", "verify", 0), id;
    long long s = tls_connect(t, c, sv->port, "test.local", &id);
    json_t *tls = expect_connected(t, s, id, sv->port);

    check_tls(tls, NULL, false, cert("othersrv")->fp, "test.local", NULL);
    json_decref(tls);
    proc_write(sv, "unverified but fine\n");
    recv_text(t, s, "unverified but fine\n");
    shutdown_normal(t, s);

    /* the same server with verification on (trusting our CA) is refused */
    long long c2 = ctx_new(t, "{s:s}", "ca", cert("ca")->pem);
    s = tls_connect(t, c2, sv2->port, "test.local", &id);
    expect_hs_failed(t, s, id, NULL);
}

/*
 * Contexts without a ca use the system store: the default CA file and hashed CA directory, with
 * SSL_CERT_FILE and SSL_CERT_DIR honoured. Each daemon here trusts our test CA only through one
 * of the two; with neither, the same server is refused.
 */
static void
test_system_store(void **state)
{
    (void)state;
    char cmd[256], hash[32] = "", dir[200], link[260], file[200];
    FILE *p;
    snprintf(cmd, sizeof cmd, "openssl x509 -noout -hash -in %s/ca.pem", tdir);
    p = popen(cmd, "r");
    EXPECT_TRUE(p != NULL, "p");
    if (fgets(hash, sizeof hash, p) == NULL)
        hash[0] = '\0';
    pclose(p);
    hash[strcspn(hash, "\n")] = '\0';
    EXPECT_TRUE(strlen(hash) == 8, "strlen(hash) == 8");
    snprintf(dir, sizeof dir, "%s/sysdir", tdir);
    snprintf(link, sizeof link, "%s/%s.0", dir, hash);
    snprintf(file, sizeof file, "%s/ca.pem", tdir);
    if (mkdir(dir, 0700) < 0)
        EXPECT_INT(errno, EEXIST, "errno");
    (void)unlink(link);
    EXPECT_INT(symlink(file, link), 0, "symlink: %s", strerror(errno));

    static const struct {
        int use_dir, use_file, trusted;
    } cases[] = {{1, 0, 1}, {0, 1, 1}, {0, 0, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("SSL_CERT_DIR", cases[i].use_dir ? dir : "/nonexistent-sockd-test", 1);
        setenv("SSL_CERT_FILE", cases[i].use_file ? file : "/nonexistent-sockd-test", 1);
        struct h_daemon *d = daemon_new(NULL);
        unsetenv("SSL_CERT_DIR");
        unsetenv("SSL_CERT_FILE");
        struct tc *t = tc_new(d);
        struct proc *sv = s_server("server", NULL, false);
        long long c = ctx_new(t, NULL), id;
        long long s = tls_connect(t, c, sv->port, "test.local", &id);
        if (cases[i].trusted) {
            json_t *tls = expect_connected(t, s, id, sv->port);
            check_tls(tls, NULL, true, cert("server")->fp, "test.local", NULL);
            json_decref(tls);
        } else {
            expect_hs_failed(t, s, id, "issuer|certificate verify|unable to get");
        }
    }
    unlink(link);
    rmdir(dir);
}

/* An empty server_name is refused (-32602 naming it) and leaves the socket usable. */
static void
test_empty_server_name(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct proc *sv = s_server("server", NULL, false);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id;
    long long s = open_tls(t, c);
    json_t *err = NULL;

    EXPECT_INT(tc_err(t, &err, "socket.connect", "{s:I, s:s, s:i, s:s}", "socket", (json_int_t)s,
                      "address", "127.0.0.1", "port", sv->port, "server_name", ""),
               SOCKD_E_INVALID_PARAMS, "connect with server_name \"\": %s", jd(err));
    EXPECT_STR(jstr(jget(err, "data"), "param"), "server_name", "error data: %s", jd(err));
    json_decref(err);
    expect_state(t, s, "open");
    tc_no_event(t, s, 200);

    /* the same socket connects fine afterwards */
    json_decref(tc_ok(t, &id, "socket.connect", "{s:I, s:s, s:i, s:s}", "socket", (json_int_t)s,
                      "address", "127.0.0.1", "port", sv->port, "server_name", "test.local"));
    json_t *tls = expect_connected(t, s, id, sv->port);
    check_tls(tls, NULL, true, cert("server")->fp, "test.local", NULL);
    json_decref(tls);
}

/* ALPN offered by sockd: s_server picks http/1.1; without -alpn none is reported. */
static void
test_alpn_client(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct proc *sv = s_server("server", "-alpn http/1.1", false);
    struct proc *sv2 = s_server("server", NULL, false);
    long long c = ctx_new(t, "{s:s, s:[s,s]}", "ca", cert("ca")->pem, "alpn", "h2", "http/1.1"), id;
    long long s = tls_connect(t, c, sv->port, "test.local", &id);
    json_t *tls = expect_connected(t, s, id, sv->port);
    check_tls(tls, NULL, true, cert("server")->fp, "test.local", "http/1.1");
    json_decref(tls);
    shutdown_normal(t, s);

    s = tls_connect(t, c, sv2->port, "test.local", &id);
    tls = expect_connected(t, s, id, sv2->port);
    check_tls(tls, NULL, true, cert("server")->fp, "test.local", NULL);
    json_decref(tls);
}

/*
 * sockd as server with set_alpn ["h2"]: a client offering only http/1.1 fails the handshake
 * (explicit accept: socket.closed tls_handshake_failed, no socket.accepted; auto_accept: nothing
 * is announced); the listener keeps working for the next client, which gets h2.
 */
static void
test_alpn_server_mismatch(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL), id;
    ctx_server_cert(t, c, "server");
    json_decref(tc_ok(t, NULL, "context.set_alpn", "{s:I, s:[s]}", "context", (json_int_t)c,
                      "protocols", "h2"));
    int port, aport;
    long long l = tls_listener(t, c, false, &port);
    long long la = tls_listener(t, c, true, &aport);
    SSL_CTX *http11 = peer_client_ctx(true, NULL, "\x08http/1.1");
    SSL_CTX *h2 = peer_client_ctx(true, NULL, "\x02h2\x08http/1.1");

    /* explicit accept */
    struct tp *bad = tp_new(0, port, http11, "test.local");
    tp_add(bad, OP_HS, NULL, 0);
    tp_start(bad);
    long long p = expect_incoming(t, l);
    sleep_ms(200); /* the ClientHello is there when the accept comes: the handshake fails at once */
    accept_hs_fail(t, l, p);
    tp_join(bad);
    EXPECT_TRUE(bad->failed, "a client offering only http/1.1 completed the handshake (alpn %s)",
                bad->alpn);

    struct tp *good = tp_new(0, port, h2, "test.local");
    tp_add(good, OP_HS, NULL, 0);
    tp_text(good, OP_RECV, "h2 chosen\n");
    tp_add(good, OP_DRAIN, NULL, 0);
    tp_start(good);
    p = expect_incoming(t, l);
    long long s = accept_pending(t, l, p, &id);
    json_t *tls = expect_accepted(t, s, l, id);
    check_tls(tls, NULL, false, NULL, "test.local", "h2");
    json_decref(tls);
    long long sid = send_str(t, s, "h2 chosen\n");
    expect_sent(t, s, sid, strlen("h2 chosen\n"));
    shutdown_normal(t, s);
    tp_expect_ok(good);
    EXPECT_STR(good->alpn, "h2", "ALPN the client saw");
    EXPECT_INT(good->end, END_NOTIFY, "how the client's stream ended");

    /* auto_accept: the failed handshake is never announced */
    bad = tp_new(0, aport, http11, "test.local");
    tp_add(bad, OP_HS, NULL, 0);
    tp_start(bad);
    tp_join(bad);
    EXPECT_TRUE(bad->failed, "auto_accept: an http/1.1-only client completed the handshake");
    json_t *m = tc_wait_msg(t, NULL, 0, 300);
    if (m != NULL) {
        /* nothing should come; if anything does, it must not be an accepted socket */
        EXPECT_TRUE(!note_matches(m, "socket.accepted", 0),
                    "auto_accept announced a socket whose handshake failed: %s", jd(m));
        EXPECT_TRUE(note_matches(m, "socket.closed", 0) &&
                        !strcmp(jstr(jget(m, "params"), "reason"), "tls_handshake_failed"),
                    "unexpected notification after a failed auto-accepted handshake: %s", jd(m));
        json_decref(m);
    }
    good = tp_new(0, aport, h2, "test.local");
    tp_add(good, OP_HS, NULL, 0);
    tp_text(good, OP_SEND, "after a failure\n");
    tp_add(good, OP_DRAIN, NULL, 0);
    tp_start(good);
    json_t *ev = tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "listener"), la, "socket.accepted listener: %s", jd(ev));
    s = jint(ev, "socket");
    check_tls(jget(ev, "tls"), NULL, false, NULL, "test.local", "h2");
    json_decref(ev);
    recv_text(t, s, "after a failure\n");
    shutdown_normal(t, s);
    tp_expect_ok(good);
    check_deferred();
}

/* ------------------------------------------------------------------------ */
/* sockd as TLS server                                                       */

/* listen + accept with openssl s_client; data both ways; shutdown reaches the client. */
static void
test_server_s_client(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL), id;
    int port;
    char cmd[600];

    ctx_server_cert(t, c, "server");
    long long l = tls_listener(t, c, false, &port);
    snprintf(cmd, sizeof cmd,
             "exec openssl s_client -connect 127.0.0.1:%d -servername test.local -CAfile %s "
             "-verify_return_error -verify_hostname test.local -nocommands",
             port, cert_path("ca", "pem"));
    struct proc *cl = proc_start(cmd, false, false);

    long long p = expect_incoming(t, l);
    long long s = accept_pending(t, l, p, &id);
    json_t *tls = expect_accepted(t, s, l, id);
    check_tls(tls, "TLSv1.3", false, NULL, "test.local", NULL);
    json_decref(tls);
    if (!proc_wait_for(cl, "Verify return code: 0 (ok)", H_TIMEOUT_MS)) {
        char *out = proc_output(cl);
        FAIL("s_client did not verify sockd's certificate: %.2000s", out);
    }

    long long sid = send_str(t, s, "hello from sockd 4321\n");
    expect_sent(t, s, sid, strlen("hello from sockd 4321\n"));
    if (!proc_wait_for(cl, "hello from sockd 4321", H_TIMEOUT_MS)) {
        char *out = proc_output(cl);
        FAIL("s_client never printed what sockd sent: %.2000s", out);
    }
    proc_write(cl, "hello from s_client 8765\n");
    recv_text(t, s, "hello from s_client 8765\n");

    json_t *i = tc_info(t, s);
    EXPECT_STR(jstr(i, "type"), "tls", "accepted socket type: %s", jd(i));
    EXPECT_INT(jint(i, "listener"), l, "accepted socket listener: %s", jd(i));
    check_tls(jget(i, "tls"), "TLSv1.3", false, NULL, "test.local", NULL);
    json_decref(i);

    shutdown_normal(t, s);
    /* s_client ends when the server closes the TLS session */
    long long deadline = now_ms() + H_TIMEOUT_MS;
    while (!proc_reap(cl) && now_ms() < deadline)
        sleep_ms(20);
    if (cl->pid != 0) {
        char *out = proc_output(cl);
        FAIL("s_client still runs after sockd's shutdown: %.2000s", out);
    }
    expect_state(t, l, "listening");
}

/*
 * verify_client "require": a client without a certificate fails (tls_handshake_failed on the
 * accepted socket, no socket.accepted) and the listener survives; a client with one is accepted
 * with verified:true and its certificate's fingerprint.
 */
static void
test_verify_client_require(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, "{s:s, s:s}", "verify_client", "require", "ca", cert("ca")->pem), id;
    int port;

    ctx_server_cert(t, c, "server");
    long long l = tls_listener(t, c, false, &port);

    struct tp *anon = tp_new(0, port, peer_client_ctx(true, NULL, NULL), "test.local");
    tp_add(anon, OP_HS, NULL, 0);
    tp_add(anon, OP_RECV, NULL, 1); /* TLS 1.3: the server's refusal arrives after our Finished */
    tp_start(anon);
    long long p = expect_incoming(t, l);
    accept_hs_fail(t, l, p);
    tp_join(anon);
    EXPECT_TRUE(anon->failed, "a client without a certificate got data from a require listener");

    struct tp *ok = tp_new(0, port, peer_client_ctx(true, "client", NULL), "test.local");
    tp_add(ok, OP_HS, NULL, 0);
    tp_text(ok, OP_SEND, "client with a certificate\n");
    tp_text(ok, OP_RECV, "welcome, certified client\n");
    tp_add(ok, OP_DRAIN, NULL, 0);
    tp_start(ok);
    p = expect_incoming(t, l);
    long long s = accept_pending(t, l, p, &id);
    json_t *tls = expect_accepted(t, s, l, id);
    check_tls(tls, NULL, true, cert("client")->fp, "test.local", NULL);
    json_decref(tls);
    recv_text(t, s, "client with a certificate\n");
    send_str(t, s, "welcome, certified client\n");
    shutdown_normal(t, s);
    tp_expect_ok(ok);
    EXPECT_TRUE(ok->verified, "the client verified sockd's certificate");
    EXPECT_STR(ok->peer_fp, cert("server")->fp, "the server certificate the client saw");
    EXPECT_INT(ok->end, END_NOTIFY, "the client's stream ended with close_notify");
    expect_state(t, l, "listening");
    check_deferred();
}

/* verify_client "optional": no certificate -> accepted, verified:false, no fingerprint; a
 * certificate -> verified:true; one from the other CA -> refused. */
static void
test_verify_client_optional(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, "{s:s, s:s}", "verify_client", "optional", "ca", cert("ca")->pem), id;
    int port;

    ctx_server_cert(t, c, "server");
    long long l = tls_listener(t, c, false, &port);
    const char *who[] = {NULL, "client", "othersrv"};
    for (int k = 0; k < 3; k++) {
        struct tp *cl = tp_new(0, port, peer_client_ctx(true, who[k], NULL), "test.local");
        tp_add(cl, OP_HS, NULL, 0);
        tp_text(cl, OP_RECV, "hi\n");
        tp_add(cl, OP_DRAIN, NULL, 0);
        tp_start(cl);
        long long p = expect_incoming(t, l);
        if (k == 2) {
            accept_hs_fail(t, l, p);
            tp_join(cl);
            EXPECT_TRUE(cl->failed, "a client certificate from another CA was accepted");
            break;
        }
        long long s = accept_pending(t, l, p, &id);
        json_t *tls = expect_accepted(t, s, l, id);
        check_tls(tls, NULL, k == 1, k == 1 ? cert("client")->fp : NULL, "test.local", NULL);
        json_decref(tls);
        send_str(t, s, "hi\n");
        shutdown_normal(t, s);
        tp_expect_ok(cl);
    }
    expect_state(t, l, "listening");
    check_deferred();
}

/* ------------------------------------------------------------------------ */
/* STARTTLS                                                                  */

/* sockd client: plaintext "OK" from an in-process server, then starttls on the same handle. */
static void
test_starttls_client(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id;
    struct tp *sv = tp_new(1, 0, peer_server_ctx("server"), NULL);
    json_t *err = NULL;

    tp_text(sv, OP_PSEND, "OK\r\n");
    tp_add(sv, OP_HS, NULL, 0);
    tp_text(sv, OP_RECV, "hello over tls\n");
    tp_text(sv, OP_SEND, "reply over tls\n");
    tp_add(sv, OP_DRAIN, NULL, 0);
    tp_start(sv);

    json_t *r = tc_ok(t, NULL, "socket.open", "{s:s}", "type", "tcp");
    long long s = jint(r, "socket");
    json_decref(r);
    json_decref(tc_ok(t, &id, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s,
                      "address", "127.0.0.1", "port", sv->port));
    json_t *ev = tc_next_is(t, s, "socket.connected", H_TIMEOUT_MS);
    EXPECT_TRUE(json_object_get(ev, "tls") == NULL, "plain socket.connected has tls: %s", jd(ev));
    json_decref(ev);
    recv_text(t, s, "OK\r\n");

    EXPECT_INT(tc_err(t, &err, "socket.starttls", "{s:I, s:I, s:s}", "socket", (json_int_t)s,
                      "context", (json_int_t)c, "server_name", ""),
               SOCKD_E_INVALID_PARAMS, "starttls with server_name \"\": %s", jd(err));
    json_decref(err);
    err = NULL;
    EXPECT_INT(tc_err(t, &err, "socket.starttls", "{s:I, s:I, s:s}", "socket", (json_int_t)s,
                      "context", (json_int_t)999999, "server_name", "test.local"),
               SOCKD_E_UNKNOWN_HANDLE, "starttls with an unknown context: %s", jd(err));
    json_decref(err);

    json_t *res = tc_ok(t, &id, "socket.starttls", "{s:I, s:I, s:s}", "socket", (json_int_t)s,
                        "context", (json_int_t)c, "server_name", "test.local");
    json_decref(res);
    ev = tc_next_is(t, s, "socket.tls_upgraded", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "socket"), s, "tls_upgraded keeps the handle: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), id, "tls_upgraded request: %s", jd(ev));
    check_tls(jget(ev, "tls"), "TLSv1.3", true, cert("server")->fp, "test.local", NULL);
    json_decref(ev);

    json_t *i = tc_info(t, s);
    EXPECT_STR(jstr(i, "state"), "connected", "state after upgrade: %s", jd(i));
    check_tls(jget(i, "tls"), "TLSv1.3", true, cert("server")->fp, "test.local", NULL);
    json_decref(i);

    /* the server reads these through SSL_read: they were encrypted */
    send_str(t, s, "hello over tls\n");
    recv_text(t, s, "reply over tls\n");
    err = NULL;
    EXPECT_INT(tc_err(t, &err, "socket.starttls", "{s:I, s:I, s:s}", "socket", (json_int_t)s,
                      "context", (json_int_t)c, "server_name", "test.local"),
               SOCKD_E_WRONG_STATE, "a second starttls: %s", jd(err));
    json_decref(err);
    shutdown_normal(t, s);
    tp_expect_ok(sv);
    EXPECT_INT(sv->end, END_NOTIFY, "the server's stream ended with close_notify");
}

/*
 * sockd server side: a plaintext greeting (1 MiB, so part of it is still queued) and starttls
 * server_side in one batch; the in-process client reads the whole greeting in plaintext and only
 * then starts TLS. The greeting arriving whole and unencrypted proves queued plaintext goes out
 * before the handshake.
 */
/* A send issued right after socket.starttls, before the handshake ends, goes out encrypted. */
static void
test_starttls_send_during_upgrade(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), ids[2];
    struct tp *sv = tp_new(1, 0, peer_server_ctx("server"), NULL);

    tp_text(sv, OP_PSEND, "OK\r\n");
    tp_add(sv, OP_HS, NULL, 0);
    tp_text(sv, OP_RECV, "sent before the handshake ended\n"); /* through SSL_read */
    tp_add(sv, OP_DRAIN, NULL, 0);
    tp_start(sv);

    json_t *r = tc_ok(t, NULL, "socket.open", "{s:s}", "type", "tcp");
    long long s = jint(r, "socket");
    json_decref(r);
    json_decref(tc_ok(t, NULL, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s,
                      "address", "127.0.0.1", "port", sv->port));
    json_decref(tc_next_is(t, s, "socket.connected", H_TIMEOUT_MS));
    recv_text(t, s, "OK\r\n");

    const char *methods[2] = {"socket.starttls", "socket.send"};
    json_t *params[2] = {
        json_pack("{s:I, s:I, s:s}", "socket", (json_int_t)s, "context", (json_int_t)c,
                  "server_name", "test.local"),
        json_pack("{s:I, s:s}", "socket", (json_int_t)s, "text",
                  "sent before the handshake ended\n"),
    };
    json_t *resp = tc_batch(t, 2, methods, params, ids);
    EXPECT_TRUE(json_object_get(json_array_get(resp, 0), "result") &&
                    json_object_get(json_array_get(resp, 1), "result"),
                "batch starttls + send answered %s", jd(resp));
    json_decref(resp);
    json_t *ev = tc_next_is(t, s, "socket.tls_upgraded", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "request"), ids[0], "tls_upgraded request: %s", jd(ev));
    json_decref(ev);
    ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "request"), ids[1], "socket.sent request: %s", jd(ev));
    json_decref(ev);
    shutdown_normal(t, s);
    tp_expect_ok(sv); /* a plaintext byte in the handshake would have failed it */
}

static void
test_starttls_server_side(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL), id, ids[2];
    const size_t glen = 1 * MIB;
    unsigned char *greeting = random_bytes(glen);
    int port;

    ctx_server_cert(t, c, "server");
    json_t *r = tc_ok(t, NULL, "socket.open", "{s:s}", "type", "tcp");
    long long l = jint(r, "socket");
    json_decref(r);
    r = tc_ok(t, NULL, "socket.bind", "{s:I, s:s, s:i}", "socket", (json_int_t)l, "address",
              "127.0.0.1", "port", 0);
    port = (int)jint(jget(r, "local"), "port");
    json_decref(r);
    json_decref(tc_ok(t, NULL, "socket.listen", "{s:I}", "socket", (json_int_t)l));

    struct tp *cl = tp_new(0, port, peer_client_ctx(true, NULL, NULL), "test.local");
    tp_add(cl, OP_PRECV, greeting, glen);
    tp_add(cl, OP_HS, NULL, 0);
    tp_text(cl, OP_SEND, "client over tls\n");
    tp_text(cl, OP_RECV, "server over tls\n");
    tp_add(cl, OP_DRAIN, NULL, 0);
    tp_start(cl);

    long long p = expect_incoming(t, l);
    r = tc_ok(t, &id, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
              (json_int_t)p);
    long long s = jint(r, "socket");
    json_decref(r);
    json_t *ev = tc_next_is(t, s, "socket.accepted", H_TIMEOUT_MS);
    EXPECT_TRUE(json_object_get(ev, "tls") == NULL, "plain socket.accepted has tls: %s", jd(ev));
    json_decref(ev);

    char *enc = b64(greeting, glen);
    const char *methods[2] = {"socket.send", "socket.starttls"};
    json_t *params[2] = {
        json_pack("{s:I, s:s}", "socket", (json_int_t)s, "data", enc),
        json_pack("{s:I, s:I, s:b}", "socket", (json_int_t)s, "context", (json_int_t)c,
                  "server_side", 1),
    };
    free(enc);
    json_t *resp = tc_batch(t, 2, methods, params, ids);
    json_t *r0 = json_object_get(json_array_get(resp, 0), "result");
    json_t *r1 = json_object_get(json_array_get(resp, 1), "result");
    EXPECT_TRUE(r0 && r1, "batch send + starttls answered %s", jd(resp));
    EXPECT_INT(jint(r0, "queued"), glen, "greeting queued: %s", jd(resp));
    json_decref(resp);

    ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "bytes"), glen, "socket.sent of the greeting: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), ids[0], "socket.sent request: %s", jd(ev));
    json_decref(ev);
    ev = tc_next_is(t, s, "socket.tls_upgraded", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "request"), ids[1], "tls_upgraded request: %s", jd(ev));
    check_tls(jget(ev, "tls"), "TLSv1.3", false, NULL, "test.local", NULL);
    json_decref(ev);

    recv_text(t, s, "client over tls\n");
    send_str(t, s, "server over tls\n");
    shutdown_normal(t, s);
    tp_expect_ok(cl);
    EXPECT_TRUE(cl->verified, "the client verified sockd's certificate after STARTTLS");
    EXPECT_INT(cl->end, END_NOTIFY, "the client's stream ended with close_notify");
    free(greeting);
}

/* ------------------------------------------------------------------------ */
/* bulk data                                                                 */

/* 4 MiB of random bytes through TLS to an in-process echo server: SHA-256 equal both ways. */
static void
test_bulk_4mib(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    const size_t total = 4 * MIB, chunk = 64 * KIB;
    unsigned char *data = random_bytes(total), *back = malloc(total);
    unsigned char h1[32], h2[32];
    size_t have = 0;
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id, rid;
    struct tp *echo = tp_new(1, 0, peer_server_ctx("server"), NULL);
    int events = 0;

    EXPECT_TRUE(back != NULL, "back");
    tp_add(echo, OP_HS, NULL, 0);
    tp_add(echo, OP_ECHO, NULL, 0);
    tp_start(echo);
    long long s = tls_connect(t, c, echo->port, "test.local", &id);
    json_decref(expect_connected(t, s, id, echo->port));
    json_decref(tc_ok(t, &rid, "socket.recv", "{s:I, s:I, s:b, s:b}", "socket", (json_int_t)s,
                      "length", (json_int_t)chunk, "stream", 1, "partial", 1));

    for (size_t off = 0; off < total || have < total;) {
        if (off < total) {
            send_bytes(t, s, data + off, chunk, 0);
            off += chunk;
        }
        /* take what came back (without waiting while there is more to send) */
        for (int guard = 0; guard < 100000; guard++) {
            json_t *m = tc_wait_msg(t, "socket.received", s, off < total ? 0 : H_TIMEOUT_MS);
            if (m == NULL) {
                if (off >= total)
                    FAIL("echo stalled: %zu of %zu bytes back after %d events", have, total,
                         events);
                break;
            }
            json_t *ev = json_object_get(m, "params");
            size_t n;
            unsigned char *d = unb64_(jstr(ev, "data"), &n);
            EXPECT_INT(jint(ev, "request"), rid, "stream chunk request: %s", jd(ev));
            EXPECT_TRUE(n > 0 && n <= chunk, "stream chunk of %zu bytes", n);
            EXPECT_TRUE(have + n <= total, "more bytes back (%zu) than sent", have + n);
            EXPECT_TRUE(!jflag(ev, "eof"), "eof in the middle of the echo: %s", jd(ev));
            memcpy(back + have, d, n);
            have += n;
            events++;
            free(d);
            json_decref(m);
            if (have >= total)
                break;
        }
    }
    sha256(data, total, h1);
    sha256(back, total, h2);
    EXPECT_TRUE(memcmp(h1, h2, 32) == 0, "SHA-256 of the 4 MiB echoed differs from what was sent");
    json_t *r = tc_ok(t, NULL, "socket.recv_cancel", "{s:I}", "socket", (json_int_t)s);
    EXPECT_TRUE(json_is_true(jget(r, "canceled")), "recv_cancel of the stream: %s", jd(r));
    json_decref(r);
    json_t *i = tc_info(t, s);
    EXPECT_INT(jint(i, "bytes_sent"), total, "bytes_sent: %s", jd(i));
    EXPECT_INT(jint(i, "bytes_received"), total, "bytes_received: %s", jd(i));
    json_decref(i);
    shutdown_normal(t, s);
    tp_expect_ok(echo);
    EXPECT_INT(echo->got_len, total, "bytes the echo server got");
    sha256(echo->got, echo->got_len, h2);
    EXPECT_TRUE(memcmp(h1, h2, 32) == 0, "SHA-256 of what the echo server got differs");
    EXPECT_INT(echo->end, END_NOTIFY, "the echo server's stream ended with close_notify");
    free(data);
    free(back);
}

/* ------------------------------------------------------------------------ */
/* contexts                                                                  */

static void
expect_fp_form(const char *fp)
{
    size_t n = strlen(fp);
    EXPECT_TRUE(strncmp(fp, "sha-256 ", 8) == 0 && n == 8 + 32 * 3 - 1,
                "fingerprint \"%s\" is not in \"sha-256 AB:CD:...\" form", fp);
    for (size_t i = 8; i < n; i++) {
        bool colon = (i - 8) % 3 == 2;
        char ch = fp[i];
        EXPECT_TRUE(colon ? ch == ':' : ((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F')),
                    "fingerprint \"%s\": bad character at %zu", fp, i);
    }
}

/* context.fingerprint equals `openssl x509 -fingerprint` (sha-256, sha-1, sha-512). */
static void
test_context_fingerprint(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL);
    json_t *r, *err = NULL;

    EXPECT_INT(tc_err(t, &err, "context.fingerprint", "{s:I}", "context", (json_int_t)c),
               SOCKD_E_WRONG_STATE, "fingerprint of a context with no certificate: %s", jd(err));
    json_decref(err);

    ctx_server_cert(t, c, "server");
    expect_fp_form(cert("server")->fp);
    r = tc_ok(t, NULL, "context.fingerprint", "{s:I}", "context", (json_int_t)c);
    EXPECT_STR(jstr(r, "fingerprint"), cert("server")->fp, "context.fingerprint (default)");
    json_decref(r);
    r = tc_ok(t, NULL, "context.fingerprint", "{s:I, s:s, s:s}", "context", (json_int_t)c, "role",
              "server", "algorithm", "sha-256");
    EXPECT_STR(jstr(r, "fingerprint"), cert("server")->fp, "context.fingerprint sha-256");
    json_decref(r);
    r = tc_ok(t, NULL, "context.fingerprint", "{s:I, s:s}", "context", (json_int_t)c, "algorithm",
              "sha-1");
    EXPECT_STR(jstr(r, "fingerprint"), cert("server")->fp_sha1, "context.fingerprint sha-1");
    json_decref(r);
    r = tc_ok(t, NULL, "context.fingerprint", "{s:I, s:s}", "context", (json_int_t)c, "algorithm",
              "sha-512");
    EXPECT_STR(jstr(r, "fingerprint"), cert("server")->fp_sha512, "context.fingerprint sha-512");
    json_decref(r);

    /* the client role has its own certificate */
    err = NULL;
    EXPECT_INT(tc_err(t, &err, "context.fingerprint", "{s:I, s:s}", "context", (json_int_t)c,
                      "role", "client"),
               SOCKD_E_WRONG_STATE, "client fingerprint before a client certificate: %s", jd(err));
    json_decref(err);
    r = tc_ok(t, NULL, "context.set_client_certificate", "{s:I, s:s, s:s}", "context",
              (json_int_t)c, "cert", cert("client")->pem, "key", cert("client")->key);
    EXPECT_STR(jstr(r, "fingerprint"), cert("client")->fp, "set_client_certificate fingerprint");
    json_decref(r);
    r = tc_ok(t, NULL, "context.fingerprint", "{s:I, s:s}", "context", (json_int_t)c, "role",
              "client");
    EXPECT_STR(jstr(r, "fingerprint"), cert("client")->fp, "context.fingerprint role client");
    json_decref(r);

    /* the key may come inside the cert PEM; a key of another certificate is refused */
    char *both = malloc(strlen(cert("othersrv")->pem) + strlen(cert("othersrv")->key) + 1);
    EXPECT_TRUE(both != NULL, "both");
    strcpy(both, cert("othersrv")->pem);
    strcat(both, cert("othersrv")->key);
    r = tc_ok(t, NULL, "context.set_server_certificate", "{s:I, s:s}", "context", (json_int_t)c,
              "cert", both);
    EXPECT_STR(jstr(r, "fingerprint"), cert("othersrv")->fp, "cert+key in one PEM");
    json_decref(r);
    free(both);
    err = NULL;
    EXPECT_INT(tc_err(t, &err, "context.set_server_certificate", "{s:I, s:s, s:s}", "context",
                      (json_int_t)c, "cert", cert("server")->pem, "key", cert("client")->key),
               SOCKD_E_INVALID_PARAMS, "a key that does not match: %s", jd(err));
    json_decref(err);
    r = tc_ok(t, NULL, "context.fingerprint", "{s:I}", "context", (json_int_t)c);
    EXPECT_STR(jstr(r, "fingerprint"), cert("othersrv")->fp,
               "the refused certificate must not replace the current one");
    json_decref(r);
}

/*
 * generate_certificate: a fingerprint in RFC 8122 form, equal to context.fingerprint; a sockd
 * listener using it is reachable by a client with verification off that sees that very
 * certificate; a new certificate applies to the next handshake.
 */
static void
test_generated_certificate(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL), id;
    char f1[FP_MAX], f2[FP_MAX];
    int port;
    json_t *r;

    r = tc_ok(t, NULL, "context.generate_certificate", "{s:I, s:s, s:s}", "context", (json_int_t)c,
              "role", "server", "common_name", "sockd-generated");
    snprintf(f1, sizeof f1, "%s", jstr(r, "fingerprint"));
    json_decref(r);
    expect_fp_form(f1);
    r = tc_ok(t, NULL, "context.fingerprint", "{s:I}", "context", (json_int_t)c);
    EXPECT_STR(jstr(r, "fingerprint"), f1, "context.fingerprint after generate_certificate");
    json_decref(r);

    long long l = tls_listener(t, c, false, &port);
    SSL_CTX *noverify = peer_client_ctx(false, NULL, NULL);
    for (int round = 0; round < 2; round++) {
        const char *want = round == 0 ? f1 : f2;
        struct tp *cl = tp_new(0, port, noverify, NULL);
        tp_add(cl, OP_HS, NULL, 0);
        tp_text(cl, OP_SEND, "to a generated cert\n");
        tp_text(cl, OP_RECV, "from a generated cert\n");
        tp_add(cl, OP_DRAIN, NULL, 0);
        tp_start(cl);
        long long p = expect_incoming(t, l);
        long long s = accept_pending(t, l, p, &id);
        json_t *tls = expect_accepted(t, s, l, id);
        check_tls(tls, NULL, false, NULL, NULL, NULL);
        json_decref(tls);
        recv_text(t, s, "to a generated cert\n");
        send_str(t, s, "from a generated cert\n");
        shutdown_normal(t, s);
        tp_expect_ok(cl);
        EXPECT_STR(cl->peer_fp, want, "the certificate the client saw (round %d)", round);
        EXPECT_STR(cl->peer_cn, "sockd-generated", "its common name (round %d)", round);
        if (round == 0) {
            r = tc_ok(t, NULL, "context.generate_certificate", "{s:I, s:s, s:s}", "context",
                      (json_int_t)c, "role", "server", "common_name", "sockd-generated");
            snprintf(f2, sizeof f2, "%s", jstr(r, "fingerprint"));
            json_decref(r);
            EXPECT_TRUE(strcmp(f1, f2) != 0,
                        "a second generated certificate has the same "
                        "fingerprint %s",
                        f2);
        }
    }
}

/*
 * context.destroy while in use: a connected socket keeps sending and receiving, a socket still
 * in its handshake completes it, a listener keeps accepting; new socket.open with the handle ->
 * -32001.
 */
static void
test_context_destroy_in_use(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id, ids[2];
    struct tp *e1 = tp_new(1, 0, peer_server_ctx("server"), NULL);
    struct tp *e2 = tp_new(1, 0, peer_server_ctx("server"), NULL);
    json_t *err = NULL;

    tp_add(e1, OP_HS, NULL, 0);
    tp_add(e1, OP_ECHO, NULL, 0);
    tp_start(e1);
    tp_add(e2, OP_HS, NULL, 0);
    tp_add(e2, OP_ECHO, NULL, 0);
    tp_start(e2);

    long long s1 = tls_connect(t, c, e1->port, "test.local", &id);
    json_decref(expect_connected(t, s1, id, e1->port));

    /* s2: connect and destroy in one batch, so the handshake runs after the destroy */
    long long s2 = open_tls(t, c);
    const char *methods[2] = {"socket.connect", "context.destroy"};
    json_t *params[2] = {json_pack("{s:I, s:s, s:i, s:s}", "socket", (json_int_t)s2, "address",
                                   "127.0.0.1", "port", e2->port, "server_name", "test.local"),
                         json_pack("{s:I}", "context", (json_int_t)c)};
    json_t *resp = tc_batch(t, 2, methods, params, ids);
    for (int k = 0; k < 2; k++)
        EXPECT_TRUE(json_object_get(json_array_get(resp, (size_t)k), "result") != NULL,
                    "batch connect + destroy: %s", jd(resp));
    json_decref(resp);
    json_t *tls = expect_connected(t, s2, ids[0], e2->port);
    check_tls(tls, NULL, true, cert("server")->fp, "test.local", NULL);
    json_decref(tls);

    send_str(t, s1, "still alive after destroy\n");
    recv_text(t, s1, "still alive after destroy\n");
    send_str(t, s2, "handshake after destroy\n");
    recv_text(t, s2, "handshake after destroy\n");

    EXPECT_INT(
        tc_err(t, &err, "socket.open", "{s:s, s:I}", "type", "tls", "context", (json_int_t)c),
        SOCKD_E_UNKNOWN_HANDLE, "socket.open with a destroyed context: %s", jd(err));
    json_decref(err);
    err = NULL;
    EXPECT_INT(tc_err(t, &err, "context.fingerprint", "{s:I}", "context", (json_int_t)c),
               SOCKD_E_UNKNOWN_HANDLE, "context.fingerprint of a destroyed context: %s", jd(err));
    json_decref(err);
    err = NULL;
    EXPECT_INT(tc_err(t, &err, "context.destroy", "{s:I}", "context", (json_int_t)c),
               SOCKD_E_UNKNOWN_HANDLE, "a second context.destroy: %s", jd(err));
    json_decref(err);

    shutdown_normal(t, s1);
    shutdown_normal(t, s2);
    tp_expect_ok(e1);
    tp_expect_ok(e2);

    /* a listener whose context is destroyed keeps accepting TLS */
    long long sc = ctx_new(t, NULL);
    int port;
    ctx_server_cert(t, sc, "server");
    long long l = tls_listener(t, sc, false, &port);
    json_decref(tc_ok(t, NULL, "context.destroy", "{s:I}", "context", (json_int_t)sc));
    struct tp *cl = tp_new(0, port, peer_client_ctx(true, NULL, NULL), "test.local");
    tp_add(cl, OP_HS, NULL, 0);
    tp_text(cl, OP_RECV, "listener outlived its context\n");
    tp_add(cl, OP_DRAIN, NULL, 0);
    tp_start(cl);
    long long p = expect_incoming(t, l);
    long long s = accept_pending(t, l, p, &id);
    json_decref(expect_accepted(t, s, l, id));
    send_str(t, s, "listener outlived its context\n");
    shutdown_normal(t, s);
    tp_expect_ok(cl);
}

/* ------------------------------------------------------------------------ */
/* the end of a TLS connection                                               */

/* socket.shutdown: the peer gets every queued byte, then close_notify; closed reason normal. */
static void
test_shutdown_close_notify(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    const size_t total = 3 * MIB;
    unsigned char *data = random_bytes(total), h1[32], h2[32];
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id, sid, shid;
    struct tp *sink = tp_new(1, 0, peer_server_ctx("server"), NULL);

    /* small kernel buffers on both sides, so most of the data waits in the daemon */
    int small = 8 * KIB;
    EXPECT_INT(setsockopt(sink->lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0,
               "setsockopt: %s", strerror(errno));
    tp_add(sink, OP_HS, NULL, 0);
    tp_add(sink, OP_GO, NULL, 0); /* read nothing until the shutdown was asked for */
    tp_add(sink, OP_DRAIN, NULL, 0);
    tp_start(sink);
    long long s = tls_connect(t, c, sink->port, "test.local", &id);
    json_decref(expect_connected(t, s, id, sink->port));
    json_decref(
        tc_ok(t, NULL, "socket.setopt", "{s:I, s:i}", "socket", (json_int_t)s, "sndbuf", small));

    sid = send_bytes(t, s, data, total, 1);
    json_t *r = tc_ok(t, &shid, "socket.shutdown", "{s:I}", "socket", (json_int_t)s);
    EXPECT_TRUE(json_object_size(r) == 0, "socket.shutdown result %s", jd(r));
    json_decref(r);
    r = tc_info(t, s);
    EXPECT_STR(jstr(r, "state"), "closing", "state after shutdown with queued data: %s", jd(r));
    EXPECT_TRUE(jint(r, "send_buffered") > 0, "nothing queued at shutdown: %s", jd(r));
    json_decref(r);
    json_t *err = NULL;
    EXPECT_INT(tc_err(t, &err, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "x"),
               SOCKD_E_WRONG_STATE, "send after shutdown: %s", jd(err));
    json_decref(err);
    tp_go(sink);

    json_t *ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "bytes"), total, "socket.sent: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), sid, "socket.sent request: %s", jd(ev));
    json_decref(ev);
    ev = expect_closed(t, s, "normal", shid);
    EXPECT_TRUE(json_object_get(ev, "unsent") == NULL || jint(ev, "unsent") == 0,
                "socket.closed after a flushed shutdown reports unsent bytes: %s", jd(ev));
    json_decref(ev);

    tp_expect_ok(sink);
    EXPECT_INT(sink->got_len, total, "bytes the peer got before the end");
    sha256(data, total, h1);
    sha256(sink->got, sink->got_len, h2);
    EXPECT_TRUE(memcmp(h1, h2, 32) == 0, "SHA-256 of what the peer got differs");
    EXPECT_INT(sink->end, END_NOTIFY,
               "the peer saw SSL_ERROR_ZERO_RETURN (close_notify), not \"%s\"",
               tp_end_names[sink->end]);
    free(data);
}

/*
 * connect + send + shutdown in one batch on a tls socket: the send waits for the handshake and
 * goes out encrypted, then close_notify; socket.connected, socket.sent, socket.closed normal.
 */
static void
test_shutdown_during_handshake(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), ids[3];
    struct tp *sv = tp_new(1, 0, peer_server_ctx("server"), NULL);
    const char *early = "sent before the handshake ended\n";

    tp_add(sv, OP_HS, NULL, 0);
    tp_text(sv, OP_RECV, early);
    tp_add(sv, OP_DRAIN, NULL, 0);
    tp_start(sv);
    long long s = open_tls(t, c);
    const char *methods[3] = {"socket.connect", "socket.send", "socket.shutdown"};
    json_t *params[3] = {
        json_pack("{s:I, s:s, s:i, s:s}", "socket", (json_int_t)s, "address", "127.0.0.1", "port",
                  sv->port, "server_name", "test.local"),
        json_pack("{s:I, s:s}", "socket", (json_int_t)s, "text", early),
        json_pack("{s:I}", "socket", (json_int_t)s),
    };
    json_t *resp = tc_batch(t, 3, methods, params, ids);
    for (int k = 0; k < 3; k++)
        EXPECT_TRUE(json_object_get(json_array_get(resp, (size_t)k), "result") != NULL,
                    "batch connect + send + shutdown: %s", jd(resp));
    json_decref(resp);
    json_t *tls = expect_connected(t, s, ids[0], sv->port);
    check_tls(tls, NULL, true, cert("server")->fp, "test.local", NULL);
    json_decref(tls);
    json_t *ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "request"), ids[1], "socket.sent request: %s", jd(ev));
    EXPECT_INT(jint(ev, "bytes"), strlen(early), "socket.sent bytes: %s", jd(ev));
    json_decref(ev);
    json_decref(expect_closed(t, s, "normal", ids[2]));
    tp_expect_ok(sv);
    EXPECT_INT(sv->end, END_NOTIFY, "the peer's stream ended with close_notify, not \"%s\"",
               tp_end_names[sv->end]);
}

/* A peer's close_notify -> socket.closed reason by_peer, after the data sent before it. */
static void
test_close_by_peer(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id, rid;
    struct tp *sv = tp_new(1, 0, peer_server_ctx("server"), NULL);
    const char *words = "last words before close_notify";
    char buf[128];
    size_t have = 0;

    tp_add(sv, OP_HS, NULL, 0);
    tp_add(sv, OP_GO, NULL, 0);
    tp_text(sv, OP_SEND, words);
    tp_add(sv, OP_NOTIFY, NULL, 0);
    tp_add(sv, OP_DRAIN, NULL, 0);
    tp_start(sv);
    long long s = tls_connect(t, c, sv->port, "test.local", &id);
    json_decref(expect_connected(t, s, id, sv->port));
    /* the recv waits before the peer sends, so nothing can be dropped at the end */
    json_decref(tc_ok(t, &rid, "socket.recv", "{s:I, s:I, s:b}", "socket", (json_int_t)s, "length",
                      (json_int_t)100, "partial", 1));
    tp_go(sv);

    json_t *ev = NULL;
    for (int k = 0; k < 4; k++) {
        ev = tc_wait_msg(t, NULL, s, H_TIMEOUT_MS);
        if (ev == NULL)
            FAIL("no notification for socket %lld after the peer's close_notify (%zu bytes "
                 "received)",
                 s, have);
        json_t *p = jget(ev, "params");
        if (note_matches(ev, "socket.closed", s)) {
            EXPECT_STR(jstr(p, "reason"), "by_peer", "socket.closed after close_notify: %s",
                       jd(ev));
            EXPECT_TRUE(json_object_get(p, "request") == NULL, "by_peer carries no request: %s",
                        jd(ev));
            break;
        }
        EXPECT_TRUE(note_matches(ev, "socket.received", s), "unexpected notification %s", jd(ev));
        EXPECT_INT(jint(p, "request"), rid, "socket.received request: %s", jd(ev));
        size_t n;
        unsigned char *d = unb64_(jstr(p, "data"), &n);
        EXPECT_TRUE(have + n <= sizeof buf, "too many bytes: %s", jd(ev));
        memcpy(buf + have, d, n);
        have += n;
        free(d);
        json_decref(ev);
        ev = NULL;
    }
    EXPECT_TRUE(ev != NULL, "no socket.closed after the peer's close_notify");
    json_decref(ev);
    EXPECT_INT(have, strlen(words), "bytes delivered before by_peer");
    EXPECT_TRUE(memcmp(buf, words, have) == 0, "data before the close_notify: \"%.*s\"", (int)have,
                buf);
    json_t *err = NULL;
    EXPECT_INT(tc_err(t, &err, "socket.info", "{s:I}", "socket", (json_int_t)s),
               SOCKD_E_UNKNOWN_HANDLE, "socket.info after by_peer: %s", jd(err));
    json_decref(err);
    tp_expect_ok(sv);
}

/* A peer that ends TCP without close_notify (truncation) -> socket.closed reason lost. */
static void
test_close_lost(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem), id, rid;
    struct tp *sv = tp_new(1, 0, peer_server_ctx("server"), NULL);
    const char *words = "cut short";

    tp_add(sv, OP_HS, NULL, 0);
    tp_add(sv, OP_GO, NULL, 0);
    tp_text(sv, OP_SEND, words);
    tp_add(sv, OP_CLOSE, NULL, 0);
    tp_start(sv);
    long long s = tls_connect(t, c, sv->port, "test.local", &id);
    json_decref(expect_connected(t, s, id, sv->port));
    json_decref(tc_ok(t, &rid, "socket.recv", "{s:I, s:I}", "socket", (json_int_t)s, "length",
                      (json_int_t)strlen(words)));
    tp_go(sv);

    json_t *ev = tc_next_is(t, s, "socket.received", H_TIMEOUT_MS);
    size_t n;
    unsigned char *d = unb64_(jstr(ev, "data"), &n);
    EXPECT_TRUE(n == strlen(words) && memcmp(d, words, n) == 0, "data before the truncation: %s",
                jd(ev));
    EXPECT_INT(jint(ev, "request"), rid, "socket.received request: %s", jd(ev));
    free(d);
    json_decref(ev);
    ev = expect_closed(t, s, "lost", 0);
    json_decref(ev);
    tp_expect_ok(sv);
}

/* ------------------------------------------------------------------------ */
/* clients that go away in the middle of a handshake                         */

/*
 * A raw TCP client sends half a ClientHello to a sockd TLS listener and disconnects: with
 * explicit accept the accepted socket (state "connecting") ends with tls_handshake_failed; with
 * auto_accept nothing is announced. Either way the daemon's fds and socket counts return to
 * where they were, and the listeners keep working.
 */
static void
test_half_client_hello(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL), id;
    unsigned char hello[4096];
    size_t hlen = client_hello(hello, sizeof hello);
    pid_t pid = g_d.pid;
    int port, aport;

    settle(t);
    ctx_server_cert(t, c, "server");
    long long l = tls_listener(t, c, false, &port);
    long long la = tls_listener(t, c, true, &aport);

    /* warm-up: one full handshake per listener (whatever the daemon opens lazily is open) */
    SSL_CTX *cctx = peer_client_ctx(true, NULL, NULL);
    struct tp *w1 = tp_new(0, port, cctx, "test.local");
    tp_add(w1, OP_HS, NULL, 0);
    tp_add(w1, OP_DRAIN, NULL, 0);
    tp_start(w1);
    long long p = expect_incoming(t, l);
    long long s = accept_pending(t, l, p, &id);
    json_decref(expect_accepted(t, s, l, id));
    shutdown_normal(t, s);
    tp_expect_ok(w1);
    struct tp *w2 = tp_new(0, aport, cctx, "test.local");
    tp_add(w2, OP_HS, NULL, 0);
    tp_add(w2, OP_DRAIN, NULL, 0);
    tp_start(w2);
    json_t *ev = tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "listener"), la, "auto-accepted: %s", jd(ev));
    s = jint(ev, "socket");
    json_decref(ev);
    shutdown_normal(t, s);
    tp_expect_ok(w2);

    int base = steady_fds(pid);
    json_t *st = stats_(t);
    long long base_tls = stat_tls(st);
    json_decref(st);
    EXPECT_INT(base_tls, 2, "tls sockets in daemon.stats (the two listeners)");

    /* explicit accept */
    int fd = track_fd(h_tcp_connect(port));
    EXPECT_INT(send(fd, hello, hlen / 2, MSG_NOSIGNAL), (ssize_t)(hlen / 2), "send: %s",
               strerror(errno));
    p = expect_incoming(t, l);
    s = accept_pending(t, l, p, &id);
    tc_no_event(t, s, 300);
    expect_state(t, s, "connecting");
    EXPECT_INT(h_count_fds(pid), base + 1, "daemon fds while the handshake waits");
    close_fd(fd);
    expect_hs_failed(t, s, id, NULL);
    EXPECT_INT(h_wait_fds(pid, base, H_TIMEOUT_MS), base, "daemon fds after the client left");

    /* auto_accept */
    fd = track_fd(h_tcp_connect(aport));
    EXPECT_INT(send(fd, hello, hlen / 2, MSG_NOSIGNAL), (ssize_t)(hlen / 2), "send: %s",
               strerror(errno));
    EXPECT_INT(h_wait_fds(pid, base + 1, H_TIMEOUT_MS), base + 1,
               "daemon fds while an auto-accepted handshake waits");
    EXPECT_INT(wait_stat_tls(t, base_tls + 1), base_tls + 1, "tls sockets during the handshake");
    sleep_ms(100);
    close_fd(fd);
    EXPECT_INT(h_wait_fds(pid, base, H_TIMEOUT_MS), base, "daemon fds after the client left");
    tc_no_event(t, 0, 300);
    EXPECT_INT(wait_stat_tls(t, base_tls), base_tls, "tls sockets after the client left");

    /* both listeners still work */
    struct tp *a1 = tp_new(0, port, cctx, "test.local");
    tp_add(a1, OP_HS, NULL, 0);
    tp_text(a1, OP_RECV, "still listening\n");
    tp_add(a1, OP_DRAIN, NULL, 0);
    tp_start(a1);
    p = expect_incoming(t, l);
    s = accept_pending(t, l, p, &id);
    json_decref(expect_accepted(t, s, l, id));
    send_str(t, s, "still listening\n");
    shutdown_normal(t, s);
    tp_expect_ok(a1);
    struct tp *a2 = tp_new(0, aport, cctx, "test.local");
    tp_add(a2, OP_HS, NULL, 0);
    tp_text(a2, OP_RECV, "still listening\n");
    tp_add(a2, OP_DRAIN, NULL, 0);
    tp_start(a2);
    ev = tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS);
    s = jint(ev, "socket");
    json_decref(ev);
    send_str(t, s, "still listening\n");
    shutdown_normal(t, s);
    tp_expect_ok(a2);
    EXPECT_INT(h_wait_fds(pid, base, H_TIMEOUT_MS), base, "daemon fds at the end");
}

/* A connect's timeout_ms covers the TLS handshake: a server that never answers it ends the socket
 * with reason timeout (request = the connect), and its connection is closed. */
static void
test_connect_timeout_in_handshake(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    int port, lfd = silent_listener(&port);
    long long c = ctx_new(t, "{s:b}", "verify", 0), id;
    long long s = open_tls(t, c);
    long long t0 = now_ms();

    json_decref(tc_ok(t, &id, "socket.connect", "{s:I, s:s, s:i, s:s, s:i}", "socket",
                      (json_int_t)s, "address", "127.0.0.1", "port", port, "server_name",
                      "test.local", "timeout_ms", 600));
    struct pollfd pf = {lfd, POLLIN, 0};
    EXPECT_INT(poll(&pf, 1, H_TIMEOUT_MS), 1, "the daemon connected to the silent server");
    int acc = track_fd(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
    expect_state(t, s, "connecting");
    json_t *ev = expect_closed(t, s, "timeout", id);
    long long el = now_ms() - t0;
    json_decref(ev);
    EXPECT_TRUE(el >= 450 && el < 3000, "timeout after %lld ms (timeout_ms 600)", el);
    int rc = raw_drain_closed(acc, H_TIMEOUT_MS);
    EXPECT_TRUE(rc == 0 || rc == ECONNRESET, "the server's connection did not end (%d)", rc);
}

/* The child of test_killed_client_mid_handshake: a control client that starts a TLS connect to
 * a server that never answers, says 'R' on wfd, and waits to be killed. */
static void
killed_child(int wfd, int port)
{
    struct sockd_client *c;
    json_t *res = NULL, *err = NULL, *params;
    long long ctx_h, s;

    for (int i = 3; i < 4096; i++)
        if (i != wfd)
            close(i);
    c = sockd_client_connect(g_d.sock);
    if (c == NULL)
        _exit(2);
    params = json_pack("{s:b}", "verify", 0);
    if (sockd_client_call(c, "context.create", params, &res, &err, 5000) != 0)
        _exit(3);
    ctx_h = json_integer_value(json_object_get(res, "context"));
    params = json_pack("{s:s, s:I}", "type", "tls", "context", (json_int_t)ctx_h);
    if (sockd_client_call(c, "socket.open", params, &res, &err, 5000) != 0)
        _exit(4);
    s = json_integer_value(json_object_get(res, "socket"));
    params = json_pack("{s:I, s:s, s:i, s:s}", "socket", (json_int_t)s, "address", "127.0.0.1",
                       "port", port, "server_name", "test.local");
    if (sockd_client_call(c, "socket.connect", params, &res, &err, 5000) != 0)
        _exit(5);
    if (write(wfd, "R", 1) != 1)
        _exit(6);
    for (int i = 0; i < 300; i++)
        usleep(100000);
    _exit(0);
}

/*
 * A control client that opened a TLS socket toward a server that never answers the handshake is
 * killed: the daemon closes that connection toward the server and its fds, clients, contexts and
 * tls socket counts return to where they were.
 */
static void
test_killed_client_mid_handshake(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    int port, lfd = silent_listener(&port), pfd[2], st;
    pid_t pid = g_d.pid, child;
    int base = settle(t);
    json_t *s0 = stats_(t);
    long long base_clients = jint(s0, "clients"), base_ctx = jint(s0, "contexts");
    long long base_tls = stat_tls(s0);
    char ch = 0;
    json_decref(s0);

    EXPECT_INT(pipe2(pfd, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
    track_fd(pfd[0]);
    fflush(stdout);
    fflush(stderr);
    child = fork();
    EXPECT_TRUE(child >= 0, "child >= 0");
    if (child == 0)
        killed_child(pfd[1], port);
    close(pfd[1]);

    struct pollfd pf = {pfd[0], POLLIN, 0};
    bool ready = poll(&pf, 1, H_TIMEOUT_MS) == 1 && read(pfd[0], &ch, 1) == 1 && ch == 'R';
    if (!ready) {
        kill(child, SIGKILL);
        waitpid(child, &st, 0);
        FAIL("the child control client did not start its TLS connect (exit status 0x%x)", st);
    }

    /* the daemon's ClientHello reaches the silent server, which never answers */
    pf.fd = lfd;
    pf.events = POLLIN;
    if (poll(&pf, 1, H_TIMEOUT_MS) != 1) {
        kill(child, SIGKILL);
        waitpid(child, &st, 0);
        FAIL("the daemon never connected to the silent server");
    }
    int acc = track_fd(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
    unsigned char first = 0;
    pf.fd = acc;
    if (poll(&pf, 1, H_TIMEOUT_MS) != 1 || recv(acc, &first, 1, 0) != 1 || first != 0x16) {
        kill(child, SIGKILL);
        waitpid(child, &st, 0);
        FAIL("no ClientHello from the daemon (first byte 0x%02x)", first);
    }
    s0 = stats_(t);
    long long mid_clients = jint(s0, "clients"), mid_ctx = jint(s0, "contexts");
    long long mid_tls = stat_tls(s0);
    json_decref(s0);
    int mid_fds = h_count_fds(pid);

    kill(child, SIGKILL);
    waitpid(child, &st, 0);
    EXPECT_INT(mid_clients, base_clients + 1, "clients while the child runs");
    EXPECT_INT(mid_ctx, base_ctx + 1, "contexts while the child runs");
    EXPECT_INT(mid_tls, base_tls + 1, "tls sockets while the child runs");
    EXPECT_INT(mid_fds, base + 2,
               "daemon fds while the child runs (its control connection and "
               "its socket)");

    int rc = raw_drain_closed(acc, H_TIMEOUT_MS);
    EXPECT_TRUE(rc == 0 || rc == ECONNRESET,
                "the silent server's connection did not end after the client died (%d)", rc);
    EXPECT_INT(h_wait_fds(pid, base, H_TIMEOUT_MS), base, "daemon fds after the client died");
    long long deadline = now_ms() + H_TIMEOUT_MS, cl = -1, cx = -1, tl = -1;
    for (int guard = 0; guard < 10000; guard++) {
        s0 = stats_(t);
        cl = jint(s0, "clients");
        cx = jint(s0, "contexts");
        tl = stat_tls(s0);
        json_decref(s0);
        if ((cl == base_clients && cx == base_ctx && tl == base_tls) || now_ms() > deadline)
            break;
        sleep_ms(20);
    }
    EXPECT_INT(cl, base_clients, "clients after the client died");
    EXPECT_INT(cx, base_ctx, "contexts after the client died");
    EXPECT_INT(tl, base_tls, "tls sockets after the client died");
}

/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* cipher suites, resumption, names, revocation (issue 15)                   */

/* Run `openssl s_client` to 127.0.0.1:port with extra options and send nothing; wait until it
 * has either finished the handshake (its "Cipher is" line names a suite) or ended. Returns
 * whether a suite was agreed; *out (if not NULL) gets its output (caller frees). */
static bool
s_client_try_(int port, const char *extra, char **out)
{
    char cmd[800];
    snprintf(cmd, sizeof cmd, "exec openssl s_client -connect 127.0.0.1:%d -nocommands %s", port,
             extra);
    struct proc *cl = proc_start_(cmd, false, false);
    long long deadline = now_ms() + H_TIMEOUT_MS;
    bool agreed = false;
    for (int guard = 0; guard < 10000 && now_ms() < deadline; guard++) {
        char *o = proc_output(cl);
        const char *c = strstr(o, "Cipher is ");
        agreed = c != NULL && strncmp(c, "Cipher is (NONE)", 16) != 0;
        bool ended = proc_reap(cl);
        if (agreed || ended) {
            if (out != NULL)
                *out = o;
            else
                free(o);
            proc_stop(cl);
            return agreed;
        }
        free(o);
        sleep_ms(20);
    }
    FAIL("`%s` neither finished nor ended", cmd);
    return false;
}
#define s_client_try(...) (TC_AT(), s_client_try_(__VA_ARGS__))

/*
 * TLS 1.2 suites a default listener accepts: the AEAD ones (ECDHE with AES-GCM or
 * CHACHA20-POLY1305), no CBC; a client that offers only CBC suites is refused, one that
 * offers an AEAD suite gets it (an auto_accept listener does not report the failed ones). `ciphers`
 * changes the list; as a client, sockd offers no CBC
 * suite to a server that only has one unless asked to.
 */
static void
test_ciphers_aead_default(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL), id;
    char *out = NULL;
    int port;

    ctx_server_cert(t, c, "server");
    tls_listener(t, c, true, &port);
    static const char *const cbc[] = {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384",
                                      "ECDHE-ECDSA-AES128-SHA256"};
    for (size_t i = 0; i < sizeof cbc / sizeof cbc[0]; i++) {
        char opt[200];
        snprintf(opt, sizeof opt, "-tls1_2 -cipher %s", cbc[i]);
        EXPECT_TRUE(!s_client_try(port, opt, &out), "a default listener agreed to %s: %.1500s",
                    cbc[i], out);
        free(out);
    }
    EXPECT_TRUE(s_client_try(port, "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256", &out),
                "an AEAD client was refused: %.1500s", out);
    free(out);
    json_t *ev = tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS);
    EXPECT_STR(jstr(jget(ev, "tls"), "cipher"), "ECDHE-ECDSA-AES128-GCM-SHA256", "%s", jd(ev));
    EXPECT_STR(jstr(jget(ev, "tls"), "version"), "TLSv1.2", "%s", jd(ev));
    json_decref(ev);
    EXPECT_TRUE(s_client_try(port, "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305", NULL),
                "a CHACHA20-POLY1305 client was refused");
    json_decref(tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS));

    /* ciphers: a CBC suite only when asked for */
    long long c2 = ctx_new(t, "{s:s}", "ciphers", "ECDHE-ECDSA-AES128-SHA");
    ctx_server_cert(t, c2, "server");
    int port2;
    tls_listener(t, c2, true, &port2);
    EXPECT_TRUE(s_client_try(port2, "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA", &out),
                "ciphers did not allow the CBC suite: %.1500s", out);
    free(out);
    json_decref(tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS));

    /* as a client: a CBC-only server is refused by default, reached with ciphers */
    struct proc *sv = s_server("server", "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA", false);
    long long cc = ctx_new(t, "{s:s}", "ca", cert("ca")->pem);
    long long s = tls_connect(t, cc, sv->port, "test.local", &id);
    expect_hs_failed(t, s, id, "handshake failure|no shared cipher|alert");
    proc_stop(sv);
    sv = s_server("server", "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA", false);
    cc = ctx_new(t, "{s:s, s:s}", "ca", cert("ca")->pem, "ciphers",
                 "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA");
    s = tls_connect(t, cc, sv->port, "test.local", &id);
    json_t *tls = expect_connected(t, s, id, sv->port);
    EXPECT_STR(jstr(tls, "cipher"), "ECDHE-ECDSA-AES128-SHA", "%s", jd(tls));
    json_decref(tls);
}

/* ciphersuites picks the TLS 1.3 suites; min_version tls1.3 refuses a TLS 1.2 server; bad lists
 * are -32602 naming the param. */
static void
test_ciphersuites_and_bad_lists(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long id;
    int port;

    long long c = ctx_new(t, "{s:s}", "ciphersuites", "TLS_CHACHA20_POLY1305_SHA256");
    ctx_server_cert(t, c, "server");
    tls_listener(t, c, true, &port);
    EXPECT_TRUE(!s_client_try(port, "-ciphersuites TLS_AES_256_GCM_SHA384", NULL),
                "a listener limited to CHACHA20 agreed to AES-256-GCM");
    EXPECT_TRUE(s_client_try(port,
                             "-ciphersuites TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
                             NULL),
                "a client offering CHACHA20 was refused");
    json_t *ev = tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS);
    EXPECT_STR(jstr(jget(ev, "tls"), "cipher"), "TLS_CHACHA20_POLY1305_SHA256", "%s", jd(ev));
    json_decref(ev);

    struct proc *sv = s_server("server", "-tls1_2", false);
    long long c13 = ctx_new(t, "{s:s, s:s}", "ca", cert("ca")->pem, "min_version", "tls1.3");
    long long s = tls_connect(t, c13, sv->port, "test.local", &id);
    expect_hs_failed(t, s, id, "version|alert");

    static const struct {
        const char *param, *value, *says;
    } bad[] = {
        {"ciphers", "NOT-A-CIPHER", "NOT-A-CIPHER"},
        {"ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256:BOGUS", "BOGUS"},
        {"ciphers", "TLS_AES_128_GCM_SHA256", "ciphersuites"},
        {"ciphers", "aNULL", "aNULL"},
        {"ciphers", "HIGH:@SECLEVEL=0", "@STRENGTH"},
        {"ciphers", "", "1 to"},
        {"ciphersuites", "TLS_AES_128_GCM_SHA256:NOPE", "NOPE"},
        {"ciphersuites", "ECDHE-ECDSA-AES128-GCM-SHA256", "not a TLS 1.3"},
        {"min_version", "tls1.1", "tls1.3"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "context.create", "{s:s}",
                                  bad[i].param, bad[i].value);
        EXPECT_STR(jstr(err_data(e), "param"), bad[i].param, "%s", jd(e));
        EXPECT_TRUE(strstr(jstr(e, "message"), bad[i].says) != NULL, "%s=\"%s\": %s", bad[i].param,
                    bad[i].value, jd(e));
        json_decref(e);
    }
}

/* `openssl s_server` (tdir/NAME) on 127.0.0.1 for n connections, with extra options. */
static struct proc *
s_server_n_(const char *name, int n, const char *extra)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd,
             "exec openssl s_server -accept 127.0.0.1:0 -naccept %d -cert %s -key %s %s", n,
             cert_path(name, "pem"), cert_path(name, "key"), extra);
    return proc_start_(cmd, true, false);
}
#define s_server_n(...) (TC_AT(), s_server_n_(__VA_ARGS__))

/* One verified connection of context c to sv as name (NULL: by address): data both ways (so a
 * TLS 1.3 ticket has arrived), shutdown (socket.close when abrupt); returns tls.resumed. */
static bool
resume_round_(struct tc *t, long long c, struct proc *sv, const char *name, int round, bool abrupt)
{
    long long id;
    char text[64];
    long long s = tls_connect_(t, c, sv->port, name, &id);
    json_t *tls = expect_connected_(t, s, id, sv->port);
    json_t *r = jget_(tls, "resumed");
    EXPECT_TRUE(json_is_boolean(r), "tls.resumed is a boolean: %s", jd(tls));
    EXPECT_TRUE(json_is_true(jget_(tls, "verified")), "a resumed session keeps verified: %s",
                jd(tls));
    EXPECT_STR(jstr_(tls, "peer_fingerprint"), cert("server")->fp, "%s", jd(tls));
    bool resumed = json_is_true(r);
    json_decref(tls);
    snprintf(text, sizeof text, "round %d\n", round);
    proc_write_(sv, text);
    recv_text_(t, s, text);
    if (abrupt)
        json_decref(tc_ok_(t, NULL, "socket.close", "{s:I}", "socket", (json_int_t)s));
    else
        shutdown_normal_(t, s);
    return resumed;
}
#define resume_round(...) (TC_AT(), resume_round_(__VA_ARGS__))

/*
 * Client-side resumption: the second connection of a context to the same server and name
 * resumes (TLS 1.3 tickets; TLS 1.2 tickets; TLS 1.2 session ids with s_server -no_ticket), a
 * connection by another name does not, nor one of a context with session_cache:false.
 */
static void
test_session_resumption(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    static const char *const modes[] = {"", "-tls1_2", "-tls1_2 -no_ticket", "-no_ticket"};

    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        struct proc *sv = s_server_n("server", 4, modes[m]);
        long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem);
        EXPECT_TRUE(!resume_round(t, c, sv, "test.local", 1, false),
                    "first connection resumed (%s)", modes[m]);
        EXPECT_TRUE(resume_round(t, c, sv, "test.local", 2, false),
                    "second connection did not resume (s_server %s)", modes[m]);
        /* another name (the address, verified against the IP SAN): not that session */
        EXPECT_TRUE(!resume_round(t, c, sv, NULL, 3, false),
                    "a session verified for test.local was offered for 127.0.0.1 (%s)", modes[m]);
        EXPECT_TRUE(resume_round(t, c, sv, "test.local", 4, false), "fourth connection (%s)",
                    modes[m]);
        proc_stop(sv);
    }

    /* socket.close (no close_notify) keeps the session: TLS 1.1 and later allow it */
    struct proc *sv = s_server_n("server", 2, "-tls1_2");
    long long c = ctx_new(t, "{s:s}", "ca", cert("ca")->pem);
    EXPECT_TRUE(!resume_round(t, c, sv, "test.local", 1, true), "first connection resumed");
    EXPECT_TRUE(resume_round(t, c, sv, "test.local", 2, false),
                "a session of a connection ended by socket.close was not resumed");
    proc_stop(sv);

    sv = s_server_n("server", 2, "");
    long long off = ctx_new(t, "{s:s, s:b}", "ca", cert("ca")->pem, "session_cache", 0);
    EXPECT_TRUE(!resume_round(t, off, sv, "test.local", 1, false), "session_cache:false, first");
    EXPECT_TRUE(!resume_round(t, off, sv, "test.local", 2, false), "session_cache:false resumed");
}

/* Resumption on the server side: s_client -reconnect resumes against a sockd listener, and
 * socket.accepted says so. */
static void
test_session_resumed_server(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL);
    int port, resumed = 0;
    char cmd[300];

    ctx_server_cert(t, c, "server");
    tls_listener(t, c, true, &port);
    snprintf(cmd, sizeof cmd,
             "exec openssl s_client -connect 127.0.0.1:%d -servername test.local -tls1_2 "
             "-reconnect",
             port);
    struct proc *cl = proc_start(cmd, false, false);
    for (int i = 0; i < 6; i++) {
        json_t *ev = tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS);
        resumed += json_is_true(jget(jget(ev, "tls"), "resumed"));
        json_decref(ev);
    }
    EXPECT_INT(resumed, 5, "of s_client -reconnect's 6 connections, 5 resume");
    proc_stop(cl);
}

/* s_client -servername NAME against port: the subject CN of the certificate it got. */
static void
sni_expect_cn_(struct tc *t, int port, const char *name, const char *cn)
{
    char opt[200], *out = NULL, want[160], want2[160];
    snprintf(opt, sizeof opt, "-servername %s", name);
    EXPECT_TRUE(s_client_try_(port, opt, &out), "s_client -servername %s failed: %.1500s", name,
                out);
    snprintf(want, sizeof want, "subject=CN = %s\n", cn);
    snprintf(want2, sizeof want2, "subject=CN=%s\n", cn);
    EXPECT_TRUE(strstr(out, want) != NULL || strstr(out, want2) != NULL,
                "-servername %s: not the certificate of %s: %.1500s", name, cn, out);
    free(out);
    json_t *ev = tc_event_(t, "socket.accepted", 0, H_TIMEOUT_MS);
    EXPECT_STR(jstr_(jget_(ev, "tls"), "server_name"), name, "socket.accepted: %s", jd(ev));
    json_decref(ev);
}
#define sni_expect_cn(...) (TC_AT(), sni_expect_cn_(__VA_ARGS__))

/* context.set_server_certificate {server_names}: the certificate by the name a client asks
 * for (exact, then "*." one label), else the default; without a default a name that matches
 * nothing is refused; names move to the newest certificate; the count is capped. */
static void
test_sni_certificates(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL);
    int port;
    json_t *r;

    ctx_server_cert(t, c, "server"); /* the default: CN test.local */
    r = tc_ok(t, NULL, "context.set_server_certificate", "{s:I, s:s, s:s, s:[s]}", "context",
              (json_int_t)c, "cert", cert("alpha")->pem, "key", cert("alpha")->key, "server_names",
              "Alpha.Test");
    EXPECT_STR(jstr(r, "fingerprint"), cert("alpha")->fp, "named certificate fingerprint");
    json_decref(r);
    json_decref(tc_ok(t, NULL, "context.set_server_certificate", "{s:I, s:s, s:s, s:[s,s]}",
                      "context", (json_int_t)c, "cert", cert("beta")->pem, "key", cert("beta")->key,
                      "server_names", "*.beta.test", "beta.test"));
    r = tc_ok(t, NULL, "context.fingerprint", "{s:I}", "context", (json_int_t)c);
    EXPECT_STR(jstr(r, "fingerprint"), cert("server")->fp, "the default stays the default");
    json_decref(r);
    tls_listener(t, c, true, &port);
    sni_expect_cn(t, port, "alpha.test", "alpha.test");
    sni_expect_cn(t, port, "x.beta.test", "wild.beta.test");
    sni_expect_cn(t, port, "beta.test", "wild.beta.test");
    sni_expect_cn(t, port, "a.b.beta.test", "test.local"); /* one label only */
    sni_expect_cn(t, port, "other.example", "test.local");

    /* without a default: only the names are served */
    long long c2 = ctx_new(t, NULL);
    json_decref(tc_ok(t, NULL, "context.set_server_certificate", "{s:I, s:s, s:s, s:[s]}",
                      "context", (json_int_t)c2, "cert", cert("alpha")->pem, "key",
                      cert("alpha")->key, "server_names", "alpha.test"));
    int port2;
    tls_listener(t, c2, true, &port2);
    sni_expect_cn(t, port2, "alpha.test", "alpha.test");
    EXPECT_TRUE(!s_client_try(port2, "-servername nothing.test", NULL),
                "a name no certificate has was served");
    /* the name moves to a newer certificate */
    json_decref(tc_ok(t, NULL, "context.set_server_certificate", "{s:I, s:s, s:s, s:[s]}",
                      "context", (json_int_t)c2, "cert", cert("server")->pem, "key",
                      cert("server")->key, "server_names", "alpha.test"));
    sni_expect_cn(t, port2, "alpha.test", "test.local");

    /* bad names, and the cap on certificates per context */
    static const char *const badnames[] = {"", "a..b", "*.", "x.*.test", "a b", "a,b"};
    for (size_t i = 0; i < sizeof badnames / sizeof badnames[0]; i++) {
        json_t *e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "context.set_server_certificate",
                                  "{s:I, s:s, s:s, s:[s]}", "context", (json_int_t)c2, "cert",
                                  cert("alpha")->pem, "key", cert("alpha")->key, "server_names",
                                  badnames[i]);
        EXPECT_STR(jstr(err_data(e), "param"), "server_names", "%s", jd(e));
        json_decref(e);
    }
    for (int i = 1; i < 64; i++) {
        char name[32];
        snprintf(name, sizeof name, "n%d.test", i);
        json_decref(tc_ok(t, NULL, "context.set_server_certificate", "{s:I, s:s, s:s, s:[s]}",
                          "context", (json_int_t)c2, "cert", cert("alpha")->pem, "key",
                          cert("alpha")->key, "server_names", name));
    }
    json_t *e =
        tc_expect_err(t, SOCKD_E_LIMIT, "context.set_server_certificate", "{s:I, s:s, s:s, s:[s]}",
                      "context", (json_int_t)c2, "cert", cert("alpha")->pem, "key",
                      cert("alpha")->key, "server_names", "one-too-many.test");
    EXPECT_STR(jstr(err_data(e), "limit"), "server-certificates-per-context", "%s", jd(e));
    json_decref(e);
    /* replacing names of a certificate at the cap is no new certificate */
    json_decref(tc_ok(t, NULL, "context.set_server_certificate", "{s:I, s:s, s:s, s:[s]}",
                      "context", (json_int_t)c2, "cert", cert("beta")->pem, "key",
                      cert("beta")->key, "server_names", "n5.test"));
    sni_expect_cn(t, port2, "n5.test", "wild.beta.test");
}

/*
 * A generated certificate carries subject_alt_names (DNS names and IP addresses) and the key
 * type asked for: Python's ssl, with the certificate as its only CA and check_hostname on,
 * accepts it by each name and refuses another name. The certificate is first fetched without
 * verification (trust on first use), then checked against context.fingerprint.
 */
static const char py_san[] =
    "import hashlib, socket, ssl, sys\n"
    "port, d = int(sys.argv[1]), sys.argv[2]\n"
    "def conn(ctx, host):\n"
    "    with socket.create_connection(('127.0.0.1', port), timeout=5) as s:\n"
    "        with ctx.wrap_socket(s, server_hostname=host) as t:\n"
    "            return t.getpeercert(True), t.version()\n"
    "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
    "der, _ = conn(c, 'localhost')\n"
    "open(d + '/gen.pem', 'w').write(ssl.DER_cert_to_PEM_cert(der))\n"
    "print('fp', hashlib.sha256(der).hexdigest().upper())\n"
    "v = ssl.create_default_context(cafile=d + '/gen.pem')\n"
    "assert v.check_hostname and v.verify_mode == ssl.CERT_REQUIRED\n"
    "for host in sys.argv[3:]:\n"
    "    try:\n"
    "        print('verified', host, conn(v, host)[1])\n"
    "    except ssl.SSLCertVerificationError as e:\n"
    "        print('refused', host, e.verify_message)\n";

static void
test_generated_san_python(void **state)
{
    (void)state;
    static const struct {
        const char *key_type, *openssl_says;
    } kinds[] = {{NULL, "id-ecPublicKey"},
                 {"ed25519", "ED25519"},
                 {"rsa-2048", "(2048 bit)"},
                 {"rsa-3072", "(3072 bit)"}};
    char path[200], cmd[600];

    snprintf(path, sizeof path, "%s/san.py", tdir);
    FILE *f = fopen(path, "w");
    EXPECT_TRUE(f != NULL, "f");
    fputs(py_san, f);
    fclose(f);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        struct tc *t = tc_new(&g_d); /* one per round: its listener's notifications stay there */
        long long c = ctx_new(t, NULL);
        json_t *p = json_pack("{s:I, s:s, s:s, s:[s,s,s], s:i}", "context", (json_int_t)c, "role",
                              "server", "common_name", "sockd-san", "subject_alt_names",
                              "localhost", "127.0.0.1", "::1", "days", 825);
        if (kinds[k].key_type != NULL)
            json_object_set_new(p, "key_type", json_string(kinds[k].key_type));
        json_t *r = tc_okp(t, NULL, "context.generate_certificate", p);
        char fp[FP_MAX];
        snprintf(fp, sizeof fp, "%s", jstr(r, "fingerprint"));
        json_decref(r);
        int port;
        tls_listener(t, c, true, &port);
        snprintf(cmd, sizeof cmd,
                 "exec python3 %s %d %s localhost 127.0.0.1 ::1 other.example 127.0.0.2", path,
                 port, tdir);
        struct proc *py = proc_start(cmd, false, false);
        long long deadline = now_ms() + 3 * H_TIMEOUT_MS;
        while (!proc_reap(py) && now_ms() < deadline)
            sleep_ms(20);
        char *out = proc_output(py);
        const char *hex = strstr(out, "fp ");
        bool fp_ok = hex != NULL;
        for (int i = 0; fp_ok && i < 32; i++)
            fp_ok = strncmp(hex + 3 + 2 * i, fp + 8 + 3 * i, 2) == 0;
        EXPECT_TRUE(fp_ok, "%s: python saw another certificate than %s: %.2000s", kinds[k].key_type,
                    fp, out);
        static const char *const want[] = {"verified localhost ", "verified 127.0.0.1 ",
                                           "verified ::1 ", "refused other.example ",
                                           "refused 127.0.0.2 "};
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
            EXPECT_TRUE(strstr(out, want[i]) != NULL, "%s: no \"%s\" in: %.2000s",
                        kinds[k].key_type ? kinds[k].key_type : "default", want[i], out);
        free(out);
        /* the key type, by openssl x509 */
        snprintf(cmd, sizeof cmd, "openssl x509 -noout -text -in %s/gen.pem", tdir);
        FILE *x = popen(cmd, "r");
        char buf[8192];
        size_t n = x != NULL ? fread(buf, 1, sizeof buf - 1, x) : 0;
        buf[n] = '\0';
        if (x != NULL)
            pclose(x);
        EXPECT_TRUE(strstr(buf, kinds[k].openssl_says) != NULL, "key type %s: %.3000s",
                    kinds[k].key_type ? kinds[k].key_type : "default", buf);
        EXPECT_TRUE(strstr(buf, "CA:FALSE") != NULL, "a generated leaf says CA:FALSE: %.3000s",
                    buf);
    }

    struct tc *t = tc_new(&g_d);
    long long c = ctx_new(t, NULL);
    static const struct {
        const char *fmt, *param;
    } bad[] = {
        {"{s:I, s:s, s:s}", "key_type"},
        {"{s:I, s:s, s:i}", "days"},
        {"{s:I, s:s, s:[s]}", "subject_alt_names"},
    };
    json_t *e;
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "context.generate_certificate", bad[0].fmt,
                      "context", (json_int_t)c, "role", "server", "key_type", "rsa-4096");
    EXPECT_STR(jstr(err_data(e), "param"), bad[0].param, "%s", jd(e));
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "context.generate_certificate", "{s:I, s:s, s:i}",
                      "context", (json_int_t)c, "role", "server", "days", 826);
    EXPECT_STR(jstr(err_data(e), "param"), bad[1].param, "%s", jd(e));
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "context.generate_certificate",
                      "{s:I, s:s, s:[s]}", "context", (json_int_t)c, "role", "server",
                      "subject_alt_names", "bad name,DNS:evil");
    EXPECT_STR(jstr(err_data(e), "param"), bad[2].param, "%s", jd(e));
    json_decref(e);
}

/*
 * RSA keys are made off the loop: requests faster than the thread makes keys are refused with
 * -32003 (limit "rsa-keys-ready") and answered at once, another client is served meanwhile,
 * and a request a little later gets a key (bounded retry).
 */
static void
test_generate_rsa_off_loop(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d), *other = tc_new(&g_d);
    long long c = ctx_new(t, NULL);
    int made = 0, later = 0;

    for (int i = 0; i < 5; i++) {
        json_t *err = NULL;
        long long id = tc_send(t, "context.generate_certificate",
                               json_pack("{s:I, s:s, s:s}", "context", (json_int_t)c, "role",
                                         "server", "key_type", "rsa-3072"));
        json_t *resp = tc_response(t, id, "context.generate_certificate", 4 * H_TIMEOUT_MS);
        err = json_object_get(resp, "error");
        if (err == NULL) {
            made++;
        } else {
            EXPECT_INT(jint(err, "code"), SOCKD_E_LIMIT, "%s", jd(resp));
            EXPECT_STR(jstr(err_data(err), "limit"), "rsa-keys-ready", "%s", jd(resp));
            EXPECT_TRUE(strstr(jstr(err_data(err), "detail"), "try again") != NULL, "%s", jd(resp));
            later++;
        }
        json_decref(resp);
        json_decref(tc_ok(other, NULL, "daemon.ping", NULL));
    }
    EXPECT_TRUE(later >= 1, "5 RSA-3072 keys back to back, %d refused", later);
    long long deadline = now_ms() + 12 * H_TIMEOUT_MS;
    bool got = false;
    for (int guard = 0; guard < 2000 && !got && now_ms() < deadline; guard++) {
        json_t *resp = tc_response(t,
                                   tc_send(t, "context.generate_certificate",
                                           json_pack("{s:I, s:s, s:s}", "context", (json_int_t)c,
                                                     "role", "server", "key_type", "rsa-3072")),
                                   "context.generate_certificate", H_TIMEOUT_MS);
        got = json_object_get(resp, "result") != NULL;
        json_decref(resp);
        if (!got)
            sleep_ms(100);
    }
    EXPECT_TRUE(got, "no RSA-3072 key came from the thread (%d made at first)", made);
    json_t *r = tc_ok(t, NULL, "context.fingerprint", "{s:I}", "context", (json_int_t)c);
    expect_fp_form(jstr(r, "fingerprint"));
    json_decref(r);
}

/*
 * Revocation: with the CA's CRL (crl PEM, or crl_file), a listener that requires client
 * certificates refuses a revoked one (tls_handshake_failed, "certificate revoked") and accepts
 * a good one; as a client, a revoked server certificate fails the same way and a good one
 * verifies. A bad CRL is -32602.
 */
static void
test_crl_revoked(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    char *crl = slurp_cert("ca", "crl");
    long long id;
    int port;

    EXPECT_TRUE(crl != NULL, "crl");
    long long c = ctx_new(t, "{s:s, s:s, s:s}", "verify_client", "require", "ca", cert("ca")->pem,
                          "crl", crl);
    ctx_server_cert(t, c, "server");
    long long l = tls_listener(t, c, false, &port);

    struct tp *bad = tp_new(0, port, peer_client_ctx(true, "revoked", NULL), "test.local");
    tp_add(bad, OP_HS, NULL, 0);
    tp_add(bad, OP_RECV, NULL, 1); /* TLS 1.3: the refusal comes after our Finished */
    tp_start(bad);
    long long p = expect_incoming(t, l);
    long long s = accept_pending(t, l, p, &id);
    expect_hs_failed(t, s, id, "certificate revoked");
    tp_join(bad);
    EXPECT_TRUE(bad->failed, "a revoked client certificate got data");

    struct tp *ok = tp_new(0, port, peer_client_ctx(true, "client", NULL), "test.local");
    tp_add(ok, OP_HS, NULL, 0);
    tp_text(ok, OP_RECV, "not revoked\n");
    tp_add(ok, OP_DRAIN, NULL, 0);
    tp_start(ok);
    p = expect_incoming(t, l);
    s = accept_pending(t, l, p, &id);
    json_t *tls = expect_accepted(t, s, l, id);
    check_tls(tls, NULL, true, cert("client")->fp, "test.local", NULL);
    json_decref(tls);
    send_str(t, s, "not revoked\n");
    shutdown_normal(t, s);
    tp_expect_ok(ok);

    /* client side, crl_file: the revoked server is refused, the good one verifies */
    long long cc =
        ctx_new(t, "{s:s, s:s}", "ca", cert("ca")->pem, "crl_file", cert_path("ca", "crl"));
    struct proc *sv = s_server("revsrv", NULL, false);
    s = tls_connect(t, cc, sv->port, "test.local", &id);
    expect_hs_failed(t, s, id, "certificate revoked");
    sv = s_server("server", NULL, false);
    s = tls_connect(t, cc, sv->port, "test.local", &id);
    tls = expect_connected(t, s, id, sv->port);
    check_tls(tls, NULL, true, cert("server")->fp, "test.local", NULL);
    json_decref(tls);

    json_t *e =
        tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "context.create", "{s:s}", "crl", cert("ca")->pem);
    EXPECT_STR(jstr(err_data(e), "param"), "crl", "%s", jd(e));
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "context.create", "{s:s}", "crl_file",
                      cert_path("ca", "pem"));
    EXPECT_STR(jstr(err_data(e), "param"), "crl_file", "%s", jd(e));
    json_decref(e);
    free(crl);
    check_deferred();
}

static int
group_setup(void **state)
{
    (void)state;
    char path[128], cmd[512];
    FILE *fp;

    signal(SIGPIPE, SIG_IGN);
    snprintf(tdir, sizeof tdir, "/tmp/sockd-it-tls-XXXXXX");
    if (mkdtemp(tdir) == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/gen.sh", tdir);
    fp = fopen(path, "w");
    if (fp == NULL)
        return -1;
    fputs(gen_script, fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd, "sh %s %s >%s/gen.log 2>&1", path, tdir, tdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "certificate generation failed; see %s/gen.log\n", tdir);
        return -1;
    }
    for (size_t i = 0; i < NCERTS; i++) {
        struct cert *c = &certs[i];
        c->pem = slurp_cert(c->name, "pem");
        c->key = slurp_cert(c->name, "key");
        if (c->pem == NULL || c->key == NULL || openssl_fp(c->name, "sha256", c->fp, FP_MAX) < 0 ||
            openssl_fp(c->name, "sha1", c->fp_sha1, FP_MAX) < 0 ||
            openssl_fp(c->name, "sha512", c->fp_sha512, FP_MAX) < 0) {
            fprintf(stderr, "cannot read certificate %s in %s\n", c->name, tdir);
            return -1;
        }
    }
    h_daemon_start(&g_d, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    char cmd[700];
    const char *keep = getenv("SOCKD_TLSIT_KEEP_LOG"); /* debugging: keep the daemon's log */
    if (keep != NULL && *keep != '\0') {
        snprintf(cmd, sizeof cmd, "cp %s %s", g_d.log, keep);
        if (system(cmd) != 0)
            fprintf(stderr, "could not copy the daemon log to %s\n", keep);
    }
    h_daemon_stop(&g_d);
    for (size_t i = 0; i < NCERTS; i++) {
        free(certs[i].pem);
        free(certs[i].key);
    }
    if (tdir[0] != '\0') {
        snprintf(cmd, sizeof cmd, "rm -rf %s", tdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tdir);
    }
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, t_cleanup)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_connect_verified_sni),
        T(test_connect_ip_san),
        T(test_reject_wrong_name),
        T(test_reject_untrusted_ca),
        T(test_reject_expired),
        T(test_reject_old_protocol),
        T(test_verify_false),
        T(test_system_store),
        T(test_empty_server_name),
        T(test_alpn_client),
        T(test_alpn_server_mismatch),
        T(test_server_s_client),
        T(test_verify_client_require),
        T(test_verify_client_optional),
        T(test_starttls_client),
        T(test_starttls_server_side),
        T(test_starttls_send_during_upgrade),
        T(test_bulk_4mib),
        T(test_context_fingerprint),
        T(test_generated_certificate),
        T(test_context_destroy_in_use),
        T(test_shutdown_close_notify),
        T(test_shutdown_during_handshake),
        T(test_close_by_peer),
        T(test_close_lost),
        T(test_half_client_hello),
        T(test_connect_timeout_in_handshake),
        T(test_killed_client_mid_handshake),
        T(test_ciphers_aead_default),
        T(test_ciphersuites_and_bad_lists),
        T(test_session_resumption),
        T(test_session_resumed_server),
        T(test_sni_certificates),
        T(test_generated_san_python),
        T(test_generate_rsa_off_loop),
        T(test_crl_revoked),
    };

    tc_first_id = 9000;
    signal(SIGPIPE, SIG_IGN);
    if (getenv("SOCKD_TLSIT_FILTER") != NULL) /* e.g. "test_starttls*" */
        cmocka_set_test_filter(getenv("SOCKD_TLSIT_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
