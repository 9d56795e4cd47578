/*
 * RSA keys for context.generate_certificate, made by a thread off the loop (sockd-protocol.7,
 * context.generate_certificate): making one takes from a tenth of a second to seconds, long
 * enough to stall every client if the loop did it.
 */
#ifndef SOCKD_KEYGEN_H
#define SOCKD_KEYGEN_H

#include <openssl/evp.h>

/*
 * An RSA key of bits (2048 or 3072), the caller's. The first one of a size is made on the spot,
 * once per daemon; after that they come from the thread, which keeps one of each size ready
 * and makes the next when one is taken. NULL with *later set when none is ready yet (try
 * again), NULL alone when OpenSSL failed.
 */
EVP_PKEY *keygen_rsa(int bits, int *later);
/* Stop the thread (a key in the making is abandoned) and free the keys kept. */
void keygen_shutdown(void);

#endif
