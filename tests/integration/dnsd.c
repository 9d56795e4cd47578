/* dnsd: a tiny UDP DNS server for tests (see dnsd.h). Only ever binds 127.0.0.1. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dnsd.h"

#define DNSD_T_A 1
#define DNSD_T_AAAA 28
#define DNSD_TTL 60

static long long
dnsd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Canonical form of a name for the table: lower case, no trailing dot. */
static void
dnsd_canon(char *out, size_t outlen, const char *name)
{
    size_t i = 0;
    for (; name[i] && i + 1 < outlen; i++)
        out[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
    if (i > 0 && out[i - 1] == '.')
        i--;
    out[i] = '\0';
}

/* The entry for name (lock held); created if make is set. NULL if absent or the table is full. */
static struct dnsd_name *
dnsd_find(struct dnsd *d, const char *name, int make)
{
    char canon[256];
    dnsd_canon(canon, sizeof(canon), name);
    for (int i = 0; i < d->nnames; i++)
        if (strcmp(d->names[i].name, canon) == 0)
            return &d->names[i];
    if (!make || d->nnames == DNSD_MAX_NAMES)
        return NULL;
    struct dnsd_name *n = &d->names[d->nnames++];
    memset(n, 0, sizeof(*n));
    snprintf(n->name, sizeof(n->name), "%s", canon);
    return n;
}

/* Parse the question of a query; returns the offset just past it, or -1. */
static int
dnsd_parse_question(const unsigned char *q, int len, char *name, size_t namelen, int *qtype)
{
    int off = 12;
    size_t n = 0;
    if (len < 12 || (q[2] & 0x80) || q[4] != 0 || q[5] != 1)
        return -1; /* a response, or not exactly one question */
    while (off < len && q[off] != 0) {
        int l = q[off++];
        if ((l & 0xc0) || off + l > len || n + (size_t)l + 2 > namelen)
            return -1;
        if (n)
            name[n++] = '.';
        memcpy(name + n, q + off, (size_t)l);
        n += (size_t)l;
        off += l;
    }
    name[n] = '\0';
    if (off + 5 > len)
        return -1;
    off++; /* the root label */
    *qtype = q[off] << 8 | q[off + 1];
    return off + 4;
}

/* Append one answer record (name = pointer to the question) to pkt at *off. */
static void
dnsd_put_rr(unsigned char *pkt, int *off, int type, const unsigned char *rdata, int rdlen)
{
    unsigned char *p = pkt + *off;
    p[0] = 0xc0, p[1] = 12;
    p[2] = (unsigned char)(type >> 8), p[3] = (unsigned char)type;
    p[4] = 0, p[5] = 1;
    p[6] = 0, p[7] = 0, p[8] = 0, p[9] = DNSD_TTL;
    p[10] = 0, p[11] = (unsigned char)rdlen;
    memcpy(p + 12, rdata, (size_t)rdlen);
    *off += 12 + rdlen;
}

/* Build the answer to one query (lock held). Returns its length (0: ignore), and the delay. */
static int
dnsd_answer(struct dnsd *d, const unsigned char *q, int qlen, unsigned char *out,
            unsigned *delay_ms)
{
    char name[256];
    int qtype, qend, off, ancount = 0, rcode;
    struct dnsd_name *n;

    *delay_ms = 0;
    qend = dnsd_parse_question(q, qlen, name, sizeof(name), &qtype);
    if (qend < 0 || qend > 400)
        return 0;
    d->queries++;
    n = dnsd_find(d, name, 0);
    rcode = n ? n->rcode : DNSD_NXDOMAIN;
    memcpy(out, q, (size_t)qend);
    off = qend;
    if (n) {
        n->queries++;
        *delay_ms = n->delay_ms;
        if (rcode == DNSD_NOERROR && qtype == DNSD_T_A)
            for (int i = 0; i < n->na && off + 16 <= 512; i++, ancount++)
                dnsd_put_rr(out, &off, DNSD_T_A, n->a[i], 4);
        if (rcode == DNSD_NOERROR && qtype == DNSD_T_AAAA)
            for (int i = 0; i < n->naaaa && off + 28 <= 512; i++, ancount++)
                dnsd_put_rr(out, &off, DNSD_T_AAAA, n->aaaa[i], 16);
    }
    out[2] = (unsigned char)(0x80 | (q[2] & 0x79) | 0x04); /* QR, opcode, AA, RD */
    out[3] = (unsigned char)(0x80 | rcode);                /* RA, rcode */
    out[6] = (unsigned char)(ancount >> 8), out[7] = (unsigned char)ancount;
    out[8] = out[9] = out[10] = out[11] = 0; /* no authority, no additional (drops EDNS) */
    return off;
}

/* Send the held-back answers that are due; returns ms until the next one, or -1. */
static int
dnsd_flush(struct dnsd *d)
{
    long long now = dnsd_now_ms(), next = -1;
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < d->ndelayed;) {
        struct dnsd_delayed *p = &d->delayed[i];
        if (p->due_ms <= now) {
            (void)sendto(d->fd, p->pkt, p->len, 0, (struct sockaddr *)&p->to, p->tolen);
            d->delayed[i] = d->delayed[--d->ndelayed];
            continue;
        }
        if (next < 0 || p->due_ms - now < next)
            next = p->due_ms - now;
        i++;
    }
    pthread_mutex_unlock(&d->lock);
    return (int)next;
}

/* Read and answer every query waiting on the socket. */
static void
dnsd_serve(struct dnsd *d)
{
    unsigned char q[1500], out[512];
    struct sockaddr_storage from;
    socklen_t fromlen;
    ssize_t n;
    for (;;) {
        unsigned delay;
        int len;
        fromlen = sizeof(from);
        n = recvfrom(d->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fromlen);
        if (n < 0)
            return;
        pthread_mutex_lock(&d->lock);
        len = dnsd_answer(d, q, (int)n, out, &delay);
        if (len > 0 && delay > 0 && d->ndelayed < DNSD_MAX_DELAYED) {
            struct dnsd_delayed *p = &d->delayed[d->ndelayed++];
            p->due_ms = dnsd_now_ms() + delay;
            p->to = from;
            p->tolen = fromlen;
            p->len = (unsigned)len;
            memcpy(p->pkt, out, (size_t)len);
        } else if (len > 0 && delay == 0) {
            (void)sendto(d->fd, out, (size_t)len, 0, (struct sockaddr *)&from, fromlen);
        }
        pthread_mutex_unlock(&d->lock);
    }
}

static void *
dnsd_thread(void *arg)
{
    struct dnsd *d = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = d->fd, .events = POLLIN},
                              {.fd = d->wake[0], .events = POLLIN}};
        int wait = dnsd_flush(d);
        if (poll(p, 2, wait) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (p[0].revents)
            dnsd_serve(d);
    }
    return NULL;
}

int
dnsd_start(struct dnsd *d)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    memset(d, 0, sizeof(*d));
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->fd < 0)
        return -1;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(d->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        getsockname(d->fd, (struct sockaddr *)&sin, &len) < 0 || pipe2(d->wake, O_CLOEXEC) < 0) {
        int e = errno;
        close(d->fd);
        errno = e;
        return -1;
    }
    d->port = ntohs(sin.sin_port);
    pthread_mutex_init(&d->lock, NULL);
    if (pthread_create(&d->thread, NULL, dnsd_thread, d) != 0) {
        pthread_mutex_destroy(&d->lock);
        close(d->fd);
        close(d->wake[0]);
        close(d->wake[1]);
        errno = EAGAIN;
        return -1;
    }
    return 0;
}

void
dnsd_stop(struct dnsd *d)
{
    char c = 'x';
    if (write(d->wake[1], &c, 1) != 1)
        perror("dnsd: wake");
    pthread_join(d->thread, NULL);
    close(d->fd);
    close(d->wake[0]);
    close(d->wake[1]);
    pthread_mutex_destroy(&d->lock);
    d->fd = d->wake[0] = d->wake[1] = -1;
}

/* Add one address of family af to name. */
static int
dnsd_add(struct dnsd *d, const char *name, int af, const char *text)
{
    unsigned char bytes[16];
    struct dnsd_name *n;
    int rc = -1;
    if (inet_pton(af, text, bytes) != 1)
        return -1;
    pthread_mutex_lock(&d->lock);
    n = dnsd_find(d, name, 1);
    if (n && af == AF_INET && n->na < DNSD_MAX_ADDRS) {
        memcpy(n->a[n->na++], bytes, 4);
        rc = 0;
    } else if (n && af == AF_INET6 && n->naaaa < DNSD_MAX_ADDRS) {
        memcpy(n->aaaa[n->naaaa++], bytes, 16);
        rc = 0;
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

int
dnsd_add_a(struct dnsd *d, const char *name, const char *ipv4)
{
    return dnsd_add(d, name, AF_INET, ipv4);
}

int
dnsd_add_aaaa(struct dnsd *d, const char *name, const char *ipv6)
{
    return dnsd_add(d, name, AF_INET6, ipv6);
}

int
dnsd_set_rcode(struct dnsd *d, const char *name, int rcode)
{
    struct dnsd_name *n;
    pthread_mutex_lock(&d->lock);
    n = dnsd_find(d, name, 1);
    if (n)
        n->rcode = rcode & 0x0f;
    pthread_mutex_unlock(&d->lock);
    return n ? 0 : -1;
}

int
dnsd_set_delay(struct dnsd *d, const char *name, unsigned delay_ms)
{
    struct dnsd_name *n;
    pthread_mutex_lock(&d->lock);
    n = dnsd_find(d, name, 1);
    if (n)
        n->delay_ms = delay_ms;
    pthread_mutex_unlock(&d->lock);
    return n ? 0 : -1;
}

unsigned
dnsd_queries(struct dnsd *d)
{
    unsigned n;
    pthread_mutex_lock(&d->lock);
    n = d->queries;
    pthread_mutex_unlock(&d->lock);
    return n;
}

unsigned
dnsd_name_queries(struct dnsd *d, const char *name)
{
    struct dnsd_name *n;
    unsigned count = 0;
    pthread_mutex_lock(&d->lock);
    n = dnsd_find(d, name, 0);
    if (n)
        count = n->queries;
    pthread_mutex_unlock(&d->lock);
    return count;
}
