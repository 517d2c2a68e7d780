/*
 * cmd_train.c - `fluxion train submit` and `fluxion job list|get|cancel|
 * watch|priority|move` (fluxion.v1.TrainingService; priority and move are
 * cmd_sched.c's).
 *
 * Watching draws a progress bar redrawn in place when stdout is a terminal,
 * one plain line per event otherwise, JSON lines with --json; it ends with
 * the job's final state (exit 0 for SUCCEEDED, 1 otherwise).
 */
#include "cli.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fluxion/v1/training.pb-c.h"
#include "pbjson.h"

/* A watch follows a job for as long as it runs: no per-call deadline. */
#define WATCH_TIMEOUT_MS (7LL * 24 * 3600 * 1000)
#define BAR_WIDTH 24

static const char *state_name(int s)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&fluxion__v1__job_state__descriptor, s);
    return v ? v->name : "?";
}

static const char *kind_name(int k)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&fluxion__v1__job_event__kind__descriptor, k);
    return v ? v->name : "?";
}

static const char *priority_text(int p)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&fluxion__v1__job_priority__descriptor, p);
    return p == 0 || !v ? "NORMAL" : v->name;
}

/* " position=2 reason=..." of a QUEUED job (plain), "" otherwise. */
static void queue_text(const Fluxion__V1__Job *job, char *buf, size_t len)
{
    buf[0] = '\0';
    if (job->state == FLUXION__V1__JOB_STATE__QUEUED && job->queue_position > 0)
        snprintf(buf, len, " position=%d%s%s", job->queue_position,
                 *job->wait_reason ? " reason=" : "", job->wait_reason);
}

static bool is_final(int s)
{
    return s == FLUXION__V1__JOB_STATE__SUCCEEDED || s == FLUXION__V1__JOB_STATE__FAILED ||
           s == FLUXION__V1__JOB_STATE__CANCELLED;
}

/* "1:05:09", "4:07" */
static const char *duration(double s, char *buf, size_t len)
{
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, len, "?");
        return buf;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
    return buf;
}

/* ------------------------------------------------------------- printing */

/* "step 450/1000 epoch 2/5 loss 0.3412 val_loss 0.3520 1234 samples/s ETA 0:12
 * accuracy 0.91 ..." */
static void progress_text(const Fluxion__V1__JobProgress *p, bool plain, char *buf, size_t len)
{
    size_t n = 0;
#define ADD(...) (n += (size_t)snprintf(buf + n, n < len ? len - n : 0, __VA_ARGS__))
    const char *eq = plain ? "=" : " ";
    ADD("step%s%" PRId64 "/%" PRId64, eq, p->step, p->total_steps);
    if (p->total_epochs)
        ADD(" epoch%s%" PRId64 "/%" PRId64, eq, p->epoch, p->total_epochs);
    ADD(" loss%s%.4g", eq, p->train_loss);
    if (p->running_loss != 0 && p->running_loss != p->train_loss) /* an epoch in progress */
        ADD(" running_loss%s%.4g", eq, p->running_loss);
    if (p->val_loss != 0)
        ADD(" val_loss%s%.4g", eq, p->val_loss);
    char eta[32];
    if (plain)
        ADD(" samples_per_second=%.0f eta_seconds=%.0f", p->samples_per_second, p->eta_seconds);
    else
        ADD(" %.0f samples/s ETA %s", p->samples_per_second,
            duration(p->eta_seconds, eta, sizeof eta));
    /* last: what a narrow terminal cuts off */
    for (size_t i = 0; i < p->n_metrics; i++)
        if (strcmp(p->metrics[i]->name, "loss") && strcmp(p->metrics[i]->name, "val_loss") &&
            strcmp(p->metrics[i]->name, "lr"))
            ADD(" %s%s%.4g", p->metrics[i]->name, eq, p->metrics[i]->value);
#undef ADD
    if (n >= len && len > 4)
        memcpy(buf + len - 4, "...", 4);
}

static void print_bar(const Fluxion__V1__Job *job)
{
    const Fluxion__V1__JobProgress *p = job->progress;
    if (!p)
        return;
    double frac = p->total_steps > 0 ? (double)p->step / (double)p->total_steps : 0;
    if (frac > 1)
        frac = 1;
    char bar[BAR_WIDTH + 1], text[512];
    int fill = (int)(frac * BAR_WIDTH + 0.5);
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    char line[600];
    progress_text(p, false, text, sizeof text);
    int n = snprintf(line, sizeof line, "[%s] %3.0f%% %s", bar, frac * 100, text);
    /* A line that wraps could not be redrawn in place. */
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && n >= ws.ws_col)
        line[ws.ws_col - 1] = '\0';
    printf("\r\033[K%s", line);
    fflush(stdout);
}

static void print_plain(const Fluxion__V1__JobEvent *ev)
{
    const Fluxion__V1__Job *job = ev->job;
    char text[512] = "", queue[256];
    if (job->progress && ev->kind != FLUXION__V1__JOB_EVENT__KIND__STATE &&
        ev->kind != FLUXION__V1__JOB_EVENT__KIND__QUEUED_AT)
        progress_text(job->progress, true, text, sizeof text);
    queue_text(job, queue, sizeof queue);
    printf("job %s %s state=%s%s%s%s%s%s\n", job->id, kind_name(ev->kind), state_name(job->state),
           queue, *text ? " " : "", text, *ev->message ? " message=" : "", ev->message);
    fflush(stdout);
}

/* State changes on a terminal: a line of their own above the bar. */
static void print_note(const Fluxion__V1__JobEvent *ev, bool *bar_shown)
{
    if (*bar_shown)
        printf("\r\033[K");
    *bar_shown = false;
    const Fluxion__V1__Job *job = ev->job;
    if (ev->kind == FLUXION__V1__JOB_EVENT__KIND__SNAPSHOT)
        printf("job %s: %s (model %s, dataset %s)\n", job->id, state_name(job->state),
               job->spec ? job->spec->model : "?", job->spec ? job->spec->dataset : "?");
    if (ev->kind == FLUXION__V1__JOB_EVENT__KIND__SNAPSHOT ||
        ev->kind == FLUXION__V1__JOB_EVENT__KIND__QUEUED_AT) {
        if (job->state == FLUXION__V1__JOB_STATE__QUEUED && job->queue_position > 0)
            printf("job %s: queued at position %d%s%s\n", job->id, job->queue_position,
                   *job->wait_reason ? ": " : "", job->wait_reason);
    } else if (ev->kind == FLUXION__V1__JOB_EVENT__KIND__PREEMPTED ||
               ev->kind == FLUXION__V1__JOB_EVENT__KIND__RESUMED)
        printf("job %s: %s%s%s\n", job->id,
               ev->kind == FLUXION__V1__JOB_EVENT__KIND__PREEMPTED ? "preempted (checkpointed, "
                                                                    "queued again)"
                                                                  : "resumed from its checkpoint",
               *ev->message ? ": " : "", ev->message);
    else
        printf("job %s: %s%s%s\n", job->id,
               ev->kind == FLUXION__V1__JOB_EVENT__KIND__STATE ? state_name(job->state) : "",
               ev->kind == FLUXION__V1__JOB_EVENT__KIND__STATE && *ev->message ? ": " : "",
               ev->message);
}

typedef struct {
    cli_ctx *c;
    bool tty, bar_shown;
    int state;  /* last known */
    char error[512];
} watch_ctx;

static int on_event(const ProtobufCMessage *m, void *data)
{
    watch_ctx *w = data;
    const Fluxion__V1__JobEvent *ev = (const void *)m;
    if (!ev->job)
        return 0;
    w->state = ev->job->state;
    snprintf(w->error, sizeof w->error, "%s", ev->job->error);
    if (w->c->json) {
        json_t *j = cli_message_json(m);
        if (j)
            cli_print_json(w->c, j);
        json_decref(j);
    } else if (!w->tty) {
        print_plain(ev);
    } else if (ev->kind == FLUXION__V1__JOB_EVENT__KIND__PROGRESS ||
               ev->kind == FLUXION__V1__JOB_EVENT__KIND__EVALUATION ||
               ev->kind == FLUXION__V1__JOB_EVENT__KIND__CHECKPOINT) {
        print_bar(ev->job);
        w->bar_shown = true;
    } else {
        print_note(ev, &w->bar_shown);
        if (!is_final(ev->job->state) && ev->job->progress) {
            print_bar(ev->job);
            w->bar_shown = true;
        }
    }
    return 0;
}

static int watch(cli_ctx *c, const char *id)
{
    fxc_channel *ch = cli_channel(c);
    if (!ch)
        return CLI_ERR_LOCAL;
    Fluxion__V1__WatchJobRequest req = FLUXION__V1__WATCH_JOB_REQUEST__INIT;
    req.id = (char *)id;
    watch_ctx w = { .c = c, .tty = isatty(STDOUT_FILENO) };
    fxc_call_opts o = { .timeout_ms = WATCH_TIMEOUT_MS };
    char err[1024] = "";
    cli_rpc r = cli_rpc_of(&fluxion__v1__training_service__descriptor, "WatchJob");
    int code = fxc_server_stream(ch, r.path, &req.base, r.resp, on_event, &w, &o, err, sizeof err);
    if (w.bar_shown)
        putchar('\n');
    if (code)
        return cli_status_error(c, code, err);
    if (!c->json && !w.tty)
        printf("job %s ended: %s%s%s\n", id, state_name(w.state), *w.error ? ": " : "", w.error);
    fflush(stdout);
    return w.state == FLUXION__V1__JOB_STATE__SUCCEEDED ? CLI_OK : CLI_ERR_SERVER;
}

static void print_job(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Job *j = (const Fluxion__V1__Job *)msg;
    char t[32], text[512];
    const Fluxion__V1__JobSpec *s = j->spec;
    printf("id:            %s\n", j->id);
    printf("state:         %s\n", state_name(j->state));
    if (*j->error)
        printf("error:         %s\n", j->error);
    if (s) {
        printf("model:         %s (from version %" PRId64 ")\n", s->model, j->base_version);
        printf("dataset:       %s (sha256 %s)\n", s->dataset, j->dataset_sha256);
        if (*s->description)
            printf("description:   %s\n", s->description);
    }
    if (j->result_version)
        printf("result:        version %" PRId64 "\n", j->result_version);
    if (j->promotion && *j->promotion) /* the promotion gate's decision (docs/versions.md) */
        printf("promotion:     %s\n", j->promotion);
    if (j->progress) {
        progress_text(j->progress, false, text, sizeof text);
        printf("progress:      %s\n", text);
    }
    printf("priority:      %s%s\n", priority_text(s ? (int)s->priority : 0),
           s && s->not_preemptible ? " (not preemptible)" : "");
    if (j->state == FLUXION__V1__JOB_STATE__QUEUED && j->queue_position > 0)
        printf("queue:         position %d%s%s\n", j->queue_position,
               *j->wait_reason ? ": " : "", j->wait_reason);
    if (*j->assigned_device)
        printf("device:        %s\n", j->assigned_device);
    else if (s)
        printf("device:        %s (asked)\n", *s->device ? s->device : "the first device");
    if (s)
        printf("precision:     %s\n", *s->precision ? s->precision : "fp32");
    printf("checkpoint:    step %" PRId64 "\n", j->checkpoint_step);
    printf("preemptions:   %d\n", j->preemptions);
    printf("restarts:      %d\n", j->restarts);
    printf("created:       %s\n", cli_time(j->created_unix_ms, t, sizeof t));
    printf("started:       %s\n", cli_time(j->started_unix_ms, t, sizeof t));
    printf("finished:      %s\n", cli_time(j->finished_unix_ms, t, sizeof t));
    printf("engine:        %s\n", j->engine_version);
    printf("tensorboard:   %s\n", j->tensorboard_dir);
}

/* ------------------------------------------------------------- commands */

static void print_queued(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Job *job = (const Fluxion__V1__Job *)msg;
    printf("job %s queued (model %s, dataset %s)\n", job->id, job->spec->model,
           job->spec->dataset);
}

static int cmd_submit(cli_ctx *c, const cli_args *a)
{
    json_t *js;
    int rc = cli_load_json(a->pos[0], &js);
    if (rc)
        return rc;
    char err[512];
    Fluxion__V1__JobSpec *spec =
        (void *)pbjson_decode(&fluxion__v1__job_spec__descriptor, js, err, sizeof err);
    json_decref(js);
    if (!spec)
        return cli_local_error("%s: not a job spec: %s", cli_path_name(a->pos[0]), err);
    if (a->opt[1]) { /* --priority overrides the file's */
        int p = 0;
        if ((rc = cli_parse_priority(a->opt[1], &p)) != 0) {
            fluxion__v1__job_spec__free_unpacked(spec, NULL);
            return rc;
        }
        spec->priority = (Fluxion__V1__JobPriority)p;
    }
    /* --precision overrides the file's; the server checks the value */
    if (a->opt[2] && !cli_set_string(&spec->precision, a->opt[2])) {
        fluxion__v1__job_spec__free_unpacked(spec, NULL);
        return cli_local_error("out of memory");
    }
    Fluxion__V1__SubmitJobRequest req = FLUXION__V1__SUBMIT_JOB_REQUEST__INIT;
    req.spec = spec;
    Fluxion__V1__Job *job = NULL;
    rc = cli_unary(c, &fluxion__v1__training_service__descriptor, "SubmitJob", &req.base,
                   (ProtobufCMessage **)&job);
    fluxion__v1__job_spec__free_unpacked(spec, NULL);
    if (rc)
        return rc;
    if (!c->json || !a->opt[0]) /* --json --watch: the watch's lines are the output */
        rc = cli_show(c, &job->base, print_queued, NULL);
    fflush(stdout);
    if (!rc && a->opt[0])
        rc = watch(c, job->id);
    fluxion__v1__job__free_unpacked(job, NULL);
    return rc;
}

static int cmd_get(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__GetJobRequest req = FLUXION__V1__GET_JOB_REQUEST__INIT;
    req.id = (char *)a->pos[0];
    return cli_call_print(c, &fluxion__v1__training_service__descriptor, "GetJob", &req.base,
                          print_job, NULL);
}

static void print_cancelled(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Job *job = (const Fluxion__V1__Job *)msg;
    if (job->state == FLUXION__V1__JOB_STATE__CANCELLED)
        printf("job %s cancelled\n", job->id);
    else
        printf("job %s: cancel requested; it stops at the next step (%s)\n", job->id,
               state_name(job->state));
}

static int cmd_cancel(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__CancelJobRequest req = FLUXION__V1__CANCEL_JOB_REQUEST__INIT;
    req.id = (char *)a->pos[0];
    return cli_call_print(c, &fluxion__v1__training_service__descriptor, "CancelJob", &req.base,
                          print_cancelled, NULL);
}

static void print_resumed(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Job *job = (const Fluxion__V1__Job *)msg;
    printf("job %s: %s, resumes from checkpoint step %" PRId64 "\n", job->id,
           state_name(job->state), job->checkpoint_step);
}

static int cmd_resume(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__ResumeJobRequest req = FLUXION__V1__RESUME_JOB_REQUEST__INIT;
    req.id = (char *)a->pos[0];
    return cli_call_print(c, &fluxion__v1__training_service__descriptor, "ResumeJob", &req.base,
                          print_resumed, NULL);
}

static int cmd_watch(cli_ctx *c, const cli_args *a)
{
    if (cli_no_names(c, "job watch"))
        return CLI_ERR_USAGE;
    return watch(c, a->pos[0]);
}

/* "running" or "RUNNING" -> the enum value; usage error otherwise. */
static int parse_state(const char *text, int *out)
{
    char up[32];
    size_t i = 0;
    for (; text[i] && i < sizeof up - 1; i++)
        up[i] = (char)toupper((unsigned char)text[i]);
    up[i] = '\0';
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value_by_name(&fluxion__v1__job_state__descriptor, up);
    if (!v || v->value == 0)
        return cli_usage_error("--state: '%s' is not one of queued, running, succeeded, failed, "
                               "cancelled", text);
    *out = v->value;
    return CLI_OK;
}

static void print_jobs(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__ListJobsResponse *resp = (const Fluxion__V1__ListJobsResponse *)msg;
    static const char *const HEAD[] = {"ID",   "STATE",  "MODEL", "DATASET",
                                       "STEP", "LOSS", "RESULT", "QUEUE"};
    cli_table *t = cli_table_new(8, HEAD);
    for (size_t i = 0; i < resp->n_jobs; i++) {
        const Fluxion__V1__Job *j = resp->jobs[i];
        const Fluxion__V1__JobProgress *p = j->progress;
        char step[40] = "-", loss[24] = "-", result[24] = "-";
        if (p) {
            snprintf(step, sizeof step, "%" PRId64 "/%" PRId64, p->step, p->total_steps);
            snprintf(loss, sizeof loss, "%.4g", p->train_loss);
        }
        if (j->result_version)
            snprintf(result, sizeof result, "v%" PRId64, j->result_version);
        /* QUEUED: "#2 <why it waits>"; RUNNING: where; preempted jobs say so */
        char queue[256] = "-";
        if (j->state == FLUXION__V1__JOB_STATE__QUEUED && j->queue_position > 0)
            snprintf(queue, sizeof queue, "#%d %s", j->queue_position, j->wait_reason);
        else if (j->state == FLUXION__V1__JOB_STATE__RUNNING && *j->assigned_device)
            snprintf(queue, sizeof queue, "on %s", j->assigned_device);
        if (j->preemptions)
            snprintf(queue + strlen(queue), sizeof queue - strlen(queue), " (preempted %d)",
                     j->preemptions);
        if (t)
            cli_table_row(t, j->id, state_name(j->state), j->spec ? j->spec->model : "?",
                          j->spec ? j->spec->dataset : "?", step, loss, result, queue);
    }
    cli_table_print(t);
}

static int cmd_list(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__ListJobsRequest req = FLUXION__V1__LIST_JOBS_REQUEST__INIT;
    int state = 0;
    if (a->opt[0] && parse_state(a->opt[0], &state))
        return CLI_ERR_USAGE;
    req.state = (Fluxion__V1__JobState)state;
    req.model = (char *)(a->opt[1] ? a->opt[1] : "");
    return cli_call_print(c, &fluxion__v1__training_service__descriptor, "ListJobs", &req.base,
                          print_jobs, NULL);
}

static const char SUBMIT_DETAILS[] =
    "JOBFILE is a JSON JobSpec (proto/fluxion/v1/training.proto), e.g.\n"
    "  {\"model\": \"mlp\", \"dataset\": \"blobs\",\n"
    "   \"feeds\": [{\"input\": \"x\", \"tensor\": \"x\"}],\n"
    "   \"losses\": [{\"output\": \"logits\", \"kind\": \"cross_entropy\", \"target\": \"y\"}],\n"
    "   \"optimizer\": {\"kind\": \"adam\", \"lr\": 0.01}, \"batch_size\": 32, \"epochs\": 5,\n"
    "   \"validation_split\": 0.2, \"metrics\": [\"accuracy\"], \"seed\": 1,\n"
    "   \"serve_when_done\": true}\n"
    "The finished job adds a version to the model. With --watch, follows it\n"
    "as `fluxion job watch` does (exit 0 only when it SUCCEEDED). --priority\n"
    "(low, normal, high) sets spec.priority: the queue orders jobs by priority,\n"
    "then by their team's recent device time over its weight (fluxion queue).\n"
    "--precision bf16 (spec.precision) runs the dense layers' products in\n"
    "bfloat16 on a CPU device; weights, gradients and the result stay fp32.\n";

static const char WATCH_DETAILS[] =
    "Shows a progress bar (step, epoch, loss, validation loss, samples/s, ETA)\n"
    "redrawn in place on a terminal; one line per event when stdout is not a\n"
    "terminal; JSON lines (JobEvent) with --json. Ends when the job ends: exit 0\n"
    "when it SUCCEEDED, 1 when it FAILED or was CANCELLED. --timeout does not\n"
    "apply to the watch. A queued job's position and the reason it waits are\n"
    "shown as they change (QUEUED_AT); PREEMPTED (checkpointed and queued again to\n"
    "make room, saying for whom) and RESUMED (from its checkpoint) too.\n";

const cli_command cli_train_commands[] = {
    {"train submit", "JOBFILE [--watch] [--priority P] [--precision P]",
     "submit a training job (JSON JobSpec; - for stdin)", SUBMIT_DETAILS, 1, 1,
     {{"watch", 'w', NULL, "follow the job until it ends"},
      {"priority", 'p', "P", "low, normal or high (default: the file's, else normal)"},
      {"precision", 0, "P", "fp32 or bf16 (CPU devices; default: the file's, else fp32)"}},
     cmd_submit},
};
const size_t cli_n_train_commands = sizeof cli_train_commands / sizeof cli_train_commands[0];

const cli_command cli_job_commands[] = {
    {"job list", "[--state S] [--model M]", "list training jobs, oldest first", NULL, 0, 0,
     {{"state", 0, "S", "only jobs in state S (queued, running, succeeded, failed, cancelled)"},
      {"model", 0, "M", "only jobs of model M"}},
     cmd_list},
    {"job get", "ID", "show a job: state, progress, result, record", NULL, 1, 1, {{0}}, cmd_get},
    {"job cancel", "ID", "cancel a job (a running one stops at the next step)", NULL, 1, 1,
     {{0}}, cmd_cancel},
    {"job watch", "ID", "follow a job's progress until it ends", WATCH_DETAILS, 1, 1, {{0}},
     cmd_watch},
    {"job resume", "ID", "continue a cancelled job from its checkpoint",
     "A cancelled job keeps its checkpoint; resuming queues it again to continue\n"
     "at that step with the same data order and optimizer state, so it ends with\n"
     "the weights an uninterrupted run gives. A job cancelled before its first\n"
     "checkpoint cannot be resumed (FAILED_PRECONDITION): submit it again.\n",
     1, 1, {{0}}, cmd_resume},
    {"job priority", "ID low|normal|high", "re-prioritise a queued job (its team or an admin)",
     "Only a QUEUED job: once it runs the answer is FAILED_PRECONDITION. The queue\n"
     "orders jobs by priority first (fluxion queue shows the new position).\n",
     2, 2, {{0}}, cli_cmd_job_priority},
    {"job move", "ID --device D", "move a queued job to another device (cpu, cuda:N, gpu)",
     "Only a QUEUED job; D as in the job spec's device (\"gpu\": any GPU).\n", 1, 1,
     {{"device", 0, "D", "the device to run on (required)"}}, cli_cmd_job_move},
};
const size_t cli_n_job_commands = sizeof cli_job_commands / sizeof cli_job_commands[0];
