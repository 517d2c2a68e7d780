/*
 * s2_stub.c - TEMPORARY (helper S4, issue 13): weak stand-ins for S2's
 * fxj_jobs_queue / fxj_jobs_update / fxj_jobs_set_team (training/) and
 * S1's fxsc_view_free (sched/core.c), so that fluxiond links before their
 * branches are merged. Weak: the real definitions win when they are
 * linked. Delete this file with api/s2_stub.h after the merge.
 */
#include <stdlib.h>
#include <string.h>

#include "api/s2_stub.h"
#include "base/status.h"
#include "base/util.h"

__attribute__((weak)) int fxj_jobs_queue(fxj_jobs *j, fxsc_view *out, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    memset(out, 0, sizeof *out); /* nothing scheduled yet */
    return 0;
}

__attribute__((weak)) int fxj_jobs_update(fxj_jobs *j, const char *id,
                                          Fluxion__V1__JobPriority prio, const char *device,
                                          Fluxion__V1__Job **job, char *err, size_t errlen)
{
    (void)j;
    (void)id;
    (void)prio;
    (void)device;
    *job = NULL;
    return fxu_fail(err, errlen, FXS_UNIMPLEMENTED, "the scheduler is not built in (S2 stub)");
}

__attribute__((weak)) void fxj_jobs_set_team(fxj_jobs *j, const char *team,
                                             const fxsc_team_cfg *cfg)
{
    (void)j;
    (void)team;
    (void)cfg;
}

__attribute__((weak)) void fxsc_view_free(fxsc_view *v)
{
    if (!v)
        return;
    free(v->jobs);
    free(v->devices);
    free(v->teams);
    memset(v, 0, sizeof *v);
}
