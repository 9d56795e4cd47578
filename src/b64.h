/* Base64 (RFC 4648, with padding), strict: the one canonical text for each byte string. */
#ifndef SOCKD_B64_H
#define SOCKD_B64_H

#include <stddef.h>

/* Characters needed to encode n bytes, without the terminating NUL. */
size_t b64_encoded_len(size_t n);
/* Encode n bytes into out (room for b64_encoded_len(n) + 1); returns the length written. */
size_t b64_encode(const void *in, size_t n, char *out);
/*
 * Decode text of length n into out (room for n / 4 * 3). Returns the decoded length, or -1
 * if the text is not canonical padded base64: a length that is not a multiple of 4, a byte
 * outside the alphabet (whitespace included), '=' anywhere but the last one or two places,
 * or padding that leaves nonzero bits over. One pass: validation and decoding are the same walk.
 */
long b64_decode(const char *in, size_t n, unsigned char *out);

/*
 * For tests and benchmarks: with on, every call takes the scalar code even where a vector
 * path exists; with 0, the choice made from the CPU again. b64_path() names the code the
 * next call takes: "avx2" or "scalar".
 */
void b64_force_scalar(int on);
const char *b64_path(void);

#endif
