/*
 * main.c - `fluxion`: global options, the command table, help, dispatch.
 *
 * Global options may come before the command or anywhere after it
 * (`fluxion model list --json`); --version before the command is the
 * program's version, after `predict` or `model export` it is a model
 * version. No prompts: every input comes from arguments, files or stdin.
 */
#include "cli.h"
#include "fx_version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char EXIT_CODES[] =
    "exit codes:\n"
    "  0  ok\n"
    "  1  the server answered with an error (\"fluxion: STATUS_NAME: message\" on stderr)\n"
    "  2  usage error (unknown command or option, bad option value)\n"
    "  3  the server could not be reached (UNAVAILABLE, DEADLINE_EXCEEDED)\n"
    "  4  local file or input error (unreadable file, bad JSON, input not matching\n"
    "     the model file or tensor format)\n";

static const char GLOBAL_OPTIONS[] =
    "options:\n"
    "  --server HOST:PORT  the server (default: $FLUXION_SERVER, else the context's, else\n"
    "                      " FLUXION_DEFAULT_SERVER ")\n"
    "  --token TOKEN       the bearer token sent with every call (default: $FLUXION_TOKEN,\n"
    "                      else the context's); visible to other local users in `ps`:\n"
    "                      prefer --token-file or the environment\n"
    "  --token-file FILE   read the token from FILE (keep it chmod 600)\n"
    "  --tls-ca FILE       connect with TLS, verifying the server with the CA certificates\n"
    "                      in FILE (PEM)\n"
    "  --tls-cert FILE     with --tls-key FILE: a client certificate (mutual TLS)\n"
    "  --context NAME      the config file's context NAME (default: $FLUXION_CONTEXT,\n"
    "                      else its current_context); see `fluxion config --help`\n"
    "  --timeout SECONDS   deadline of each call (default 30)\n"
    "  --json              machine-readable output: JSON on one line\n"
    "  -h, --help          this help; `fluxion COMMAND --help` for a command's\n"
    "  -V, --version       print the version and exit\n"
    "\n"
    "Settings come from the flags, else the environment (FLUXION_SERVER, FLUXION_TOKEN,\n"
    "FLUXION_CONTEXT), else the context of the config file ($FLUXION_CONFIG, default\n"
    "~/.config/fluxion/config.json), else the defaults.\n";

/* The space between a command's name and its usage, if it has one. */
#define SEP(cmd) (*(cmd)->usage ? " " : "")

static void print_command_line(FILE *f, const cli_command *cmd)
{
    char left[80];
    snprintf(left, sizeof left, "%s%s%s", cmd->name, SEP(cmd), cmd->usage);
    /* Usage strings past the column go on their own line. */
    if (strlen(left) > 34)
        fprintf(f, "  %s\n  %-34s %s\n", left, "", cmd->summary);
    else
        fprintf(f, "  %-34s %s\n", left, cmd->summary);
}

/* Commands with subcommands ("model create", "dataset upload"). */
typedef struct {
    const char *word;
    const cli_command *table;
    const size_t *n;
} cli_group;

static const cli_group GROUPS[] = {
    {"model", cli_model_commands, &cli_n_model_commands},
    {"dataset", cli_dataset_commands, &cli_n_dataset_commands},
    {"train", cli_train_commands, &cli_n_train_commands},
    {"job", cli_job_commands, &cli_n_job_commands},
    {"team", cli_team_commands, &cli_n_team_commands},
    {"token", cli_token_commands, &cli_n_token_commands},
    {"cert", cli_cert_commands, &cli_n_cert_commands},
    {"config", cli_config_commands, &cli_n_config_commands},
};

/* Top-level commands without a group. */
static const struct {
    const cli_command *table;
    const size_t *n;
} TOPS[] = {
    {cli_other_commands, &cli_n_other_commands},
    {cli_admin_commands, &cli_n_admin_commands},
    {cli_queue_commands, &cli_n_queue_commands},
};
#define N_TOPS (sizeof TOPS / sizeof TOPS[0])
#define N_GROUPS (sizeof GROUPS / sizeof GROUPS[0])

static void print_main_help(FILE *f)
{
    fprintf(f, "usage: fluxion [--server HOST:PORT] [--token-file FILE] [--context NAME] [--json] "
               "COMMAND [ARGS]\n\n"
               "Defines, stores, trains and serves models on a fluxiond server, over gRPC.\n\n"
               "commands:\n");
    for (size_t g = 0; g < N_GROUPS; g++)
        for (size_t i = 0; i < *GROUPS[g].n; i++)
            print_command_line(f, &GROUPS[g].table[i]);
    for (size_t t = 0; t < N_TOPS; t++)
        for (size_t i = 0; i < *TOPS[t].n; i++)
            print_command_line(f, &TOPS[t].table[i]);
    fprintf(f, "\n%s\n%s", GLOBAL_OPTIONS, EXIT_CODES);
}

static void print_group_help(FILE *f, const cli_group *g)
{
    fprintf(f, "usage: fluxion %s SUBCOMMAND [ARGS]\n\nsubcommands:\n", g->word);
    for (size_t i = 0; i < *g->n; i++)
        print_command_line(f, &g->table[i]);
    fprintf(f, "\n`fluxion %s SUBCOMMAND --help` for details.\n", g->word);
}

static void print_command_help(FILE *f, const cli_command *cmd)
{
    fprintf(f, "usage: fluxion %s%s%s\n\n%s\n", cmd->name, SEP(cmd), cmd->usage, cmd->summary);
    if (cmd->details)
        fprintf(f, "\n%s", cmd->details);
    if (cmd->opts[0].name) {
        fprintf(f, "\noptions:\n");
        for (const cli_opt *o = cmd->opts; o->name; o++) {
            char left[64];
            if (o->short_name)
                snprintf(left, sizeof left, "-%c, --%s%s%s", o->short_name, o->name,
                         o->arg ? " " : "", o->arg ? o->arg : "");
            else
                snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "",
                         o->arg ? o->arg : "");
            fprintf(f, "  %-24s %s\n", left, o->help);
        }
    }
    fprintf(f,
            "\nglobal options: --server HOST:PORT, --token TOKEN, --token-file FILE, "
            "--tls-ca FILE,\n--tls-cert FILE, --tls-key FILE, --context NAME, --timeout SECONDS, "
            "--json (see fluxion --help)\n\n%s",
            EXIT_CODES);
}

/* ---------------------------------------------------------------- parsing */

enum { HANDLED = -1, NOT_MINE = -2, HELP = -3 };

/* The value of option `name`: "--name=value" (inline) or the next argument. */
static int option_value(int argc, char **argv, int *i, const char *name, const char *inl,
                        const char **value)
{
    if (inl) {
        *value = inl;
        return HANDLED;
    }
    if (*i + 1 >= argc)
        return cli_usage_error("--%s: missing value", name);
    *value = argv[++*i];
    return HANDLED;
}

/* Splits "--name=value"; name is copied into buf. */
static const char *split_long(const char *arg, char *buf, size_t len, const char **inl)
{
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    if (n >= len)
        n = len - 1;
    memcpy(buf, arg, n);
    buf[n] = '\0';
    *inl = eq ? eq + 1 : NULL;
    return buf + 2;
}

static int global_option(cli_ctx *c, int argc, char **argv, int *i)
{
    char buf[64];
    const char *inl, *value = NULL;
    if (strncmp(argv[*i], "--", 2))
        return NOT_MINE;
    const char *name = split_long(argv[*i], buf, sizeof buf, &inl);
    if (!strcmp(name, "json")) {
        if (inl)
            return cli_usage_error("--json takes no value");
        c->json = true;
        return HANDLED;
    }
    /* the connection's settings: strings, resolved when the channel opens */
    const struct { const char *name; const char **slot; const char *what; } conn[] = {
        {"server", &c->flags.server, "HOST:PORT"},
        {"token", &c->flags.token, "a token"},
        {"token-file", &c->flags.token_file, "a file"},
        {"tls-ca", &c->flags.tls_ca, "a file"},
        {"tls-cert", &c->flags.tls_cert, "a file"},
        {"tls-key", &c->flags.tls_key, "a file"},
        {"context", &c->flags.context, "a context name"},
    };
    for (size_t k = 0; k < sizeof conn / sizeof conn[0]; k++) {
        if (strcmp(name, conn[k].name))
            continue;
        int rc = option_value(argc, argv, i, conn[k].name, inl, &value);
        if (rc != HANDLED)
            return rc;
        if (!*value)
            return cli_usage_error("--%s: expected %s, got an empty string", conn[k].name,
                                   conn[k].what);
        *conn[k].slot = value;
        if (conn[k].slot == &c->flags.server)
            c->server = value;
        return HANDLED;
    }
    if (!strcmp(name, "timeout")) {
        int rc = option_value(argc, argv, i, name, inl, &value);
        if (rc != HANDLED)
            return rc;
        return cli_parse_seconds("--timeout", value, &c->timeout_s) ? CLI_ERR_USAGE : HANDLED;
    }
    return NOT_MINE;
}

static int command_option(const cli_command *cmd, cli_args *a, int argc, char **argv, int *i)
{
    char buf[64];
    const char *arg = argv[*i], *inl = NULL, *name = NULL;
    const cli_opt *o = cmd->opts;
    if (!strncmp(arg, "--", 2)) {
        name = split_long(arg, buf, sizeof buf, &inl);
        while (o->name && strcmp(o->name, name))
            o++;
    } else {
        while (o->name && !(o->short_name == arg[1] && arg[2] == '\0'))
            o++;
    }
    if (!o->name)
        return cli_usage_error("%s: unknown option %s (see fluxion %s --help)", cmd->name, arg,
                               cmd->name);
    int idx = (int)(o - cmd->opts);
    if (a->opt[idx])
        return cli_usage_error("%s: --%s given twice", cmd->name, o->name);
    if (!o->arg) {
        if (inl)
            return cli_usage_error("--%s takes no value", o->name);
        a->opt[idx] = "";
        return HANDLED;
    }
    return option_value(argc, argv, i, o->name, inl, &a->opt[idx]);
}

/* True when the command has its own option of that name ("--server" of
 * `config set-context`): it takes precedence over the global one. */
static bool command_has(const cli_command *cmd, const char *arg)
{
    char buf[64];
    const char *inl;
    if (strncmp(arg, "--", 2))
        return false;
    const char *name = split_long(arg, buf, sizeof buf, &inl);
    for (const cli_opt *o = cmd->opts; o->name; o++)
        if (!strcmp(o->name, name))
            return true;
    return false;
}

static bool is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

static int parse_args(cli_ctx *c, const cli_command *cmd, int argc, char **argv, int i, cli_args *a)
{
    bool only_pos = false;
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_pos && arg[0] == '-' && arg[1]) {
            if (!strcmp(arg, "--")) {
                only_pos = true;
                continue;
            }
            if (is_help(arg))
                return HELP;
            int rc = command_has(cmd, arg) ? NOT_MINE : global_option(c, argc, argv, &i);
            if (rc == NOT_MINE)
                rc = command_option(cmd, a, argc, argv, &i);
            if (rc != HANDLED)
                return rc;
            continue;
        }
        if (a->npos == cmd->max_pos)
            return cli_usage_error("%s: unexpected argument \"%s\" (usage: fluxion %s%s%s)",
                                   cmd->name, arg, cmd->name, SEP(cmd), cmd->usage);
        a->pos[a->npos++] = arg;
    }
    if (a->npos < cmd->min_pos)
        return cli_usage_error("%s: missing arguments (usage: fluxion %s %s)", cmd->name, cmd->name,
                               cmd->usage); /* only commands with arguments */
    return CLI_OK;
}

static const cli_command *find_command(const cli_command *table, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(table[i].name, name))
            return &table[i];
    return NULL;
}

/* A group's SUB ("model list") or a top-level command at argv[*i]; *i
 * moves past it. */
static int select_command(int argc, char **argv, int *i, const cli_command **out)
{
    const char *word = argv[*i];
    const cli_group *g = NULL;
    for (size_t k = 0; k < N_GROUPS; k++)
        if (!strcmp(word, GROUPS[k].word))
            g = &GROUPS[k];
    if (g) {
        if (*i + 1 >= argc) {
            print_group_help(stderr, g);
            return cli_usage_error("%s: missing subcommand", word);
        }
        const char *sub = argv[++*i];
        if (is_help(sub)) {
            print_group_help(stdout, g);
            return HELP;
        }
        char full[64];
        snprintf(full, sizeof full, "%s %s", word, sub);
        *out = find_command(g->table, *g->n, full);
        if (!*out)
            return cli_usage_error("%s: unknown subcommand \"%s\" (see fluxion %s --help)", word,
                                   sub, word);
    } else {
        *out = NULL;
        for (size_t t = 0; t < N_TOPS && !*out; t++)
            *out = find_command(TOPS[t].table, *TOPS[t].n, word);
        if (!*out)
            return cli_usage_error("unknown command \"%s\" (see fluxion --help)", word);
    }
    ++*i;
    return CLI_OK;
}

int main(int argc, char **argv)
{
    const char *env = getenv("FLUXION_SERVER");
    cli_ctx c = {
        .server = env && *env ? env : FLUXION_DEFAULT_SERVER,
        .timeout_s = FLUXION_DEFAULT_TIMEOUT_S,
        .env = { .server = env, .token = getenv("FLUXION_TOKEN"),
                 .context = getenv("FLUXION_CONTEXT") },
    };
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (is_help(argv[i])) {
            print_main_help(stdout);
            return CLI_OK;
        }
        if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V")) {
            printf("fluxion %s\n", FX_VERSION_STRING);
            return CLI_OK;
        }
        int rc = global_option(&c, argc, argv, &i);
        if (rc == NOT_MINE)
            return cli_usage_error("unknown option %s (see fluxion --help)", argv[i]);
        if (rc != HANDLED)
            return rc;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: fluxion [--server HOST:PORT] [--token-file FILE] "
                        "[--context NAME] [--json] COMMAND [ARGS]\n");
        return cli_usage_error("no command given (see fluxion --help)");
    }
    const cli_command *cmd;
    int rc = select_command(argc, argv, &i, &cmd);
    if (rc)
        return rc == HELP ? CLI_OK : rc;
    cli_args a = {0};
    rc = parse_args(&c, cmd, argc, argv, i, &a);
    if (rc == HELP) {
        print_command_help(stdout, cmd);
        return CLI_OK;
    }
    if (rc)
        return rc;
    if (c.flags.token && c.flags.token_file)
        return cli_usage_error("give --token or --token-file, not both");
    if (!c.flags.tls_cert != !c.flags.tls_key)
        return cli_usage_error("--tls-cert and --tls-key go together (a client certificate "
                               "and its key)");
    rc = cmd->run(&c, &a);
    if (c.ch)
        fxc_channel_free(c.ch);
    fxc_conn_free(&c.conn);
    return rc;
}
