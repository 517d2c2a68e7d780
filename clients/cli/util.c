/*
 * util.c - the CLI's errors, argument values, files, calls and output.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "jsonout.h"
#include "pbjson.h"
#include "suggest.h"

/* ------------------------------------------------------------ errors */

static void vreport(const char *fmt, va_list ap)
{
    fflush(stdout);
    fputs("fluxion: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
    return CLI_ERR_USAGE;
}

int cli_local_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
    return CLI_ERR_LOCAL;
}

/* "model 'NAME' is not loaded ...": the command that loads it. */
static void unloaded_hint(const char *msg)
{
    const char *p = strstr(msg, "model '");
    const char *q = p ? strstr(p + 7, "' is not loaded") : NULL;
    if (!q || q - (p + 7) > 256 || memchr(p + 7, '\'', (size_t)(q - (p + 7))))
        return;
    fprintf(stderr, "fluxion: hint: load it with `fluxion model load %.*s`\n", (int)(q - (p + 7)),
            p + 7);
}

int cli_status_error(const cli_ctx *c, int code, const char *msg)
{
    fflush(stdout);
    bool unreachable = code == FXS_UNAVAILABLE || code == FXS_DEADLINE_EXCEEDED;
    fprintf(stderr, "fluxion: %s: %s", fxs_status_name(code), msg && *msg ? msg : "(no message)");
    if (unreachable)
        fprintf(stderr, " (server %s)", c->server);
    fputc('\n', stderr);
    if (code == FXS_UNAUTHENTICATED && !c->conn.token_source)
        fprintf(stderr, "fluxion: hint: this server needs a token: pass --token or --token-file, "
                        "set FLUXION_TOKEN, or add it to a context (fluxion config set-context "
                        "--help)\n");
    else if (code == FXS_UNAUTHENTICATED)
        fprintf(stderr, "fluxion: hint: the token (from %s) was refused: pass another with "
                        "--token or --token-file, or set FLUXION_TOKEN\n", c->conn.token_source);
    else if (code == FXS_PERMISSION_DENIED)
        fprintf(stderr, "fluxion: hint: `fluxion whoami` shows your team and role\n");
    else if (code == FXS_FAILED_PRECONDITION && msg)
        unloaded_hint(msg);
    return unreachable ? CLI_ERR_UNREACHABLE : CLI_ERR_SERVER;
}

#define MAX_SUGGESTIONS 6

int cli_unknown(const char *what, const char *word, const char *prefix, const char *const *cands,
                size_t n, const char *see)
{
    const char *out[MAX_SUGGESTIONS];
    /* "--jsno=1" is matched as "jsno" */
    char bare[FXC_SUGGEST_MAXLEN + 1];
    size_t skip = strncmp(word, prefix, strlen(prefix)) ? 0 : strlen(prefix);
    snprintf(bare, sizeof bare, "%s", word + skip);
    bare[strcspn(bare, "=")] = '\0';
    size_t got = *prefix == '-' && !skip ? 0 : fxc_suggest(bare, cands, n, out, MAX_SUGGESTIONS);
    fflush(stdout);
    fprintf(stderr, "fluxion: %s '%s'", what, word);
    if (!got) {
        fprintf(stderr, " (see %s)\n", see);
        return CLI_ERR_USAGE;
    }
    fputs("; did you mean ", stderr);
    for (size_t i = 0; i < got; i++)
        fprintf(stderr, "%s'%s%s'", i == 0 ? "" : i + 1 == got ? " or " : ", ", prefix, out[i]);
    fputs("?\n", stderr);
    return CLI_ERR_USAGE;
}

/* ----------------------------------------------------------- parsing */

const char *const cli_output_names[] = {"table", "json", "name"};
const size_t cli_n_output_names = sizeof cli_output_names / sizeof cli_output_names[0];

int cli_parse_output(cli_ctx *c, const char *text)
{
    for (size_t i = 0; i < cli_n_output_names; i++)
        if (!strcmp(text, cli_output_names[i])) {
            c->output = (cli_output)i; /* the enum's order */
            c->json = c->output == CLI_OUT_JSON;
            return CLI_OK;
        }
    return cli_unknown("--output: unknown format", text, "", cli_output_names,
                       cli_n_output_names, "fluxion --help: table, json or name");
}

int cli_parse_positive(const char *flag, const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end || errno || v <= 0)
        return cli_usage_error("%s: expected a positive integer, got \"%s\"", flag, text);
    *out = v;
    return CLI_OK;
}

int cli_parse_seconds(const char *flag, const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (!*text || *end || errno || !isfinite(v) || v <= 0 || v > 1e6)
        return cli_usage_error("%s: expected a number of seconds (0 < s <= 1000000), got \"%s\"",
                               flag, text);
    *out = v;
    return CLI_OK;
}

/* ------------------------------------------------------------- files */

const char *cli_path_name(const char *path) { return strcmp(path, "-") ? path : "stdin"; }

/* The read itself is base/fsutil's: any descriptor, to its end. */
int cli_read_file(const char *path, unsigned char **buf, size_t *len)
{
    bool is_stdin = !strcmp(path, "-");
    int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cli_local_error("%s: %s", path, strerror(errno));
    char err[FXS_ERRLEN];
    void *data = NULL;
    int rc = fxu_read_stream(fd, cli_path_name(path), &data, len, err, sizeof err);
    if (!is_stdin)
        close(fd);
    if (rc)
        return cli_local_error("%s", err);
    *buf = data;
    return CLI_OK;
}

int cli_load_json(const char *path, json_t **out)
{
    unsigned char *buf = NULL;
    size_t len;
    int rc = cli_read_file(path, &buf, &len);
    if (rc)
        return rc;
    json_error_t e;
    *out = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &e);
    free(buf);
    if (!*out)
        return cli_local_error("%s:%d:%d: %s", cli_path_name(path), e.line, e.column, e.text);
    return CLI_OK;
}

/* ------------------------------------------------------------- calls */

fxc_call_opts cli_call_opts(const cli_ctx *c)
{
    fxc_call_opts o = {.timeout_ms = (int64_t)ceil(c->timeout_s * 1000)};
    return o;
}

int cli_config_load(fxc_config *cfg)
{
    char err[1024];
    char *path = fxc_config_default_path(getenv("FLUXION_CONFIG"), getenv("HOME"));
    memset(cfg, 0, sizeof *cfg);
    if (!path)
        return cli_local_error("no config file: set FLUXION_CONFIG or HOME");
    int rc = fxc_config_load(path, cfg, err, sizeof err);
    free(path);
    if (rc)
        return cli_local_error("config file %s", err);
    bool has_token = false;
    for (size_t i = 0; i < cfg->n; i++)
        has_token |= cfg->contexts[i].token != NULL;
    if (cfg->too_open && has_token)
        fprintf(stderr, "fluxion: warning: config file %s holds a token and is accessible by "
                        "others (chmod 600 %s)\n", cfg->path, cfg->path);
    return CLI_OK;
}

/* The settings of the channel (c->conn) and its token (malloc, or NULL). */
static int resolve_connection(cli_ctx *c, char **token)
{
    char err[1024];
    *token = NULL;
    fxc_config cfg = {0};
    int rc = CLI_OK;
    /* Without HOME and FLUXION_CONFIG (a service, a container) there is no
     * config file: flags and environment only. */
    if (getenv("HOME") || getenv("FLUXION_CONFIG"))
        rc = cli_config_load(&cfg);
    if (rc)
        return rc;
    rc = fxc_conn_resolve(&c->flags, &c->env, cfg.exists ? &cfg : NULL, FLUXION_DEFAULT_SERVER,
                          &c->conn, err, sizeof err);
    fxc_config_free(&cfg);
    if (rc)
        return cli_local_error("%s", err);
    c->server = c->conn.server;
    if (c->conn.token_file) {
        bool too_open;
        if (fxc_read_token_file(c->conn.token_file, token, &too_open, err, sizeof err))
            return cli_local_error("%s", err);
        if (too_open)
            fprintf(stderr, "fluxion: warning: token file %s is accessible by others "
                            "(chmod 600 %s)\n", c->conn.token_file, c->conn.token_file);
    } else if (c->conn.token && !(*token = strdup(c->conn.token))) {
        return cli_local_error("out of memory");
    }
    return CLI_OK;
}

fxc_channel *cli_channel(cli_ctx *c)
{
    if (c->ch)
        return c->ch;
    char *token = NULL;
    if (resolve_connection(c, &token))
        return NULL;
    fxc_channel_opts o = {
        .tls_ca_file = c->conn.tls_ca,
        .tls_cert_file = c->conn.tls_cert,
        .tls_key_file = c->conn.tls_key,
        .token = token,
    };
    char err[1024];
    int rc = fxc_channel_open(c->server, &o, &c->ch, err, sizeof err);
    fxc_secret_free(token);
    if (rc) {
        if (c->conn.token_source && strstr(err, "token"))
            cli_local_error("%s (token from %s)", err, c->conn.token_source);
        else
            cli_local_error("%s", err);
    }
    return c->ch;
}

cli_rpc cli_rpc_of(const ProtobufCServiceDescriptor *service, const char *method)
{
    cli_rpc r = { .req = NULL };
    const ProtobufCMethodDescriptor *m = fxc_method_path(service, method, r.path, sizeof r.path);
    if (m) {
        r.req = m->input;
        r.resp = m->output;
    } else {
        r.path[0] = '\0';
    }
    return r;
}

int cli_unary(cli_ctx *c, const ProtobufCServiceDescriptor *service, const char *method,
              const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    cli_rpc r = cli_rpc_of(service, method);
    if (!r.req || req->descriptor != r.req) /* a bug of the CLI, not of its input */
        return cli_local_error("internal error: %s has no method %s taking a %s", service->name,
                               method, req->descriptor->name);
    fxc_channel *ch = cli_channel(c);
    if (!ch)
        return CLI_ERR_LOCAL;
    char err[1024] = "";
    fxc_call_opts o = cli_call_opts(c);
    int code = fxc_unary(ch, r.path, req, r.resp, resp, &o, err, sizeof err);
    return code ? cli_status_error(c, code, err) : CLI_OK;
}

int cli_show(const cli_ctx *c, const ProtobufCMessage *resp, cli_text_fn text, const void *arg)
{
    if (c->output == CLI_OUT_JSON)
        return cli_print_message(c, resp);
    if (c->output == CLI_OUT_NAME)
        return cli_print_names(resp);
    text(resp, arg);
    return CLI_OK;
}

int cli_call_print(cli_ctx *c, const ProtobufCServiceDescriptor *service, const char *method,
                   const ProtobufCMessage *req, cli_text_fn text, const void *arg)
{
    ProtobufCMessage *resp;
    int rc = cli_unary(c, service, method, req, &resp);
    if (rc)
        return rc;
    rc = cli_show(c, resp, text, arg);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

void cli_print_done(const ProtobufCMessage *resp, const void *arg)
{
    (void)resp;
    const cli_done *d = arg;
    printf("%s %s %s\n", d->done, d->what, d->name);
}

/* ------------------------------------------------------------ output */

int cli_print_json(const cli_ctx *c, const json_t *j)
{
    if (jsonout_write(stdout, j, c->json ? JSONOUT_LINE : JSONOUT_PRETTY) || putchar('\n') == EOF ||
        fflush(stdout))
        return cli_local_error("stdout: %s", strerror(errno));
    return CLI_OK;
}

json_t *cli_message_json(const ProtobufCMessage *m)
{
    char err[256];
    json_t *j = pbjson_encode(
        m, PBJSON_ORIGINAL_NAMES | PBJSON_EMIT_DEFAULTS | PBJSON_INT64_NUMBERS, err, sizeof err);
    if (!j)
        cli_local_error("cannot write the server's answer as JSON: %s", err);
    return j;
}

int cli_print_message(const cli_ctx *c, const ProtobufCMessage *m)
{
    json_t *j = cli_message_json(m);
    if (!j)
        return CLI_ERR_LOCAL;
    int rc = cli_print_json(c, j);
    json_decref(j);
    return rc;
}

/* The name-like field of m printed on a line; false when it has none. */
static bool print_name(const ProtobufCMessage *m)
{
    static const char *const KEYS[] = {"name", "id", "subject"};
    for (size_t k = 0; k < sizeof KEYS / sizeof KEYS[0]; k++) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(m->descriptor, KEYS[k]);
        if (!f || f->label == PROTOBUF_C_LABEL_REPEATED)
            continue;
        const void *v = (const char *)m + f->offset;
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            const char *s = *(char *const *)v;
            if (!s || !*s)
                continue; /* a token without a name: its id */
            printf("%s\n", s);
            return true;
        }
        if (f->type == PROTOBUF_C_TYPE_INT64 || f->type == PROTOBUF_C_TYPE_UINT64) {
            printf("%" PRId64 "\n", *(const int64_t *)v);
            return true;
        }
    }
    return false;
}

int cli_no_names(const cli_ctx *c, const char *command)
{
    if (c->output != CLI_OUT_NAME)
        return CLI_OK;
    return cli_usage_error("-o name: `fluxion %s` prints no names; use -o table or -o json",
                           command);
}

/* The answer's own name first ("model get"), else its list's ("model list"). */
int cli_print_names(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (print_name(m))
        return CLI_OK;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
        ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)((const char *)m +
                                                                            f->offset);
        for (size_t k = 0; k < n; k++)
            if (!print_name(items[k]))
                break;
        return CLI_OK;
    }
    if (!d->n_fields)
        return CLI_OK;
    return cli_usage_error("-o name: this command's answer (%s) has no names; use -o table or "
                           "-o json", d->short_name);
}

bool cli_set_string(char **slot, const char *value)
{
    char *dup = strdup(value);
    if (!dup)
        return false;
    if (*slot && *slot != (char *)protobuf_c_empty_string)
        free(*slot);
    *slot = dup;
    return true;
}

const char *cli_time(int64_t unix_ms, char *buf, size_t len)
{
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    if (unix_ms <= 0 || !gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "-");
    return buf;
}

const char *cli_bytes(uint64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 6) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRIu64 " B", n);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

/* ------------------------------------------------------- file streams */

#define STREAM_CHUNK_BYTES (1u << 20)

typedef struct {
    FILE *f;
    unsigned char *buf;
    uint64_t total;
    cli_chunk_fn fill;
    void *ctx;
    bool first, done;
    int read_errno;
} file_stream;

static const ProtobufCMessage *file_next(void *data, int *fail)
{
    file_stream *s = data;
    if (s->done)
        return NULL;
    size_t n = fread(s->buf, 1, STREAM_CHUNK_BYTES, s->f);
    if (n < STREAM_CHUNK_BYTES && ferror(s->f)) {
        s->read_errno = errno ? errno : EIO;
        *fail = 1;
        return NULL;
    }
    if (n == 0 && !s->first)
        return NULL;
    s->done = n < STREAM_CHUNK_BYTES;
    bool first = s->first;
    s->first = false;
    return s->fill(s->ctx, first, s->total, s->buf, n);
}

int cli_stream_file(cli_ctx *c, const ProtobufCServiceDescriptor *service, const char *method,
                    const char *path, cli_chunk_fn fill, void *ctx, ProtobufCMessage **resp)
{
    *resp = NULL;
    file_stream s = {.fill = fill, .ctx = ctx, .first = true};
    bool is_stdin = !strcmp(path, "-");
    s.f = is_stdin ? stdin : fopen(path, "rb");
    if (!s.f)
        return cli_local_error("%s: %s", path, strerror(errno));
    struct stat st;
    if (!fstat(fileno(s.f), &st) && S_ISREG(st.st_mode))
        s.total = (uint64_t)st.st_size;
    s.buf = malloc(STREAM_CHUNK_BYTES);
    fxc_channel *ch = s.buf ? cli_channel(c) : NULL;
    int rc = CLI_OK;
    if (!s.buf)
        rc = cli_local_error("out of memory");
    else if (!ch)
        rc = CLI_ERR_LOCAL;
    if (!rc) {
        char err[1024] = "";
        fxc_call_opts o = cli_call_opts(c);
        cli_rpc r = cli_rpc_of(service, method);
        int code = fxc_client_stream(ch, r.path, file_next, NULL, &s, r.resp, resp, &o, err,
                                     sizeof err);
        if (s.read_errno)
            rc = cli_local_error("%s: %s", cli_path_name(path), strerror(s.read_errno));
        else if (code)
            rc = cli_status_error(c, code, err);
    }
    free(s.buf);
    if (!is_stdin)
        fclose(s.f);
    if (rc && *resp) {
        protobuf_c_message_free_unpacked(*resp, NULL);
        *resp = NULL;
    }
    return rc;
}
