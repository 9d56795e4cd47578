/*
 * dnsd: a tiny UDP DNS server for tests, on 127.0.0.1 (port chosen by the kernel), run in its own
 * thread. It answers A and AAAA questions from a table, NXDOMAIN (or another rcode) for chosen
 * names, and can hold a name's answers back for a while. Names not in the table get NXDOMAIN.
 *
 *     struct dnsd d;
 *     dnsd_start(&d);                      // d.port is now the UDP port
 *     dnsd_add_a(&d, "a.test", "192.0.2.1");
 *     dnsd_add_aaaa(&d, "a.test", "2001:db8::1");
 *     dnsd_set_rcode(&d, "nx.test", DNSD_NXDOMAIN);
 *     dnsd_set_delay(&d, "slow.test", 2000);
 *     ... resolver 127.0.0.1:<d.port> ...
 *     dnsd_stop(&d);
 *
 * The table functions may be called from any thread once dnsd_start has returned.
 */
#ifndef SOCKD_TEST_DNSD_H
#define SOCKD_TEST_DNSD_H

#include <pthread.h>
#include <sys/socket.h>

#define DNSD_MAX_NAMES 32
#define DNSD_MAX_ADDRS 16   /* of each family, per name */
#define DNSD_MAX_DELAYED 64 /* answers held back at once; more are dropped */

enum dnsd_rcode {
    DNSD_NOERROR = 0,
    DNSD_SERVFAIL = 2,
    DNSD_NXDOMAIN = 3,
    DNSD_REFUSED = 5,
};

struct dnsd_name {
    char name[256]; /* lower case, no trailing dot */
    int rcode;
    unsigned delay_ms;
    unsigned queries;
    int na, naaaa;
    unsigned char a[DNSD_MAX_ADDRS][4];
    unsigned char aaaa[DNSD_MAX_ADDRS][16];
};

struct dnsd_delayed {
    long long due_ms;
    struct sockaddr_storage to;
    unsigned tolen;
    unsigned len;
    unsigned char pkt[512];
};

struct dnsd {
    unsigned short port; /* set by dnsd_start */
    /* private */
    int fd;
    int wake[2];
    pthread_t thread;
    pthread_mutex_t lock;
    unsigned queries;
    int nnames;
    struct dnsd_name names[DNSD_MAX_NAMES];
    int ndelayed;
    struct dnsd_delayed delayed[DNSD_MAX_DELAYED];
};

/* Clear d, bind 127.0.0.1:0/udp and start answering. Returns 0, or -1 (errno set). */
int dnsd_start(struct dnsd *d);
/* Stop the thread and close the socket; held-back answers are dropped. */
void dnsd_stop(struct dnsd *d);
/* Add an address record for name (text IPv4 / IPv6). 0, or -1 if the table is full or bad text. */
int dnsd_add_a(struct dnsd *d, const char *name, const char *ipv4);
int dnsd_add_aaaa(struct dnsd *d, const char *name, const char *ipv6);
/* Answer every question for name with rcode (DNSD_NXDOMAIN...) and no records. */
int dnsd_set_rcode(struct dnsd *d, const char *name, int rcode);
/* Send name's answers delay_ms after each question arrives. */
int dnsd_set_delay(struct dnsd *d, const char *name, unsigned delay_ms);
/* Questions received in all, or for one name (any type). */
unsigned dnsd_queries(struct dnsd *d);
unsigned dnsd_name_queries(struct dnsd *d, const char *name);

#endif
