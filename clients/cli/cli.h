/*
 * cli.h - the `fluxion` command-line client: shared context, the command
 * table's types, errors with the exit codes scripts rely on, files, calls.
 *
 * Exit codes (documented in `fluxion --help` and docs/cli.md):
 *   0 ok; 1 the server answered with an error; 2 usage error; 3 the server
 *   could not be reached (UNAVAILABLE, DEADLINE_EXCEEDED); 4 a local file or
 *   input error (unreadable file, bad JSON, a model file that does not
 *   match the schema).
 */
#ifndef FLUXION_CLI_H
#define FLUXION_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "cliconfig.h"
#include "rpcc.h"

/* fluxiond's default listening address. */
#define FLUXION_DEFAULT_SERVER    "127.0.0.1:7070"
#define FLUXION_DEFAULT_TIMEOUT_S 30.0

enum {
    CLI_OK = 0,
    CLI_ERR_SERVER = 1,
    CLI_ERR_USAGE = 2,
    CLI_ERR_UNREACHABLE = 3,
    CLI_ERR_LOCAL = 4,
};

/* --output (-o): how answers are printed. */
typedef enum {
    CLI_OUT_TABLE = 0, /* for people: aligned columns with headers, or "key: value" lines */
    CLI_OUT_JSON,      /* the answer's proto JSON, one document on one line (also --json) */
    CLI_OUT_NAME,      /* the names (or ids) the answer lists, one a line: for scripts */
} cli_output;

typedef struct {
    const char *server; /* for messages: the flag's or env's until the channel is opened,
                           then the resolved one */
    double timeout_s;
    cli_output output;
    bool json;       /* output == CLI_OUT_JSON: machine-readable output */
    /* Connection settings: --server, --token, --token-file, --tls-ca,
     * --tls-cert, --tls-key, --context as given, and the environment's
     * (FLUXION_SERVER, FLUXION_TOKEN, FLUXION_CONTEXT); resolved against the
     * config file (clients/common/cliconfig.h) when the channel opens. */
    fxc_conn_src flags, env;
    fxc_conn conn;
    fxc_channel *ch; /* opened on the first call */
} cli_ctx;

#define CLI_MAX_POS  4
#define CLI_MAX_OPTS 16 /* and a NULL-named end: at most 15 per command */

/* A command's own option: --name VALUE (or -c VALUE), or a flag. */
typedef struct {
    const char *name; /* without "--" */
    char short_name;  /* 0: none */
    const char *arg;  /* value placeholder for help; NULL: a flag */
    const char *help;
} cli_opt;

/* Parsed arguments: positionals in order; opt[i] the value of opts[i]
 * (a flag's value is "", NULL when not given). */
typedef struct {
    int npos;
    const char *pos[CLI_MAX_POS];
    const char *opt[CLI_MAX_OPTS];
} cli_args;

typedef struct {
    const char *name;    /* "model create" */
    const char *usage;   /* after the name: "FILE [--name NAME]" */
    const char *summary; /* one line */
    const char *details; /* more lines, or NULL */
    int min_pos, max_pos;
    cli_opt opts[CLI_MAX_OPTS]; /* ended by a NULL name */
    int (*run)(cli_ctx *c, const cli_args *a);
} cli_command;

/* The command tree, as data: the help, the parser, "did you mean" and the
 * shell completion scripts all walk these tables (main.c). A group's
 * commands are named "WORD SUB" ("model create"). */
typedef struct {
    const char *word;
    const cli_command *table;
    const size_t *n;
} cli_group;
typedef struct {
    const cli_command *table;
    const size_t *n;
} cli_top;
extern const cli_group cli_groups[];
extern const size_t cli_n_groups;
extern const cli_top cli_tops[];
extern const size_t cli_n_tops;
/* The options every command takes (--server, --output, --help, ...). */
extern const cli_opt cli_global_opts[];

/* The words of --output, in the order help lists them. */
extern const char *const cli_output_names[];
extern const size_t cli_n_output_names;

/* `model import-onnx` (cmd_onnx.c). */
int cli_cmd_import_onnx(cli_ctx *c, const cli_args *a);
extern const cli_command cli_model_commands[];
extern const size_t cli_n_model_commands;
extern const cli_command cli_dataset_commands[];
extern const size_t cli_n_dataset_commands;
extern const cli_command cli_other_commands[];
extern const size_t cli_n_other_commands;
extern const cli_command cli_train_commands[];
extern const size_t cli_n_train_commands;
extern const cli_command cli_job_commands[];
extern const size_t cli_n_job_commands;
/* cmd_admin.c: whoami (top level), team, token, cert; cmd_config.c: config */
extern const cli_command cli_admin_commands[];
extern const size_t cli_n_admin_commands;
extern const cli_command cli_team_commands[];
extern const size_t cli_n_team_commands;
extern const cli_command cli_token_commands[];
extern const size_t cli_n_token_commands;
extern const cli_command cli_cert_commands[];
extern const size_t cli_n_cert_commands;
extern const cli_command cli_config_commands[];
extern const size_t cli_n_config_commands;
/* cmd_sched.c: `queue` (top level); the handlers of `team quota`, `job
 * priority` and `job move`, which sit in the team and job tables. */
extern const cli_command cli_queue_commands[];
extern const size_t cli_n_queue_commands;
/* cmd_completion.c: `completion bash|zsh`. */
extern const cli_command cli_completion_commands[];
extern const size_t cli_n_completion_commands;
int cli_cmd_team_quota(cli_ctx *c, const cli_args *a);
int cli_cmd_job_priority(cli_ctx *c, const cli_args *a);
int cli_cmd_job_move(cli_ctx *c, const cli_args *a);
/* cmd_model_update.c: `model update`, in the model table. */
int cli_cmd_model_update(cli_ctx *c, const cli_args *a);
/* cmd_versions.c: the version commands of the model table, and the
 * versions part of `model get` (docs/versions.md). */
struct Fluxion__V1__Model;
void cli_print_model_versions(const struct Fluxion__V1__Model *m);
int cli_cmd_model_promote(cli_ctx *c, const cli_args *a);
int cli_cmd_model_rollback(cli_ctx *c, const cli_args *a);
int cli_cmd_model_alias(cli_ctx *c, const cli_args *a);
int cli_cmd_model_pin(cli_ctx *c, const cli_args *a);
int cli_cmd_model_unpin(cli_ctx *c, const cli_args *a);
int cli_cmd_model_retain(cli_ctx *c, const cli_args *a);
int cli_cmd_model_delete_version(cli_ctx *c, const cli_args *a);
/* "low", "normal", "high" (any case) -> JobPriority 1..3; usage error otherwise. */
int cli_parse_priority(const char *text, int *out);
/* A Team's text (cmd_admin.c), and its scheduling part (cmd_sched.c). */
struct Fluxion__V1__TeamQuota;
void cli_print_team(const ProtobufCMessage *msg, const void *arg);
void cli_print_sched_quota(const struct Fluxion__V1__TeamQuota *set,
                           const struct Fluxion__V1__TeamQuota *eff);

/* ------------------------------------------------------------ errors */

/* Print "fluxion: <message>" on stderr and return the exit code. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_local_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "fluxion: <STATUS_NAME>: <message>"; 3 for UNAVAILABLE and
 * DEADLINE_EXCEEDED (with the server's address), else 1. UNAUTHENTICATED
 * and PERMISSION_DENIED get a hint on a second line (how to pass a token;
 * `fluxion whoami`). */
int cli_status_error(const cli_ctx *c, int code, const char *msg);

/* "fluxion: <what> '<word>'; did you mean '<a>' or '<b>'?" naming the
 * candidates closest to word (clients/common/suggest.h), each written with
 * prefix ("--" for options); without any, "(see <see>)". Usage error. */
int cli_unknown(const char *what, const char *word, const char *prefix, const char *const *cands,
                size_t n, const char *see);

/* ----------------------------------------------------------- parsing */

/* An --output word into c->output (and c->json); usage error otherwise. */
int cli_parse_output(cli_ctx *c, const char *text);

/* A positive integer for a flag; usage error naming the flag otherwise. */
int cli_parse_positive(const char *flag, const char *text, int64_t *out);
/* A positive number of seconds (at most a million). */
int cli_parse_seconds(const char *flag, const char *text, double *out);

/* ------------------------------------------------------------- files */

/* Display name of a path argument ("-" is stdin). */
const char *cli_path_name(const char *path);
/* Whole file (or stdin for "-") into a malloc'd buffer. Files written by the
 * CLI go through base/fsutil.h too (fxu_atomic: `model export`). */
int cli_read_file(const char *path, unsigned char **buf, size_t *len);
/* A JSON document from a file or stdin: duplicate keys are an error. */
int cli_load_json(const char *path, json_t **out);

/* ------------------------------------------------------------- calls */

fxc_call_opts cli_call_opts(const cli_ctx *c);
/* The channel (opened on first use, with the settings resolved from flags,
 * environment and config file: TLS, the token); NULL after printing an
 * error (a config, token or TLS file that is missing or bad, a context
 * that does not exist: exit code CLI_ERR_LOCAL). */
fxc_channel *cli_channel(cli_ctx *c);
/* The config file (FLUXION_CONFIG, else ~/.config/fluxion/config.json);
 * warns on stderr when it holds a token and others may read it. An error
 * is printed, its exit code returned. */
int cli_config_load(fxc_config *cfg);

/* A method of the server, named by its service's protoc-c descriptor
 * (&fluxion__v1__model_service__descriptor) and its name ("GetModel"): the
 * path and the message types come from the descriptors, as the daemon's
 * rpc/ derives them, so no command writes a path by hand. For a method the
 * service lacks, path is "" and the types NULL: the call then fails. */
typedef struct {
    char path[128];
    const ProtobufCMessageDescriptor *req, *resp;
} cli_rpc;
cli_rpc cli_rpc_of(const ProtobufCServiceDescriptor *service, const char *method);

/* A file (or stdin for "-") sent to a client-streaming method in chunks of
 * up to 1 MiB. fill makes the message of each chunk (data, n bytes): the
 * first (first true; total: the file's size when it is a regular file,
 * else 0) carries what names the object, and is sent even for an empty
 * file so that the server answers about it. Read and call errors printed,
 * exit code returned; *resp: the answer. */
typedef const ProtobufCMessage *(*cli_chunk_fn)(void *ctx, bool first, uint64_t total,
                                                 const uint8_t *data, size_t n);
int cli_stream_file(cli_ctx *c, const ProtobufCServiceDescriptor *service, const char *method,
                    const char *path, cli_chunk_fn fill, void *ctx, ProtobufCMessage **resp);

/* A unary call; errors printed, exit code returned. */
int cli_unary(cli_ctx *c, const ProtobufCServiceDescriptor *service, const char *method,
              const ProtobufCMessage *req, ProtobufCMessage **resp);

/* The text form of an answer (arg: the command's). */
typedef void (*cli_text_fn)(const ProtobufCMessage *resp, const void *arg);
/* Shows an answer: its JSON with -o json (cli_print_message), its names
 * with -o name (cli_print_names), else text(). */
int cli_show(const cli_ctx *c, const ProtobufCMessage *resp, cli_text_fn text, const void *arg);
/* Call, show, free: what most commands are. */
int cli_call_print(cli_ctx *c, const ProtobufCServiceDescriptor *service, const char *method,
                   const ProtobufCMessage *req, cli_text_fn text, const void *arg);

/* The text of an answer that carries nothing: "deleted model NAME". */
typedef struct {
    const char *done, *what, *name;
} cli_done;
void cli_print_done(const ProtobufCMessage *resp, const void *arg /* a cli_done */);

/* ------------------------------------------------------------ output */

/* JSON on stdout with a newline: one line with --json, indented otherwise. */
int cli_print_json(const cli_ctx *c, const json_t *j);
/* A message as proto3 JSON with proto field names, defaults, and 64-bit
 * integers as numbers: the --json output of most commands. */
json_t *cli_message_json(const ProtobufCMessage *m);
int cli_print_message(const cli_ctx *c, const ProtobufCMessage *m);
/* -o name: the "name" (else "id", else "subject") of each entry of the
 * answer's first repeated message field ("models" of ListModelsResponse),
 * or of the answer itself. An answer with no fields prints nothing; one
 * without names is a usage error naming the other formats. */
int cli_print_names(const ProtobufCMessage *m);
/* For the commands whose answer lists no names (predict, status, export,
 * watch): a usage error with -o name, before anything is sent. */
int cli_no_names(const cli_ctx *c, const char *command);

/* A list for -o table (table.c): columns as wide as their widest cell
 * under a header line. new(n, headers), row(t, n strings), then print
 * (which frees it; an out-of-memory anywhere is reported there). */
#define CLI_TABLE_MAX_COLS 12
typedef struct cli_table cli_table;
cli_table *cli_table_new(int ncols, const char *const *headers);
void cli_table_row(cli_table *t, ...);
int cli_table_print(cli_table *t);

/* Replaces a message's string field (freeing the old one unless it is the
 * shared empty default); false on out of memory. */
bool cli_set_string(char **slot, const char *value);

/* "2026-11-21T02:00:00Z" from milliseconds since the epoch ("-" for 0). */
const char *cli_time(int64_t unix_ms, char *buf, size_t len);
/* "1.5 GiB", "312 B". */
const char *cli_bytes(uint64_t n, char *buf, size_t len);

#endif
