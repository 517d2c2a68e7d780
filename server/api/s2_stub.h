/*
 * s2_stub.h - TEMPORARY (helper S4, issue 13): the jobs API that S2 adds to
 * training/jobs.h in parallel (fxj_jobs_queue, fxj_jobs_update,
 * fxj_jobs_set_team), declared here so that api/ compiles before S2's
 * branch is merged. The declarations are the plan's (SCHED_SPEC.md), so
 * they agree with S2's; after the merge delete this file and
 * server/api/s2_stub.c, and drop the three `#include "api/s2_stub.h"`
 * lines (svc_admin.c, svc_cluster.c, svc_training.c).
 */
#ifndef FXA_S2_STUB_H
#define FXA_S2_STUB_H

#include <stddef.h>

#include "fluxion/v1/training.pb-c.h"
#include "sched/sched.h"
#include "training/jobs.h"

/* The scheduler's snapshot (free with fxsc_view_free); api/ filters it by
 * team. */
int fxj_jobs_queue(fxj_jobs *j, fxsc_view *out, char *err, size_t errlen);
/* Re-prioritises or moves a QUEUED job (prio 0: unchanged; device NULL or
 * "": unchanged): FAILED_PRECONDITION once it runs or ended,
 * INVALID_ARGUMENT for an unknown device; *job is the updated record. */
int fxj_jobs_update(fxj_jobs *j, const char *id, Fluxion__V1__JobPriority prio,
                    const char *device, Fluxion__V1__Job **job, char *err, size_t errlen);
/* A team's scheduling configuration changed (an admin's CreateTeam or
 * UpdateTeam). */
void fxj_jobs_set_team(fxj_jobs *j, const char *team, const fxsc_team_cfg *cfg);

#endif
