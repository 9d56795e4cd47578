/*
 * conn_bench: sequential TCP connections, for the sockctl run group of tests/bench/run.
 *
 *   conn_bench -p PORT [-d SECONDS] [-n MAX]
 *   conn_bench -l [-T LIFETIME]
 *
 * Connects to 127.0.0.1:PORT and closes, one connection at a time, until SECONDS pass or MAX
 * connections were made (bounded either way), and prints one line:
 *   conns=N secs=S cps=R cpu_us=C
 * with C its own CPU time (user + system) per connection. With -l it is the far end instead: it
 * listens on 127.0.0.1 (a free port), prints "port=PORT", and accepts and closes connections
 * until killed or LIFETIME seconds (default 3600) pass.
 */
#include <arpa/inet.h>
#include <poll.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* The far end: accept and close, as fast as connections come. */
static int
conn_serve(double lifetime)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof sin;
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0) {
        perror("conn_bench: listen");
        return 1;
    }
    printf("port=%d\n", ntohs(sin.sin_port));
    fflush(stdout);
    double end = now() + lifetime;
    while (now() < end) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, 1000) != 1)
            continue;
        int c = accept(lfd, NULL, NULL);
        if (c >= 0)
            close(c);
    }
    return 0;
}

int
main(int argc, char **argv)
{
    int port = 0, opt;
    double secs = 2, lifetime = 3600;
    unsigned long max = 5000, n = 0;
    int serve = 0;
    while ((opt = getopt(argc, argv, "p:d:n:lT:")) != -1) {
        if (opt == 'l')
            serve = 1;
        else if (opt == 'T')
            lifetime = atof(optarg);
        else if (opt == 'p')
            port = atoi(optarg);
        else if (opt == 'd')
            secs = atof(optarg);
        else if (opt == 'n')
            max = strtoul(optarg, NULL, 10);
        else
            return 2;
    }
    if (serve)
        return conn_serve(lifetime > 0 && lifetime <= 86400 ? lifetime : 3600);
    if (port <= 0 || secs <= 0 || secs > 600 || max == 0) {
        fprintf(stderr, "usage: conn_bench -p PORT [-d SECONDS] [-n MAX] | -l [-T LIFETIME]\n");
        return 2;
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    double t0 = now(), t = t0;
    while (n < max && (t = now()) - t0 < secs) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
            perror("conn_bench: connect");
            return 1;
        }
        close(fd);
        n++;
    }
    t = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    printf("conns=%lu secs=%.3f cps=%.0f cpu_us=%.1f\n", n, t, (double)n / t, cpu / (double)n);
    return 0;
}
