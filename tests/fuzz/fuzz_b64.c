/*
 * Fuzz target: the base64 codec against OpenSSL's EVP block coder (b64_ref.h), each input
 * through both of the codec's paths: the vector one (where the CPU has it) and the scalar
 * code forced with b64_force_scalar.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "../unit/b64_ref.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exact-size allocations, so the sanitizer sees any write past the documented room */
    size_t el = b64_encoded_len(size);
    char *text = malloc(el + 1), *ref = malloc(el + 1);
    unsigned char *a = malloc(size / 4 * 3 + 1), *b = malloc(size / 4 * 3 + 3);
    unsigned char *back = malloc(el / 4 * 3 + 1), *b2 = malloc(el / 4 * 3 + 3);
    if (text == NULL || ref == NULL || a == NULL || b == NULL || back == NULL || b2 == NULL)
        abort();

    size_t rl = b64_ref_encode(data, size, ref);
    long rb = b64_ref_decode((const char *)data, size, b);
    for (int scalar = 0; scalar < 2; scalar++) {
        b64_force_scalar(scalar);
        /* the input as bytes: the same text as EVP, and it decodes back */
        size_t tl = b64_encode(data, size, text);
        if (tl != el || tl != rl || memcmp(text, ref, tl) != 0 || text[tl] != '\0')
            abort();
        if (b64_decode(text, tl, back) != (long)size || (size > 0 && memcmp(back, data, size) != 0))
            abort();

        /* the input as text: the same verdict and bytes as the strict reference */
        long ra = b64_decode((const char *)data, size, a);
        if (ra != rb || (ra > 0 && memcmp(a, b, (size_t)ra) != 0))
            abort();

        /* its encoding with one byte replaced (place and byte from the input's first three):
         * a long text that is valid but for one place, where random text fails at once */
        if (size >= 3) {
            size_t pos = ((size_t)data[0] | (size_t)data[1] << 8) % tl;
            text[pos] = (char)data[2];
            long rt = b64_ref_decode(text, tl, b2);
            long rc = b64_decode(text, tl, back);
            if (rc != rt || (rc > 0 && memcmp(back, b2, (size_t)rc) != 0))
                abort();
        }
    }
    b64_force_scalar(0);

    free(text);
    free(ref);
    free(a);
    free(b);
    free(back);
    free(b2);
    return 0;
}
