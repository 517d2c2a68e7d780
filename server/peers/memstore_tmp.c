/*
 * memstore_tmp.c - TEMPORARY: comm/comm.h's fxcm_memstore, so that the peer
 * KV builds and is tested before h/comm (which owns server/comm/ and
 * implements it for good) is merged. Deleted at that merge.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/status.h"
#include "base/util.h"
#include "comm/comm.h"

typedef struct kv {
    struct kv *next;
    char *key;
    void *val;
    size_t len;
} kv;

struct fxcm_memstore {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kv *head;
};

fxcm_memstore *fxcm_memstore_new(void)
{
    fxcm_memstore *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &a);
    pthread_condattr_destroy(&a);
    return m;
}

static void kv_free(kv *e)
{
    free(e->key);
    free(e->val);
    free(e);
}

void fxcm_memstore_free(fxcm_memstore *m)
{
    if (!m)
        return;
    for (kv *e = m->head, *n; e; e = n) {
        n = e->next;
        kv_free(e);
    }
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int ms_set(void *data, const char *key, const void *val, size_t len, char *err,
                  size_t errlen)
{
    fxcm_memstore *m = data;
    void *copy = malloc(len ? len : 1);
    if (!copy)
        return fxu_oom(err, errlen);
    if (len)
        memcpy(copy, val, len);
    pthread_mutex_lock(&m->mu);
    kv *e = m->head;
    while (e && strcmp(e->key, key) != 0)
        e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->key = strdup(key))) {
            pthread_mutex_unlock(&m->mu);
            free(e);
            free(copy);
            return fxu_oom(err, errlen);
        }
        e->next = m->head;
        m->head = e;
    }
    free(e->val);
    e->val = copy;
    e->len = len;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return 0;
}

static int ms_get(void *data, const char *key, void **val, size_t *len, int64_t timeout_ms,
                  char *err, size_t errlen)
{
    fxcm_memstore *m = data;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&m->mu);
    for (;;) {
        kv *e = m->head;
        while (e && strcmp(e->key, key) != 0)
            e = e->next;
        if (e) {
            *val = malloc(e->len ? e->len : 1);
            *len = e->len;
            if (*val && e->len)
                memcpy(*val, e->val, e->len);
            pthread_mutex_unlock(&m->mu);
            return *val ? 0 : fxu_oom(err, errlen);
        }
        if (pthread_cond_timedwait(&m->cv, &m->mu, &until) == ETIMEDOUT) {
            pthread_mutex_unlock(&m->mu);
            return fxu_fail(err, errlen, FXS_DEADLINE_EXCEEDED,
                            "rendezvous: key '%.200s' not set within %lld ms", key,
                            (long long)timeout_ms);
        }
    }
}

fxcm_store fxcm_memstore_store(fxcm_memstore *m)
{
    return (fxcm_store){ .set = ms_set, .get = ms_get, .data = m };
}

void fxcm_memstore_drop_prefix(fxcm_memstore *m, const char *prefix)
{
    size_t n = strlen(prefix);
    pthread_mutex_lock(&m->mu);
    for (kv **pp = &m->head; *pp;) {
        if (strncmp((*pp)->key, prefix, n) == 0) {
            kv *e = *pp;
            *pp = e->next;
            kv_free(e);
        } else {
            pp = &(*pp)->next;
        }
    }
    pthread_mutex_unlock(&m->mu);
}
