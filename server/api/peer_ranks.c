/*
 * peer_ranks.c - the ranks this daemon runs for other daemons' jobs
 * (api.h, "peer_ranks.c"): PeerService's StartRank/StopRank/RankStatus
 * handed to training/ranks.h.
 */
#include "api/api.h"
#include "base/status.h"
#include "base/util.h"
#include "training/ranks.h"

int fxa_rank_start(fxa_daemon *d, const Fluxion__V1__StartRankChunk *first, const void *weights,
                   size_t weights_len, const void *resume, size_t resume_len,
                   const void *train, size_t train_len, const void *val, size_t val_len,
                   char **rank_id, char *err, size_t errlen)
{
    if (!d->ranks)
        return fxu_fail(err, errlen, FXS_UNAVAILABLE, "this daemon takes no ranks now");
    return fxj_rank_start(d->ranks, first, weights, weights_len, resume, resume_len, train,
                          train_len, val, val_len, rank_id, err, errlen);
}

int fxa_rank_stop(fxa_daemon *d, const char *rank_id, const char *reason, char *err,
                  size_t errlen)
{
    if (!d->ranks)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "no rank '%.64s' on this daemon", rank_id);
    return fxj_rank_stop(d->ranks, rank_id, reason, err, errlen);
}

int fxa_rank_status(fxa_daemon *d, const char *rank_id, char *state, size_t statelen,
                    char *why, size_t whylen, int64_t *step, char *err, size_t errlen)
{
    if (!d->ranks)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "no rank '%.64s' on this daemon", rank_id);
    return fxj_rank_status(d->ranks, rank_id, state, statelen, why, whylen, step, err, errlen);
}
