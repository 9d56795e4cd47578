/* b64_bench: the throughput of sockd's base64 codec (src/b64.c), scalar against vector.
 *
 * Not run by `run`; built by hand from the top of the tree (an empty config.h will do):
 *
 *   : >/tmp/config.h && cc -O2 -Wall -I/tmp -Isrc -o /tmp/b64_bench tests/bench/b64_bench.c
 * src/b64.c /tmp/b64_bench [-r RUNS] [-i ITERS] [SIZE...]
 *
 * For each payload SIZE (bytes; default 4096 and 65536) it encodes SIZE random bytes and
 * decodes the text back (the strict decoder, every check included), ITERS times per run
 * (default: about 64 MiB of payload per run), RUNS runs (default 200), with the scalar
 * code forced and with the path the CPU allows, the two interleaved run by run so both see
 * the same machine. It prints the minimum over the runs, per call in microseconds and as
 * MiB/s of payload (the bytes, not the text), and the ratio. Each decoded buffer is
 * compared with the input once, so a wrong path cannot look fast.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "b64.h"
#include "bench.h"

/* Defeats the compiler's knowledge of the results. */
static volatile size_t sink;

int
main(int argc, char **argv)
{
    int runs = 200, iters = 0, c;
    while ((c = getopt(argc, argv, "r:i:")) != -1) {
        switch (c) {
        case 'r':
            runs = atoi(optarg);
            break;
        case 'i':
            iters = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: b64_bench [-r RUNS] [-i ITERS] [SIZE...]\n");
            return 2;
        }
    }
    size_t sizes[16] = {4096, 65536};
    int nsizes = 2;
    if (optind < argc) {
        nsizes = 0;
        for (int a = optind; a < argc && nsizes < 16; a++)
            sizes[nsizes++] = (size_t)strtoul(argv[a], NULL, 10);
    }
    b64_force_scalar(0);
    printf("vector path on this CPU: %s; min of %d runs\n", b64_path(), runs);
    printf("%8s %-7s %12s %12s %12s %12s %7s\n", "size", "op", "scalar us", "vector us",
           "scalar MiB/s", "vector MiB/s", "ratio");
    for (int k = 0; k < nsizes; k++) {
        size_t n = sizes[k];
        int it = iters > 0 ? iters : (int)((64u << 20) / (n ? n : 1)) / 16 + 1;
        unsigned char *plain = malloc(n + 1), *back = malloc(n + 3);
        char *text = malloc(b64_encoded_len(n) + 1);
        if (plain == NULL || back == NULL || text == NULL)
            return 1;
        unsigned s = 12345;
        for (size_t i = 0; i < n; i++)
            plain[i] = (unsigned char)((s = s * 1103515245u + 12345u) >> 16);
        size_t tl = b64_encode(plain, n, text);
        double best[2][2] = {{1e9, 1e9},
                             {1e9, 1e9}}; /* [op][path]: encode, decode x scalar, vector */
        for (int r = 0; r < runs; r++) {
            for (int path = 0; path < 2; path++) {
                b64_force_scalar(path == 0);
                double t0 = now();
                for (int i = 0; i < it; i++)
                    sink += b64_encode(plain, n, text);
                double t1 = now();
                for (int i = 0; i < it; i++)
                    sink += (size_t)b64_decode(text, tl, back);
                double t2 = now();
                if (r == 0 && (b64_decode(text, tl, back) != (long)n || memcmp(back, plain, n))) {
                    fprintf(stderr, "b64_bench: %s path does not decode back\n", b64_path());
                    return 3;
                }
                if ((t1 - t0) / it < best[0][path])
                    best[0][path] = (t1 - t0) / it;
                if ((t2 - t1) / it < best[1][path])
                    best[1][path] = (t2 - t1) / it;
            }
        }
        b64_force_scalar(0);
        for (int op = 0; op < 2; op++)
            printf("%8zu %-7s %12.3f %12.3f %12.0f %12.0f %6.2fx\n", n, op ? "decode" : "encode",
                   best[op][0] * 1e6, best[op][1] * 1e6, n / best[op][0] / 1048576.0,
                   n / best[op][1] / 1048576.0, best[op][0] / best[op][1]);
        free(plain);
        free(back);
        free(text);
    }
    return 0;
}
