/*
 * main.c - `fluxion`: global options, the command table, help, dispatch.
 *
 * Global options may come before the command or anywhere after it
 * (`fluxion model list -o json`); a command's own option of the same name
 * wins after the command (`model export -o FILE`): --version before the
 * command is the program's version, after `predict` or `model export` it
 * is a model version. No prompts: every input comes from arguments, files or stdin.
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

static const char USAGE_LINE[] =
    "usage: fluxion [--server HOST:PORT] [--token-file FILE] [--context NAME]\n"
    "               [-o table|json|name] COMMAND [ARGS]\n";

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
    "  -o, --output FORMAT table (default: columns with headers, or \"key: value\" lines),\n"
    "                      json (the answer's proto JSON: one document on one line) or\n"
    "                      name (the names or ids listed, one a line; for scripts).\n"
    "                      A command's own -o/--output (`model export -o FILE`) wins\n"
    "  --json              the same as -o json\n"
    "  -h, --help          this help; `fluxion COMMAND --help` for a command's\n"
    "  -V, --version       print the version and exit\n"
    "\n"
    "Shell completion (commands, options, names): see `fluxion completion --help`.\n"
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
const cli_group cli_groups[] = {
    {"model", cli_model_commands, &cli_n_model_commands},
    {"dataset", cli_dataset_commands, &cli_n_dataset_commands},
    {"train", cli_train_commands, &cli_n_train_commands},
    {"job", cli_job_commands, &cli_n_job_commands},
    {"team", cli_team_commands, &cli_n_team_commands},
    {"token", cli_token_commands, &cli_n_token_commands},
    {"cert", cli_cert_commands, &cli_n_cert_commands},
    {"config", cli_config_commands, &cli_n_config_commands},
};
const size_t cli_n_groups = sizeof cli_groups / sizeof cli_groups[0];

/* Top-level commands without a group. */
const cli_top cli_tops[] = {
    {cli_other_commands, &cli_n_other_commands},
    {cli_admin_commands, &cli_n_admin_commands},
    {cli_queue_commands, &cli_n_queue_commands},
    {cli_completion_commands, &cli_n_completion_commands},
};
const size_t cli_n_tops = sizeof cli_tops / sizeof cli_tops[0];

/* Every command's options (GLOBAL_OPTIONS is their help). The parser's
 * connection settings are the first seven, in this order. */
const cli_opt cli_global_opts[] = {
    {"server", 0, "HOST:PORT", "the server"},
    {"token", 0, "TOKEN", "the bearer token"},
    {"token-file", 0, "FILE", "read the token from FILE"},
    {"tls-ca", 0, "FILE", "CA certificates (PEM): connect with TLS"},
    {"tls-cert", 0, "FILE", "a client certificate (with --tls-key)"},
    {"tls-key", 0, "FILE", "the client certificate's key"},
    {"context", 0, "NAME", "the config file's context NAME"},
    {"timeout", 0, "SECONDS", "deadline of each call"},
    {"output", 'o', "FORMAT", "table (default), json or name"},
    {"json", 0, NULL, "the same as -o json"},
    {"help", 'h', NULL, "help"},
    {"version", 'V', NULL, "print the version and exit"},
    {NULL, 0, NULL, NULL},
};
#define N_CONN_OPTS 7

static void print_main_help(FILE *f)
{
    fprintf(f, "%s\n", USAGE_LINE);
    fprintf(f, "Defines, stores, trains and serves models on a fluxiond server, over gRPC.\n\n"
               "commands:\n");
    for (size_t g = 0; g < cli_n_groups; g++)
        for (size_t i = 0; i < *cli_groups[g].n; i++)
            print_command_line(f, &cli_groups[g].table[i]);
    for (size_t t = 0; t < cli_n_tops; t++)
        for (size_t i = 0; i < *cli_tops[t].n; i++)
            print_command_line(f, &cli_tops[t].table[i]);
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
            "--tls-ca FILE,\n--tls-cert FILE, --tls-key FILE, --context NAME, --timeout SECONDS,\n"
            "-o table|json|name, --json (see fluxion --help)\n\n%s",
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
    const char *inl = NULL, *value = NULL, *name;
    if (!strcmp(argv[*i], "-o"))
        name = "output";
    else if (!strncmp(argv[*i], "--", 2))
        name = split_long(argv[*i], buf, sizeof buf, &inl);
    else
        return NOT_MINE;
    if (!strcmp(name, "json")) {
        if (inl)
            return cli_usage_error("--json takes no value");
        return cli_parse_output(c, "json") ? CLI_ERR_USAGE : HANDLED;
    }
    if (!strcmp(name, "output")) {
        int rc = option_value(argc, argv, i, name, inl, &value);
        if (rc != HANDLED)
            return rc;
        return cli_parse_output(c, value) ? CLI_ERR_USAGE : HANDLED;
    }
    /* the connection's settings: strings, resolved when the channel opens */
    const struct { const char **slot; const char *what; } conn[N_CONN_OPTS] = {
        {&c->flags.server, "HOST:PORT"},
        {&c->flags.token, "a token"},
        {&c->flags.token_file, "a file"},
        {&c->flags.tls_ca, "a file"},
        {&c->flags.tls_cert, "a file"},
        {&c->flags.tls_key, "a file"},
        {&c->flags.context, "a context name"},
    };
    for (size_t k = 0; k < N_CONN_OPTS; k++) {
        const char *opt = cli_global_opts[k].name;
        if (strcmp(name, opt))
            continue;
        int rc = option_value(argc, argv, i, opt, inl, &value);
        if (rc != HANDLED)
            return rc;
        if (!*value)
            return cli_usage_error("--%s: expected %s, got an empty string", opt, conn[k].what);
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

/* The long names of the global options and, if cmd, of its own: the
 * candidates of "did you mean" for an unknown option. */
static size_t option_names(const cli_command *cmd, const char **out)
{
    size_t n = 0;
    for (const cli_opt *o = cmd ? cmd->opts : NULL; o && o->name; o++)
        out[n++] = o->name;
    for (const cli_opt *o = cli_global_opts; o->name; o++)
        out[n++] = o->name;
    return n;
}

static int unknown_option(const cli_command *cmd, const char *arg)
{
    const char *names[CLI_MAX_OPTS + 16];
    size_t n = option_names(cmd, names);
    char what[96], see[96];
    snprintf(what, sizeof what, "%s%sunknown option", cmd ? cmd->name : "", cmd ? ": " : "");
    snprintf(see, sizeof see, "fluxion %s%s--help", cmd ? cmd->name : "", cmd ? " " : "");
    return cli_unknown(what, arg, "--", names, n, see);
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
        return unknown_option(cmd, arg);
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
 * `config set-context`, "-o FILE" of `model export`): it takes precedence
 * over the global one. */
static bool command_has(const cli_command *cmd, const char *arg)
{
    char buf[64];
    const char *inl;
    if (arg[0] == '-' && arg[1] && arg[1] != '-' && !arg[2]) {
        for (const cli_opt *o = cmd->opts; o->name; o++)
            if (o->short_name == arg[1])
                return true;
        return false;
    }
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

#define MAX_WORDS 64

static int unknown_subcommand(const cli_group *g, const char *sub)
{
    const char *subs[MAX_WORDS];
    size_t n = 0;
    for (size_t i = 0; i < *g->n && n < MAX_WORDS; i++)
        subs[n++] = g->table[i].name + strlen(g->word) + 1; /* "model list" -> "list" */
    char what[64], see[64];
    snprintf(what, sizeof what, "%s: unknown subcommand", g->word);
    snprintf(see, sizeof see, "fluxion %s --help", g->word);
    return cli_unknown(what, sub, "", subs, n, see);
}

static int unknown_command(const char *word)
{
    const char *words[MAX_WORDS];
    size_t n = 0;
    for (size_t k = 0; k < cli_n_groups && n < MAX_WORDS; k++)
        words[n++] = cli_groups[k].word;
    for (size_t t = 0; t < cli_n_tops; t++)
        for (size_t i = 0; i < *cli_tops[t].n && n < MAX_WORDS; i++)
            words[n++] = cli_tops[t].table[i].name;
    return cli_unknown("unknown command", word, "", words, n, "fluxion --help");
}

/* A group's SUB ("model list") or a top-level command at argv[*i]; *i
 * moves past it. */
static int select_command(int argc, char **argv, int *i, const cli_command **out)
{
    const char *word = argv[*i];
    const cli_group *g = NULL;
    for (size_t k = 0; k < cli_n_groups; k++)
        if (!strcmp(word, cli_groups[k].word))
            g = &cli_groups[k];
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
            return unknown_subcommand(g, sub);
    } else {
        *out = NULL;
        for (size_t t = 0; t < cli_n_tops && !*out; t++)
            *out = find_command(cli_tops[t].table, *cli_tops[t].n, word);
        if (!*out)
            return unknown_command(word);
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
            return unknown_option(NULL, argv[i]);
        if (rc != HANDLED)
            return rc;
    }
    if (i >= argc) {
        fprintf(stderr, "%s", USAGE_LINE);
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
