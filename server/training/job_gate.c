/*
 * job_gate.c - a finished job's promotion gate (docs/versions.md): whether
 * its result becomes the served ("production") version. The spec says
 * promote: "always" (also "", as before gates), "if_better" or "never";
 * promote_metric names what is compared ("": val_loss when the job
 * validated, else loss) and promote_tolerance how much worse than
 * production's recorded value still passes (relative). A result whose loss
 * or metric is not finite (a diverged run, train.c) is never promoted.
 *
 * The store calls the decision inside the transaction that stores the
 * version and finishes the job (fxdb_job_finish_gated), with production's
 * version and metric as they are in that transaction: a promotion and a
 * job finishing at once cannot both compare against a stale production.
 * The decision and its reason are written into the job's record there.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"
#include "training/jobs_internal.h"

/* Metrics where higher is better; every loss is lower-is-better. */
static bool higher_is_better(const char *name)
{
    return strstr(name, "accuracy") != NULL;
}

int fxj__gate_check(const Fluxion__V1__JobSpec *spec, char *err, size_t errlen)
{
    const char *p = spec->promote ? spec->promote : "";
    if (*p && strcmp(p, "always") && strcmp(p, "if_better") && strcmp(p, "never"))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "spec.promote: '%.64s' is not one of "
                        "always, if_better, never", p);
    if (!isfinite(spec->promote_tolerance) || spec->promote_tolerance < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "spec.promote_tolerance: %g must be a "
                        "finite number >= 0 (relative: 0.01 is 1%%)", spec->promote_tolerance);
    const char *m = spec->promote_metric ? spec->promote_metric : "";
    if (strlen(m) >= FXJ_METRIC_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "spec.promote_metric: longer than %d "
                        "bytes", FXJ_METRIC_MAX - 1);
    return 0;
}

/* The value of a metric in the final progress. */
static bool metric_of(const Fluxion__V1__JobProgress *pg, const char *name, double *v)
{
    for (size_t i = 0; pg && i < pg->n_metrics; i++)
        if (strcmp(pg->metrics[i]->name, name) == 0) {
            *v = pg->metrics[i]->value;
            return true;
        }
    if (pg && strcmp(name, "loss") == 0) {
        *v = pg->train_loss;
        return true;
    }
    return false;
}

void fxj__gate_init(fxj_gate *g, Fluxion__V1__Job *rec)
{
    memset(g, 0, sizeof *g);
    g->rec = rec;
    const Fluxion__V1__JobSpec *sp = rec->spec;
    const Fluxion__V1__JobProgress *pg = rec->progress;
    const char *want = sp->promote_metric && *sp->promote_metric ? sp->promote_metric : NULL;
    double v;
    if (!want)
        want = metric_of(pg, "val_loss", &v) ? "val_loss" : "loss";
    snprintf(g->metric_name, sizeof g->metric_name, "%s", want);
    g->have = metric_of(pg, g->metric_name, &g->metric);
    g->diverged = pg && !isfinite(pg->train_loss);
}

/* The job record gets the decision (under the store's lock, inside its
 * transaction: pack_job packs it next). */
static int decided(fxj_gate *g, bool promote, bool *out, const char *reason, char *err,
                   size_t errlen)
{
    char *r = strdup(reason);
    if (!r)
        return fxu_oom(err, errlen);
    if (g->rec->promotion && g->rec->promotion != protobuf_c_empty_string)
        free(g->rec->promotion);
    g->rec->promotion = r;
    g->rec->promoted = promote;
    *out = promote;
    return 0;
}

int fxj__gate_decide(void *ctx, int64_t production, const char *cur_name, bool cur_has,
                     double cur, bool *promote, char *err, size_t errlen)
{
    fxj_gate *g = ctx;
    const Fluxion__V1__JobSpec *sp = g->rec->spec;
    const char *mode = sp->promote && *sp->promote ? sp->promote : "always";
    const char *mn = g->metric_name;
    char why[512];
    if (g->diverged) {
        snprintf(why, sizeof why, "not promoted: diverged (loss %g at step %lld)",
                 g->rec->progress->train_loss, (long long)g->rec->progress->step);
        return decided(g, false, promote, why, err, errlen);
    }
    if (g->have && !isfinite(g->metric)) {
        snprintf(why, sizeof why, "not promoted: %s %g", mn, g->metric);
        return decided(g, false, promote, why, err, errlen);
    }
    if (strcmp(mode, "never") == 0) {
        snprintf(why, sizeof why, "not promoted: promote is never");
        return decided(g, false, promote, why, err, errlen);
    }
    if (strcmp(mode, "always") == 0 || production == 0) {
        snprintf(why, sizeof why, "promoted: promote is %s", production ? mode : "always (nothing "
                 "served)");
        return decided(g, true, promote, why, err, errlen);
    }
    /* if_better */
    if (!g->have) {
        snprintf(why, sizeof why, "not promoted: the job reported no %s to compare", mn);
        return decided(g, false, promote, why, err, errlen);
    }
    if (!cur_has || strcmp(cur_name, mn) != 0) {
        snprintf(why, sizeof why, "promoted: %s %g (served v%lld has no recorded %s)", mn,
                 g->metric, (long long)production, mn);
        return decided(g, true, promote, why, err, errlen);
    }
    double tol = sp->promote_tolerance, slack = fabs(cur) * tol;
    bool hi = higher_is_better(mn);
    double limit = hi ? cur - slack : cur + slack;
    bool ok = hi ? g->metric >= limit : g->metric <= limit;
    snprintf(why, sizeof why, "%s: %s %.6g %s %.6g (served v%lld %.6g %s%g%%)",
             ok ? "promoted" : "not promoted", mn, g->metric,
             ok ? (hi ? ">=" : "<=") : (hi ? "<" : ">"), limit, (long long)production, cur,
             hi ? "-" : "+", tol * 100);
    return decided(g, ok, promote, why, err, errlen);
}
