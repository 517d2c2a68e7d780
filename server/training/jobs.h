/*
 * jobs.h - training jobs. The jobs module owns a training job from its
 * submission to its result: a queue kept in the store's jobs table and
 * ordered by the scheduler core (sched/sched.h: priorities, team quotas,
 * fair share, preemption), a thread per running job (train.h), checkpoints
 * under DIR/jobs/<id>/,
 * TensorBoard events under DIR/jobs/<id>/tb/, live progress for watchers,
 * and the result as a new model version. Serving it: when the model is
 * being served, the new version is served at once (as after ImportWeights);
 * spec.serve_when_done also starts serving a model that was not (and marks
 * it loaded in the store). Requests in flight keep the version they hold.
 *
 * Durability: state changes are committed before they are announced; a
 * RUNNING job found at start (crash, kill -9, power cut) resumes from its
 * last checkpoint, a QUEUED one waits its turn. A drain (fxj_jobs_stop)
 * checkpoints running jobs and leaves them RUNNING for the next start.
 *
 * Preemption: a running job the scheduler preempts writes a checkpoint at
 * its next step, goes back to QUEUED (PREEMPTED event: for whom) and later
 * resumes from it (RESUMED event), ending with the same weights as an
 * uninterrupted run. A queued job's Job.queue_position and wait_reason are
 * kept current (QUEUED_AT events, at most 4 a second per job).
 *
 * Files: jobs.c (start/stop, the state machine, submit/get/list/cancel),
 * job_sched.c (the scheduler core's glue: decisions, job threads, queue
 * positions, queue/update/set_team), job_events.c (events and the fxj_watch_*
 * watchers), job_store.c (the records in the store's jobs table),
 * job_run.c (running one job: its inputs, the training hooks, storing and
 * serving the result), jobs_internal.h (what they share, the lock order).
 */
#ifndef FXJ_JOBS_H
#define FXJ_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "datasets/datasets.h"
#include "serving/devices.h"
#include "fluxion/v1/training.pb-c.h"
#include "sched/sched.h"
#include "serving/serving.h"
#include "store/store.h"

typedef struct fxj_jobs fxj_jobs;

typedef struct {
    int workers;                   /* cpu slots: CPU jobs running at once; 0: 1 */
    int64_t checkpoint_every_steps; /* default for specs that say 0; 0: 500 */
    uint64_t max_params;           /* graph limit, as for serving */
    const fxsv_devices *devices;    /* enabled (outlives the module); NULL: cpu only */
    int64_t sched_half_life_ms;    /* usage decay (sched.h); 0: 1 hour */
    int64_t sched_min_run_ms;      /* no preemption before; 0: 60 s */
    /* A preempted job may run up to this many more steps to reach its own
     * next checkpoint (then stops there: one checkpoint, not two); 0: it
     * checkpoints at its next step boundary. */
    int64_t preempt_grace_steps;
    /* Inference first (training/yield.h, fluxiond --inference-first, default
     * on there; false here): a running job waits at its step boundaries
     * while requests for served models wait on its device, keeping at least
     * training_min_share ([0, 1], fluxiond's default 0.1) of the time. */
    bool inference_first;
    double training_min_share;
    /* The other daemons (peers/peers.h): jobs whose placement names them
     * run ranks there (job_peers.c, training/ranks.h). NULL: none. */
    struct fxpr_peers *peers;
} fxj_jobs_opts;

/* Starts the workers and resumes the stored RUNNING and QUEUED jobs: 0
 * with the module in *out, or a code (INVALID_ARGUMENT without a store or
 * datasets; RESOURCE_EXHAUSTED out of memory, disk or threads; INTERNAL
 * for other I/O errors) with *out NULL. sv may be NULL (nothing is
 * reloaded after training). */
int fxj_jobs_start(fxdb_store *st, fxds_datasets *ds, fxsv_serving *sv, const fxj_jobs_opts *opts,
                   fxj_jobs **out, char *err, size_t errlen);
/* Stops: running jobs checkpoint and stay RUNNING; watchers are woken
 * (fxj_watch_next then answers UNAVAILABLE). New submissions get
 * UNAVAILABLE. Idempotent; the module stays readable (get, list) until
 * fxj_jobs_free. */
void fxj_jobs_stop(fxj_jobs *j);
/* Stops (if not yet) and frees; every watch must be closed first. */
void fxj_jobs_free(fxj_jobs *j);

/* Validates (model, version, dataset, device, fxt_validate) and queues;
 * *job (free with fluxion__v1__job__free_unpacked) is the stored record.
 * spec.device is resolved again when the job starts ("gpu": the GPU with
 * the most free memory then); a device gone by then fails the job. */
int fxj_jobs_submit(fxj_jobs *j, const Fluxion__V1__JobSpec *spec, Fluxion__V1__Job **job,
                    char *err, size_t errlen);
int fxj_jobs_get(fxj_jobs *j, const char *id, Fluxion__V1__Job **job, char *err, size_t errlen);
int fxj_jobs_list(fxj_jobs *j, Fluxion__V1__JobState state, const char *model,
                  Fluxion__V1__Job ***jobs, int *n, char *err, size_t errlen);
/* QUEUED: cancelled at once; RUNNING: stops at the next step boundary.
 * FAILED_PRECONDITION for a job already finished. */
int fxj_jobs_cancel(fxj_jobs *j, const char *id, Fluxion__V1__Job **job, char *err,
                    size_t errlen);

/* A CANCELLED job queued again to continue from its checkpoint (kept when
 * it was cancelled), as a job found RUNNING at start: the same step, data
 * order and optimizer state, so the same final weights as an uninterrupted
 * run. FAILED_PRECONDITION for a job in another state or without a
 * checkpoint, NOT_FOUND, UNAVAILABLE while stopping. */
int fxj_jobs_resume(fxj_jobs *j, const char *id, Fluxion__V1__Job **job, char *err,
                    size_t errlen);

/* Scheduling (server/sched/sched.h, docs/scheduling.md). The core decides
 * which queued job runs where; each running job has a thread of its own.
 * Devices: "cpu" with opts.workers slots, each enabled GPU with 1 slot and
 * its memory. A team's configuration comes from the store's effective
 * quota when the module first meets the team; an admin's change is passed
 * on with fxj_jobs_set_team. */
void fxj_jobs_set_team(fxj_jobs *j, const char *team, const fxsc_team_cfg *cfg);
/* The same, read from the store's effective quota (after an admin changed
 * it); a quota that cannot be read leaves the defaults, logged. */
void fxj_jobs_team_changed(fxj_jobs *j, const char *team);
/* What the scheduler needs of an effective quota (one conversion for the
 * whole daemon). */
void fxj_team_cfg(const fxdb_quota *q, fxsc_team_cfg *cfg);
/* A snapshot of the queue (free with fxsc_view_free); the caller filters
 * by team. */
int fxj_jobs_queue(fxj_jobs *j, fxsc_view *out, char *err, size_t errlen);
/* A rank of a peer's job (training/ranks.h) admitted through this daemon's
 * scheduler (docs/distributed.md, "Peers"): submitted to the core as a job
 * of team FXJ_PEERS_TEAM (best-effort: no quota, so it never preempts this
 * daemon's jobs; not preemptible: a rank cannot checkpoint alone), 1 slot
 * on device ("" or NULL: cpu), and kept only when the very next decision
 * pass starts it; otherwise it leaves the core at once (no holding) and the
 * answer is RESOURCE_EXHAUSTED "no free slot on DEVICE of NODE: REASON"
 * (the coordinator releases its world and tries again later). *ticket: to
 * hand to fxj_jobs_release_rank when the rank ends. */
#define FXJ_PEERS_TEAM "@peers"
int fxj_jobs_admit_rank(fxj_jobs *j, const char *device, int64_t *ticket, char *err,
                        size_t errlen);
/* The rank's slot is free again (ticket 0: nothing). */
void fxj_jobs_release_rank(fxj_jobs *j, int64_t ticket);
/* A QUEUED job's priority (UNSPECIFIED: unchanged) and device (NULL or "":
 * unchanged; else as JobSpec.device). FAILED_PRECONDITION when it is not
 * queued, INVALID_ARGUMENT for a device this daemon does not have, NOT_FOUND.
 * *job gets the updated record. */
int fxj_jobs_update(fxj_jobs *j, const char *id, Fluxion__V1__JobPriority prio,
                    const char *device, Fluxion__V1__Job **job, char *err, size_t errlen);

/* Watching: a cursor over the job's events. The first fxj_watch_next gives
 * a SNAPSHOT; then every event in order (a slow watcher skips PROGRESS
 * events it missed, never STATE ones); 0 with *event NULL after the final
 * state was delivered. Blocks up to timeout_ms (returns 0, *event NULL,
 * *ended false when nothing came: check for cancellation and call again).
 * Free *event with fluxion__v1__job_event__free_unpacked(ev, NULL). After
 * fxj_jobs_stop, once the buffered events are delivered: FXS_UNAVAILABLE.
 * A finished job's watch gives its stored record as the SNAPSHOT, then ends. */
typedef struct fxj_watch fxj_watch;
int fxj_watch_open(fxj_jobs *j, const char *id, fxj_watch **w, char *err, size_t errlen);
int fxj_watch_next(fxj_watch *w, int timeout_ms, Fluxion__V1__JobEvent **event, bool *ended);
void fxj_watch_close(fxj_watch *w);

#endif
