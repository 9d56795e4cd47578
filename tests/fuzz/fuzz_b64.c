/* Fuzz target: the table-driven base64 codec against OpenSSL's EVP block coder (b64_ref.h). */
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
    unsigned char *back = malloc(el / 4 * 3 + 1);
    if (text == NULL || ref == NULL || a == NULL || b == NULL || back == NULL)
        abort();

    /* the input as bytes: the same text as EVP, and it decodes back */
    size_t tl = b64_encode(data, size, text), rl = b64_ref_encode(data, size, ref);
    if (tl != el || tl != rl || memcmp(text, ref, tl) != 0 || text[tl] != '\0')
        abort();
    if (b64_decode(text, tl, back) != (long)size || (size > 0 && memcmp(back, data, size) != 0))
        abort();

    /* the input as text: the same verdict and bytes as the strict reference */
    long ra = b64_decode((const char *)data, size, a);
    long rb = b64_ref_decode((const char *)data, size, b);
    if (ra != rb || (ra > 0 && memcmp(a, b, (size_t)ra) != 0))
        abort();

    free(text);
    free(ref);
    free(a);
    free(b);
    free(back);
    return 0;
}
