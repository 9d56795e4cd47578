#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stddef.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "keygen.h"

/*
 * One thread, started by the first RSA request, keeps one key per size ready. It touches no
 * file and no loop state: only the slots below, under the mutex. The loop never waits for it
 * but at shutdown, where the key in the making is abandoned through OpenSSL's keygen callback.
 */

struct keygen_slot {
    int bits;
    EVP_PKEY *ready; /* made by the thread, not taken yet */
    int wanted;      /* a key of this size was asked for: keep one ready */
    int made;        /* one of this size was made, here or by the thread */
};

static struct keygen_slot keygen_slots[] = {{2048, NULL, 0, 0}, {3072, NULL, 0, 0}};
#define KEYGEN_NSLOTS (sizeof keygen_slots / sizeof keygen_slots[0])
static pthread_mutex_t keygen_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t keygen_cv = PTHREAD_COND_INITIALIZER;
static pthread_t keygen_thread;
static int keygen_started, keygen_stopping;

/* OpenSSL's progress callback: 0 abandons the key in the making. */
static int
keygen_progress(EVP_PKEY_CTX *ctx)
{
    (void)ctx;
    return !__atomic_load_n(&keygen_stopping, __ATOMIC_SEQ_CST);
}

/* A new RSA key of bits, NULL on failure or when abandoned. */
static EVP_PKEY *
keygen_make(int bits)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *k = NULL;
    if (c != NULL && EVP_PKEY_keygen_init(c) == 1 &&
        EVP_PKEY_CTX_set_rsa_keygen_bits(c, bits) == 1) {
        EVP_PKEY_CTX_set_cb(c, keygen_progress);
        if (EVP_PKEY_keygen(c, &k) != 1)
            k = NULL;
    }
    EVP_PKEY_CTX_free(c);
    return k;
}

/* The slot a thread should fill next (locked), NULL if none. */
static struct keygen_slot *
keygen_next(void)
{
    for (size_t i = 0; i < KEYGEN_NSLOTS; i++)
        if (keygen_slots[i].wanted && keygen_slots[i].ready == NULL)
            return &keygen_slots[i];
    return NULL;
}

static void *
keygen_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&keygen_mu);
    while (!keygen_stopping) {
        struct keygen_slot *s = keygen_next();
        if (s == NULL) {
            pthread_cond_wait(&keygen_cv, &keygen_mu);
            continue;
        }
        int bits = s->bits;
        pthread_mutex_unlock(&keygen_mu);
        EVP_PKEY *k = keygen_make(bits);
        ERR_clear_error(); /* this thread's queue */
        pthread_mutex_lock(&keygen_mu);
        if (k == NULL || keygen_stopping) {
            EVP_PKEY_free(k);
            s->wanted = 0; /* a failure is not retried in a loop; the next request asks again */
            continue;
        }
        s->ready = k;
        s->made = 1;
    }
    pthread_mutex_unlock(&keygen_mu);
    return NULL;
}

EVP_PKEY *
keygen_rsa(int bits, int *later)
{
    struct keygen_slot *s = NULL;
    EVP_PKEY *k;
    int first;

    *later = 0;
    for (size_t i = 0; i < KEYGEN_NSLOTS; i++)
        if (keygen_slots[i].bits == bits)
            s = &keygen_slots[i];
    if (s == NULL)
        return NULL;
    pthread_mutex_lock(&keygen_mu);
    k = s->ready;
    s->ready = NULL;
    s->wanted = 1;
    first = !s->made;
    s->made = 1;
    if (!keygen_started) {
        /* the thread takes no signal: they are the loop's (as for nbguard's thread) */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        keygen_started = pthread_create(&keygen_thread, NULL, keygen_main, NULL) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    pthread_cond_signal(&keygen_cv);
    pthread_mutex_unlock(&keygen_mu);
    if (k != NULL)
        return k;
    if (first)
        return keygen_make(bits); /* once per size and daemon: the loop waits this one time */
    *later = 1;
    return NULL;
}

void
keygen_shutdown(void)
{
    pthread_mutex_lock(&keygen_mu);
    __atomic_store_n(&keygen_stopping, 1, __ATOMIC_SEQ_CST);
    pthread_cond_signal(&keygen_cv);
    pthread_mutex_unlock(&keygen_mu);
    if (keygen_started)
        pthread_join(keygen_thread, NULL);
    keygen_started = 0;
    for (size_t i = 0; i < KEYGEN_NSLOTS; i++) {
        EVP_PKEY_free(keygen_slots[i].ready);
        keygen_slots[i].ready = NULL;
    }
}
