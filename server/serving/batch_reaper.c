/* batch_reaper.c - the batcher's reaper thread (batcher_internal.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "base/status.h"
#include "serving/batcher_internal.h"

void fxb__timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t until_mono)
{
    struct timespec ts = { .tv_sec = until_mono / 1000000000, .tv_nsec = until_mono % 1000000000 };
    pthread_cond_timedwait(cv, mu, &ts);
}

/* Answers every request whose deadline passed; sleeps until the next one. */
void *fxb__reaper_main(void *arg)
{
    fxb_batcher *b = arg;
    fxb__tl_batcher = b;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        int64_t now = (int64_t)fxb_mono_ns(), next = INT64_MAX;
        req *expired = NULL;   /* queued ones, linked through next */
        struct { fxb_done_fn done; void *user; } late[64]; /* running ones */
        int n_late = 0;
        for (uint32_t l = 0; l < b->c.priority_levels; l++)
            for (req *q = b->lv[l].head, *nx; q; q = nx) {
                nx = q->next;
                if (q->deadline <= now) {
                    fxb__unlink_req(b, q);
                    atomic_store(&q->state, RQ_DONE);
                    atomic_fetch_sub(&b->pressure, 1);
                    q->next = expired;
                    expired = q;
                } else if (q->deadline < next) {
                    next = q->deadline;
                }
            }
        for (batch *bt = b->running; bt; bt = bt->next)
            for (int j = 0; j < bt->n; j++) {
                req *q = bt->r[j];
                int st = atomic_load(&q->state);
                if (st == RQ_DONE)
                    continue;
                if (q->deadline <= now && st == RQ_RUNNING && n_late < 64) {
                    int expect = RQ_RUNNING;
                    /* copied: the instance frees q once its batch ends */
                    if (atomic_compare_exchange_strong(&q->state, &expect, RQ_DONE)) {
                        late[n_late++] = (typeof(late[0])){ q->r.done, q->r.user };
                        atomic_fetch_sub(&b->pressure, 1);
                    }
                } else if (q->deadline <= now) {
                    next = now + 100000; /* still copying its inputs: look again soon */
                } else if (q->deadline < next) {
                    next = q->deadline;
                }
            }
        if (!expired && !n_late && b->stop && !b->running && b->n_queued == 0)
            break;
        if (!expired && !n_late) {
            b->reaper_wake = next;
            if (next == INT64_MAX)
                pthread_cond_wait(&b->reaper_cv, &b->mu);
            else
                fxb__timed_wait(&b->reaper_cv, &b->mu, next);
            b->reaper_wake = 0;
            continue;
        }
        pthread_mutex_unlock(&b->mu);
        for (int j = 0; j < n_late; j++) {
            fxb_timing tm = { .queue_ns = 0 };
            late[j].done(late[j].user, FXS_DEADLINE_EXCEEDED,
                         "the request's deadline passed while its batch ran", NULL, &tm);
        }
        while (expired) {
            req *q = expired;
            expired = q->next;
            fxb_timing tm = { .queue_ns = fxb_mono_ns() - q->received };
            q->r.done(q->r.user, FXS_DEADLINE_EXCEEDED,
                      "the request's deadline passed while it waited in the queue", NULL, &tm);
            free(q);
        }
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    fxb__release(b);
    return NULL;
}

