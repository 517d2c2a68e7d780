/*
 * ranks.h - data-parallel ranks across daemons (prefix fxj_; docs/
 * distributed.md "Peers" and "Faults").
 *
 * Member side (job_rank.c): the ranks this daemon runs for another
 * daemon's job (PeerService StartRank): each a thread that forms its comm
 * through the coordinator's rendezvous store (peers/peers.h
 * fxpr_remote_store) and runs fxt_run as rank r of the world. Admission:
 * at most max_ranks at once (fluxiond --cpu-slots); past it StartRank is
 * answered RESOURCE_EXHAUSTED at once (the coordinator releases the rest of
 * its world and retries later). These ranks do not go through this
 * daemon's job scheduler (see docs/distributed.md, "Faults": what is left).
 *
 * Coordinator side (job_peers.c, called by job_run.c): a job whose
 * placement names peers: rank 0 here, the others started on the peers with
 * StartRank, all or nothing.
 *
 * The datasets travel as safetensors bytes of their columns
 * (fxj_columns_encode / fxj_columns_decode).
 */
#ifndef FXJ_RANKS_H
#define FXJ_RANKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "datasets/columns.h"
#include "fluxion/v1/model.pb-c.h"
#include "fluxion/v1/peer.pb-c.h"
#include "fluxion/v1/training.pb-c.h"
#include "peers/peers.h"

/* The collectives' timeout of a world across daemons: a rank that dies is
 * noticed within it. */
#define FXJ_PEER_COMM_TIMEOUT_MS 15000

typedef struct fxj_ranks fxj_ranks;
struct fxj_jobs;

/* The jobs whose scheduler admits the ranks (set once, before the first
 * StartRank; NULL: only the --cpu-slots cap). The jobs must outlive rs. */
void fxj_ranks_set_jobs(fxj_ranks *rs, struct fxj_jobs *j);

int fxj_ranks_new(fxpr_peers *peers, int max_ranks, uint64_t max_params, fxj_ranks **out,
                  char *err, size_t errlen);
/* Stops every rank (their comms aborted) and waits for their threads. */
void fxj_ranks_free(fxj_ranks *rs);

/* Starts a rank: first is StartRank's first message (assignment, specs),
 * the blobs what followed. Builds the graph, decodes the data and starts
 * the rank's thread; answers before the world forms. *rank_id: malloc. */
int fxj_rank_start(fxj_ranks *rs, const Fluxion__V1__StartRankChunk *first, const void *weights,
                   size_t weights_len, const void *resume, size_t resume_len, const void *train,
                   size_t train_len, const void *val, size_t val_len, char **rank_id, char *err,
                   size_t errlen);
/* Stops a rank (its comm aborted: the others' collectives fail too). */
int fxj_rank_stop(fxj_ranks *rs, const char *rank_id, const char *reason, char *err,
                  size_t errlen);
/* "RUNNING", "DONE", "LOST", "FAILED", "STOPPED"; why: the error. */
int fxj_rank_status(fxj_ranks *rs, const char *rank_id, char *state, size_t statelen, char *why,
                    size_t whylen, int64_t *step, char *err, size_t errlen);
/* Ranks running now. */
int fxj_ranks_running(fxj_ranks *rs);

/* ------------------------------------------------------------ columns */

/* The columns as safetensors bytes (*out: malloc). */
int fxj_columns_encode(const fxds_columns *c, void **out, size_t *len, char *err, size_t errlen);
/* Decoded columns: free with fxj_columns_free. INVALID_ARGUMENT for bytes
 * that are not safetensors, or columns of different sample counts. */
typedef struct fxj_columns fxj_columns;
int fxj_columns_decode(const void *buf, size_t len, fxj_columns **out, char *err,
                       size_t errlen);
const fxds_columns *fxj_columns_get(const fxj_columns *c);
void fxj_columns_free(fxj_columns *c);

#endif
