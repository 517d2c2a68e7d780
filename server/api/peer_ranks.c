/*
 * peer_ranks.c - the ranks this daemon runs for other daemons' jobs
 * (api.h, "peer_ranks.c"): PeerService's StartRank hands the assignment
 * here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/status.h"
#include "base/util.h"
#include "fluxion/v1/peer.pb-c.h"

int fxa_rank_start(fxa_daemon *d, const Fluxion__V1__StartRankChunk *first, const void *weights,
                   size_t weights_len, const void *resume, size_t resume_len,
                   const void *train, size_t train_len, const void *val, size_t val_len,
                   char **rank_id, char *err, size_t errlen)
{
    (void)d, (void)first, (void)weights, (void)weights_len, (void)resume, (void)resume_len;
    (void)train, (void)train_len, (void)val, (void)val_len;
    *rank_id = NULL;
    return fxu_fail(err, errlen, FXS_UNIMPLEMENTED,
                    "this daemon does not run ranks for other daemons yet");
}

int fxa_rank_stop(fxa_daemon *d, const char *rank_id, const char *reason, char *err,
                  size_t errlen)
{
    (void)d, (void)reason;
    return fxu_fail(err, errlen, FXS_NOT_FOUND, "no rank '%.64s' on this daemon", rank_id);
}

int fxa_rank_status(fxa_daemon *d, const char *rank_id, char *state, size_t statelen,
                    char *why, size_t whylen, int64_t *step, char *err, size_t errlen)
{
    (void)d, (void)state, (void)statelen, (void)why, (void)whylen, (void)step;
    return fxu_fail(err, errlen, FXS_NOT_FOUND, "no rank '%.64s' on this daemon", rank_id);
}
