/* stats.c - serving's statistics records: see stats_internal.h. */
#include "serving/stats_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"

/* Seconds: 100 us (a tiny model on the CPU) to a minute (a large batch). */
const double fxsv_duration_bounds_s[FXSV_DURATION_BOUNDS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10, 60,
};
const double fxsv_batch_bounds[FXSV_BATCH_BOUNDS] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024 };

/* The bounds in ns, so a request compares integers only. */
static const uint64_t bounds_ns[FXSV_DURATION_BOUNDS] = {
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
    100000000, 250000000, 1000000000, 10000000000ULL, 60000000000ULL,
};

struct fxsv_record {
    atomic_int refs;
    atomic_int in_flight;
    char *name;
    int64_t version;
    pthread_mutex_t mu; /* the figures below */
    fxsv_stats stats;
    uint64_t requests[FXSV_CODES];
    fxsv_duration_hist request, queue, compute;
    uint64_t batch_counts[FXSV_BATCH_BOUNDS + 1], batch_samples;
    uint64_t loads, unloads;
    struct fxsv_record *next; /* in the registry (its mu) */
};

struct fxsv_records {
    pthread_mutex_t mu;
    fxsv_record *head; /* sorted by name, then version */
};

fxsv_records *fxsv_records_new(void)
{
    fxsv_records *r = calloc(1, sizeof *r);
    if (r)
        pthread_mutex_init(&r->mu, NULL);
    return r;
}

void fxsv_record_unref(fxsv_record *rec)
{
    if (!rec || atomic_fetch_sub(&rec->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&rec->mu);
    free(rec->name);
    free(rec);
}

void fxsv_records_free(fxsv_records *r)
{
    if (!r)
        return;
    while (r->head) {
        fxsv_record *rec = r->head;
        r->head = rec->next;
        fxsv_record_unref(rec);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int order(const fxsv_record *rec, const char *name, int64_t version)
{
    int c = strcmp(rec->name, name);
    return c ? c : (rec->version > version) - (rec->version < version);
}

fxsv_record *fxsv_record_get(fxsv_records *r, const char *name, int64_t version)
{
    pthread_mutex_lock(&r->mu);
    fxsv_record **pp = &r->head;
    while (*pp && order(*pp, name, version) < 0)
        pp = &(*pp)->next;
    fxsv_record *rec = *pp;
    if (!rec || order(rec, name, version) != 0) {
        rec = calloc(1, sizeof *rec);
        if (rec && !(rec->name = strdup(name))) {
            free(rec);
            rec = NULL;
        }
        if (rec) {
            atomic_init(&rec->refs, 1); /* the registry's */
            rec->version = version;
            pthread_mutex_init(&rec->mu, NULL);
            rec->next = *pp;
            *pp = rec;
        }
    }
    if (rec)
        atomic_fetch_add(&rec->refs, 1);
    pthread_mutex_unlock(&r->mu);
    return rec;
}

/* Drops the registry's references to name's records whose version is not
 * one of keep[0..n_keep) (n_keep < 0: every version). */
static void forget(fxsv_records *r, const char *name, const int64_t *keep, int n_keep)
{
    fxsv_record *gone = NULL;
    pthread_mutex_lock(&r->mu);
    for (fxsv_record **pp = &r->head; *pp;) {
        bool kept = false;
        for (int i = 0; i < n_keep && !kept; i++)
            kept = (*pp)->version == keep[i];
        if (!kept && strcmp((*pp)->name, name) == 0) {
            fxsv_record *rec = *pp;
            *pp = rec->next;
            rec->next = gone;
            gone = rec;
        } else {
            pp = &(*pp)->next;
        }
    }
    pthread_mutex_unlock(&r->mu);
    while (gone) { /* instances in flight keep theirs until they end */
        fxsv_record *rec = gone;
        gone = rec->next;
        fxsv_record_unref(rec);
    }
}

void fxsv_records_forget(fxsv_records *r, const char *name)
{
    forget(r, name, NULL, -1);
}

void fxsv_records_keep(fxsv_records *r, const char *name, const int64_t *versions, int n)
{
    forget(r, name, versions, n < 0 ? 0 : n);
}

static void add(fxsv_duration *d, uint64_t ns)
{
    d->count++;
    d->ns += ns;
}

static void observe(fxsv_duration_hist *h, uint64_t ns)
{
    int i = 0;
    while (i < FXSV_DURATION_BOUNDS && ns > bounds_ns[i])
        i++;
    h->counts[i]++;
    h->sum_ns += ns;
}

void fxsv_record_request(fxsv_record *rec, int code, const fxb_timing *t, uint64_t samples)
{
    uint64_t compute = t->input_ns + t->infer_ns + t->output_ns;
    uint64_t total = t->queue_ns + compute;
    if (code < 0 || code >= FXSV_CODES)
        code = FXS_UNKNOWN;
    uint64_t now_ms = code ? 0 : (uint64_t)fxu_now_ms(); /* outside the lock */
    pthread_mutex_lock(&rec->mu);
    fxsv_stats *s = &rec->stats;
    rec->requests[code]++;
    if (code) {
        add(&s->fail, total);
        pthread_mutex_unlock(&rec->mu);
        return;
    }
    s->last_inference_ms = now_ms;
    s->inference_count += samples;
    add(&s->success, total);
    add(&s->queue, t->queue_ns);
    add(&s->input, t->input_ns);
    add(&s->infer, t->infer_ns);
    add(&s->output, t->output_ns);
    observe(&rec->request, total);
    observe(&rec->queue, t->queue_ns);
    observe(&rec->compute, compute);
    pthread_mutex_unlock(&rec->mu);
}

void fxsv_record_batch(fxsv_record *rec, const fxb_timing *t)
{
    int b = 0;
    while (b < FXSV_BATCH_BOUNDS && (double)t->batch_size > fxsv_batch_bounds[b])
        b++;
    pthread_mutex_lock(&rec->mu);
    fxsv_stats *s = &rec->stats;
    s->execution_count++;
    rec->batch_counts[b]++;
    rec->batch_samples += t->batch_size;
    int i = 0;
    while (i < s->n_batch && s->batch[i].batch_size < t->batch_size)
        i++;
    if (i == s->n_batch || s->batch[i].batch_size != t->batch_size) {
        if (s->n_batch == (int)(sizeof s->batch / sizeof s->batch[0])) {
            pthread_mutex_unlock(&rec->mu); /* table full: only totals count */
            return;
        }
        memmove(&s->batch[i + 1], &s->batch[i], sizeof s->batch[0] * (size_t)(s->n_batch - i));
        memset(&s->batch[i], 0, sizeof s->batch[i]);
        s->batch[i].batch_size = t->batch_size;
        s->n_batch++;
    }
    add(&s->batch[i].input, t->input_ns);
    add(&s->batch[i].infer, t->infer_ns);
    add(&s->batch[i].output, t->output_ns);
    pthread_mutex_unlock(&rec->mu);
}

void fxsv_record_loaded(fxsv_record *rec)
{
    pthread_mutex_lock(&rec->mu);
    rec->loads++;
    pthread_mutex_unlock(&rec->mu);
}

void fxsv_record_unloaded(fxsv_record *rec)
{
    pthread_mutex_lock(&rec->mu);
    rec->unloads++;
    pthread_mutex_unlock(&rec->mu);
}

void fxsv_record_in_flight(fxsv_record *rec, int delta) { atomic_fetch_add(&rec->in_flight, delta); }

void fxsv_record_stats(fxsv_record *rec, fxsv_stats *out)
{
    pthread_mutex_lock(&rec->mu);
    *out = rec->stats;
    pthread_mutex_unlock(&rec->mu);
}

int fxsv_records_snapshot(fxsv_records *r, fxsv_model_metrics **out, int *n)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&r->mu);
    int count = 0;
    for (fxsv_record *rec = r->head; rec; rec = rec->next)
        count++;
    fxsv_model_metrics *arr = calloc((size_t)count + 1, sizeof *arr);
    int k = 0;
    for (fxsv_record *rec = r->head; arr && rec; rec = rec->next, k++) {
        fxsv_model_metrics *m = &arr[k];
        if (!(m->name = strdup(rec->name))) {
            fxsv_model_metrics_free(arr, k);
            arr = NULL;
            break;
        }
        m->version = rec->version;
        m->in_flight = atomic_load(&rec->in_flight);
        pthread_mutex_lock(&rec->mu);
        m->stats = rec->stats;
        memcpy(m->requests, rec->requests, sizeof m->requests);
        m->request = rec->request;
        m->queue = rec->queue;
        m->compute = rec->compute;
        memcpy(m->batch_counts, rec->batch_counts, sizeof m->batch_counts);
        m->batch_samples = rec->batch_samples;
        m->loads = rec->loads;
        m->unloads = rec->unloads;
        pthread_mutex_unlock(&rec->mu);
    }
    pthread_mutex_unlock(&r->mu);
    if (!arr)
        return FXS_RESOURCE_EXHAUSTED;
    *out = arr;
    *n = k;
    return 0;
}

void fxsv_model_metrics_free(fxsv_model_metrics *m, int n)
{
    for (int i = 0; m && i < n; i++)
        free(m[i].name);
    free(m);
}
