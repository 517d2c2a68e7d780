/*
 * cmd_sched.c - the scheduler seen from the CLI (docs/scheduling.md):
 * `fluxion queue` (ClusterService.GetQueue), `fluxion team quota`
 * (AdminService: the teams' scheduling fields of TeamQuota, read then
 * updated like `team update`), `fluxion job priority` and `fluxion job
 * move` (TrainingService.UpdateJob). The team and job commands sit in the
 * team and job tables (cmd_admin.c, cmd_train.c); their handlers are here.
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fluxion/v1/admin.pb-c.h"
#include "fluxion/v1/cluster.pb-c.h"
#include "fluxion/v1/training.pb-c.h"

#define ADMIN    (&fluxion__v1__admin_service__descriptor)
#define TRAINING (&fluxion__v1__training_service__descriptor)

/* ------------------------------------------------------------------ queue */

static const char *slots_text(int used, int nominal, int borrow, char *buf, size_t len)
{
    if (nominal || borrow)
        snprintf(buf, len, "%d/%d+%d", used, nominal, borrow);
    else
        snprintf(buf, len, "%d", used);
    return buf;
}

/* "-" for 0 memory (not tracked), else "used+reserved/total". */
static const char *memory_text(const Fluxion__V1__DeviceQueue *d, char *buf, size_t len)
{
    if (!d->memory_bytes) {
        snprintf(buf, len, "-");
        return buf;
    }
    char u[32], r[32], t[32];
    snprintf(buf, len, "%s+%s/%s", cli_bytes(d->memory_used_bytes, u, sizeof u),
             cli_bytes(d->memory_reserved_bytes, r, sizeof r),
             cli_bytes(d->memory_bytes, t, sizeof t));
    return buf;
}

static int width(int w, const char *s)
{
    int n = (int)strlen(s);
    return n > w ? n : w;
}

static void print_queue(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__GetQueueResponse *q = (const Fluxion__V1__GetQueueResponse *)msg;
    char a[64], b[64];
    printf("%-10s  %-7s  %-30s  %s\n", "DEVICE", "SLOTS", "MEMORY (JOBS+SERVED/TOTAL)", "SERVED");
    for (size_t i = 0; i < q->n_devices; i++) {
        const Fluxion__V1__DeviceQueue *d = q->devices[i];
        snprintf(a, sizeof a, "%d/%d", d->slots_used, d->slots);
        printf("%-10s  %-7s  %-30s  %d\n", d->device, a, memory_text(d, b, sizeof b),
               d->served_models);
    }
    if (q->n_teams) {
        int wt = 4;
        for (size_t i = 0; i < q->n_teams; i++)
            wt = width(wt, q->teams[i]->team);
        printf("\n%-*s  %6s  %7s  %6s  %-9s  %6s  %6s  %-15s  %s\n", wt, "TEAM", "WEIGHT",
               "RUNNING", "QUEUED", "SLOTS", "SHARE", "FAIR", "BUDGET (S)", "PREEMPTED");
        for (size_t i = 0; i < q->n_teams; i++) {
            const Fluxion__V1__TeamShare *t = q->teams[i];
            if (t->budget_seconds > 0)
                snprintf(b, sizeof b, "%.0f/%.0f", t->budget_used_seconds, t->budget_seconds);
            else
                snprintf(b, sizeof b, "-");
            printf("%-*s  %6.3g  %7d  %6d  %-9s  %5.1f%%  %5.1f%%  %-15s  %d\n", wt, t->team,
                   t->weight, t->running, t->queued,
                   slots_text(t->slots_used, t->nominal_slots, t->borrow_slots, a, sizeof a),
                   100 * t->share, 100 * t->fair_share, b, t->preemptions);
        }
    }
    printf("\n");
    if (!q->n_jobs) {
        printf("no running or queued jobs\n");
        return;
    }
    int wi = 2, wt = 4, wm = 5, wd = 6;
    for (size_t i = 0; i < q->n_jobs; i++) {
        wi = width(wi, q->jobs[i]->id);
        wt = width(wt, q->jobs[i]->team);
        wm = width(wm, q->jobs[i]->model);
        wd = width(wd, q->jobs[i]->device);
    }
    printf("%3s  %-*s  %-*s  %-*s  %-7s  %-6s  %-*s  %4s  %s\n", "POS", wi, "ID", wt, "TEAM", wm,
           "MODEL", "STATE", "PRIO", wd, "DEVICE", "PRE", "WHY WAITING");
    for (size_t i = 0; i < q->n_jobs; i++) {
        const Fluxion__V1__QueuedJob *j = q->jobs[i];
        char pos[16] = "-";
        if (j->position > 0)
            snprintf(pos, sizeof pos, "%d", j->position);
        printf("%3s  %-*s  %-*s  %-*s  %-7s  %-6s  %-*s  %4d  %s%s\n", pos, wi, j->id, wt, j->team,
               wm, j->model, j->state, j->priority, wd, *j->device ? j->device : "any", j->preemptions,
               *j->reason ? j->reason : "-", j->preemptible ? "" : " (not preemptible)");
    }
}

static int cmd_queue(cli_ctx *c, const cli_args *a)
{
    (void)a;
    Fluxion__V1__GetQueueRequest req = FLUXION__V1__GET_QUEUE_REQUEST__INIT;
    return cli_call_print(c, &fluxion__v1__cluster_service__descriptor, "GetQueue", &req.base,
                          print_queue, NULL);
}

const cli_command cli_queue_commands[] = {
    {"queue",
     "",
     "show the training queue: devices, teams, jobs and why they wait",
     "Devices: slots in use (jobs at once) and memory (running jobs' estimates +\n"
     "served models' reservations / what the scheduler hands out). Teams: weight,\n"
     "slots used/nominal+borrow, share of recent device time against the fair\n"
     "share, budget used in the window, jobs preempted. Jobs: running first, then\n"
     "queued in the order they will start (POS), with the reason each waits.\n"
     "A member or viewer sees its own team's jobs and row; an admin every team's.\n",
     0,
     0,
     {{0}},
     cmd_queue},
};
const size_t cli_n_queue_commands = sizeof cli_queue_commands / sizeof cli_queue_commands[0];

/* ------------------------------------------------------------ team quota */

void cli_print_sched_quota(const Fluxion__V1__TeamQuota *set, const Fluxion__V1__TeamQuota *eff)
{
    static const char DEF[] = " (the daemon's default)";
    printf("scheduling:\n");
    printf("  weight       %g%s\n", eff->weight > 0 ? eff->weight : 1.0,
           set->weight > 0 ? "" : DEF);
    printf("  cpu slots    %u nominal%s, %u borrowed%s\n", eff->cpu_slots,
           set->cpu_slots ? "" : DEF, eff->borrow_cpu_slots, set->borrow_cpu_slots ? "" : DEF);
    printf("  gpu slots    %u nominal%s, %u borrowed%s\n", eff->gpu_slots,
           set->gpu_slots ? "" : DEF, eff->borrow_gpu_slots, set->borrow_gpu_slots ? "" : DEF);
    uint32_t window = eff->budget_window_seconds ? eff->budget_window_seconds : 86400;
    if (eff->budget_device_seconds > 0)
        printf("  budget       %.4g device-hours per %.4g h%s\n",
               eff->budget_device_seconds / 3600, window / 3600.0,
               set->budget_device_seconds > 0 ? "" : DEF);
    else
        printf("  budget       none\n");
    if (eff->max_running_jobs)
        printf("  max running  %u jobs%s\n", eff->max_running_jobs,
               set->max_running_jobs ? "" : DEF);
    else
        printf("  max running  no limit\n");
    if (eff->gpu_memory_bytes)
        printf("  gpu memory   %.1f GiB%s\n", eff->gpu_memory_bytes / 1073741824.0,
               set->gpu_memory_bytes ? "" : DEF);
    else
        printf("  gpu memory   no cap\n");
}

/* A number >= 0 (0: the daemon's default), at most max. */
static int parse_number(const char *flag, const char *text, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(v) || v < 0 || v > max)
        return cli_usage_error("%s: expected a number from 0 (the daemon's default) to %g, got "
                               "\"%s\"", flag, max, text);
    *out = v;
    return CLI_OK;
}

static int parse_count(const char *flag, const char *text, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end || errno || v > 65535)
        return cli_usage_error("%s: expected a whole number from 0 (the daemon's default) to "
                               "65535, got \"%s\"", flag, text);
    *out = (uint32_t)v;
    return CLI_OK;
}

/* options: 0 --weight, 1 --cpu-slots, 2 --gpu-slots, 3 --borrow-cpu-slots,
 * 4 --borrow-gpu-slots, 5 --budget-hours, 6 --budget-window-hours,
 * 7 --max-running, 8 --gpu-memory-gb. Without one: shows the team. */
int cli_cmd_team_quota(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__TeamQuota set = FLUXION__V1__TEAM_QUOTA__INIT;
    bool given = false;
    int rc = CLI_OK;
    double hours = 0, gib = 0;
    uint32_t *counts[] = { NULL, &set.cpu_slots, &set.gpu_slots, &set.borrow_cpu_slots,
                           &set.borrow_gpu_slots, NULL, NULL, &set.max_running_jobs, NULL };
    static const char *const flags[] = { "--weight", "--cpu-slots", "--gpu-slots",
                                         "--borrow-cpu-slots", "--borrow-gpu-slots",
                                         "--budget-hours", "--budget-window-hours",
                                         "--max-running", "--gpu-memory-gb" };
    for (int i = 0; i < 9 && !rc; i++) {
        if (!a->opt[i])
            continue;
        given = true;
        if (counts[i])
            rc = parse_count(flags[i], a->opt[i], counts[i]);
        else if (i == 0)
            rc = parse_number(flags[i], a->opt[i], 1e6, &set.weight);
        else if (i == 5 && !(rc = parse_number(flags[i], a->opt[i], 1e9, &hours)))
            set.budget_device_seconds = hours * 3600;
        else if (i == 6 && !(rc = parse_number(flags[i], a->opt[i], 1e6, &hours)))
            set.budget_window_seconds = (uint32_t)llround(hours * 3600);
        else if (i == 8 && !(rc = parse_number(flags[i], a->opt[i], 1e9, &gib)))
            set.gpu_memory_bytes = (uint64_t)llround(gib * 1073741824.0);
    }
    if (rc)
        return rc;
    Fluxion__V1__GetTeamRequest g = FLUXION__V1__GET_TEAM_REQUEST__INIT;
    g.name = (char *)a->pos[0];
    if (!given)
        return cli_call_print(c, ADMIN, "GetTeam", &g.base, cli_print_team, NULL);
    /* The server replaces the quota as a whole: what is not given keeps its
     * value (read first). */
    ProtobufCMessage *cur = NULL;
    rc = cli_unary(c, ADMIN, "GetTeam", &g.base, &cur);
    if (rc)
        return rc;
    const Fluxion__V1__TeamQuota *old = ((Fluxion__V1__Team *)cur)->quota;
    Fluxion__V1__TeamQuota q = FLUXION__V1__TEAM_QUOTA__INIT;
    if (old)
        q = *old;
#define TAKE(i, f)        \
    if (a->opt[i])        \
        q.f = set.f;
    TAKE(0, weight)
    TAKE(1, cpu_slots)
    TAKE(2, gpu_slots)
    TAKE(3, borrow_cpu_slots)
    TAKE(4, borrow_gpu_slots)
    TAKE(5, budget_device_seconds)
    TAKE(6, budget_window_seconds)
    TAKE(7, max_running_jobs)
    TAKE(8, gpu_memory_bytes)
#undef TAKE
    Fluxion__V1__UpdateTeamRequest req = FLUXION__V1__UPDATE_TEAM_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    req.quota = &q;
    rc = cli_call_print(c, ADMIN, "UpdateTeam", &req.base, cli_print_team, NULL);
    protobuf_c_message_free_unpacked(cur, NULL);
    return rc;
}

/* ------------------------------------------------- job priority, job move */

static const char *priority_name(int p)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&fluxion__v1__job_priority__descriptor, p);
    return p == 0 ? "NORMAL" : v ? v->name : "?";
}

int cli_parse_priority(const char *text, int *out)
{
    static const char *const names[] = { "low", "normal", "high" };
    for (int i = 0; i < 3; i++)
        if (strcasecmp(text, names[i]) == 0) {
            *out = i + 1; /* LOW = 1, NORMAL = 2, HIGH = 3 */
            return CLI_OK;
        }
    return cli_usage_error("priority: expected low, normal or high, got \"%s\"", text);
}

static void print_updated(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Job *j = (const Fluxion__V1__Job *)msg;
    const char *dev = j->spec && *j->spec->device ? j->spec->device : "the first device";
    printf("job %s: priority %s, device %s", j->id,
           priority_name(j->spec ? (int)j->spec->priority : 0), dev);
    if (j->queue_position > 0)
        printf(", position %d", j->queue_position);
    if (*j->wait_reason)
        printf(" (%s)", j->wait_reason);
    printf("\n");
}

static int update_job(cli_ctx *c, const char *id, int priority, const char *device)
{
    Fluxion__V1__UpdateJobRequest req = FLUXION__V1__UPDATE_JOB_REQUEST__INIT;
    req.id = (char *)id;
    req.priority = (Fluxion__V1__JobPriority)priority;
    if (device)
        req.device = (char *)device;
    return cli_call_print(c, TRAINING, "UpdateJob", &req.base, print_updated, NULL);
}

int cli_cmd_job_priority(cli_ctx *c, const cli_args *a)
{
    int p = 0;
    int rc = cli_parse_priority(a->pos[1], &p);
    return rc ? rc : update_job(c, a->pos[0], p, NULL);
}

/* options: 0 --device */
int cli_cmd_job_move(cli_ctx *c, const cli_args *a)
{
    if (!a->opt[0] || !*a->opt[0])
        return cli_usage_error("job move: --device is required (cpu, cuda:N or gpu)");
    return update_job(c, a->pos[0], 0, a->opt[0]);
}
