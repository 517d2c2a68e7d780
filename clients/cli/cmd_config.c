/*
 * cmd_config.c - `fluxion config ...`: the contexts of the config file
 * (clients/common/cliconfig.h). Nothing here talks to a server.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* A path given on the command line, made absolute: in the file, relative
 * paths would be taken relative to the file's directory instead. */
static char *absolute(const char *path)
{
    if (!path || !*path || path[0] == '/')
        return path ? strdup(path) : NULL;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return NULL;
    return fxu_strf("%s/%s", cwd, path);
}

static int save(fxc_config *cfg)
{
    char err[1024];
    if (fxc_config_save(cfg, err, sizeof err))
        return cli_local_error("cannot write the config file: %s", err);
    return CLI_OK;
}

/* options: 0 server, 1 token, 2 token-file, 3 tls-ca, 4 tls-cert, 5 tls-key, 6 use */
static int cmd_set_context(cli_ctx *c, const cli_args *a)
{
    (void)c;
    if (a->opt[1] && a->opt[2] && *a->opt[1] && *a->opt[2])
        return cli_usage_error("config set-context: give --token or --token-file, not both");
    fxc_config cfg;
    int rc = cli_config_load(&cfg);
    if (rc)
        return rc;
    char *paths[4] = {NULL};
    fxc_context f = {
        .name = (char *)a->pos[0], .server = (char *)a->opt[0], .token = (char *)a->opt[1]};
    char **slots[4] = {&f.token_file, &f.tls_ca, &f.tls_cert, &f.tls_key};
    for (int i = 0; i < 4; i++) {
        if (!a->opt[2 + i])
            continue;
        if (!(paths[i] = absolute(a->opt[2 + i]))) {
            rc = cli_local_error("cannot make %s absolute: %s", a->opt[2 + i], strerror(errno));
            goto out;
        }
        *slots[i] = paths[i];
    }
    char err[1024];
    if (fxc_config_set(&cfg, &f, err, sizeof err)) {
        rc = cli_usage_error("config set-context: %s", err);
        goto out;
    }
    const fxc_context *ctx = fxc_config_find(&cfg, a->pos[0]);
    if (!!ctx->tls_cert != !!ctx->tls_key)
        fprintf(stderr,
                "fluxion: warning: context '%s' has a client %s without its %s (set "
                "both --tls-cert and --tls-key)\n",
                ctx->name, ctx->tls_cert ? "certificate" : "key",
                ctx->tls_cert ? "key" : "certificate");
    if (a->opt[6] && fxc_config_use(&cfg, a->pos[0], err, sizeof err)) {
        rc = cli_local_error("%s", err);
        goto out;
    }
    if (!cfg.current) /* the first context becomes the current one */
        fxc_config_use(&cfg, a->pos[0], err, sizeof err);
    rc = save(&cfg);
    if (!rc) {
        printf("context %s set in %s%s\n", a->pos[0], cfg.path,
               cfg.current && !strcmp(cfg.current, a->pos[0]) ? " (current)" : "");
        if (a->opt[1] && *a->opt[1])
            fprintf(stderr,
                    "fluxion: note: the token is stored in plain text in %s (mode "
                    "0600); --token-file keeps it in a file of its own\n",
                    cfg.path);
    }
out:
    for (int i = 0; i < 4; i++)
        free(paths[i]);
    fxc_config_free(&cfg);
    return rc;
}

static int cmd_use_context(cli_ctx *c, const cli_args *a)
{
    (void)c;
    fxc_config cfg;
    int rc = cli_config_load(&cfg);
    if (rc)
        return rc;
    char err[1024];
    if (fxc_config_use(&cfg, a->pos[0], err, sizeof err))
        rc = cli_usage_error("config use-context: %s", err);
    else if (!(rc = save(&cfg)))
        printf("switched to context %s\n", a->pos[0]);
    fxc_config_free(&cfg);
    return rc;
}

static int cmd_delete_context(cli_ctx *c, const cli_args *a)
{
    (void)c;
    fxc_config cfg;
    int rc = cli_config_load(&cfg);
    if (rc)
        return rc;
    char err[1024];
    if (fxc_config_delete(&cfg, a->pos[0], err, sizeof err))
        rc = cli_usage_error("config delete-context: %s", err);
    else if (!(rc = save(&cfg)))
        printf("deleted context %s\n", a->pos[0]);
    fxc_config_free(&cfg);
    return rc;
}

static const char *or_dash(const char *s) { return s && *s ? s : "-"; }

/* The token of a context as shown: never its secret. */
static const char *token_shown(const fxc_context *x)
{
    return x->token ? "(in the file)" : x->token_file ? x->token_file : "-";
}

static int cmd_get_contexts(cli_ctx *c, const cli_args *a)
{
    (void)a;
    fxc_config cfg;
    int rc = cli_config_load(&cfg);
    if (rc)
        return rc;
    if (c->json) {
        json_t *list = json_array();
        for (size_t i = 0; list && i < cfg.n; i++) {
            const fxc_context *x = &cfg.contexts[i];
            json_t *o =
                json_pack("{s:s, s:b, s:s?, s:b, s:s?, s:s?, s:s?, s:s?}", "name", x->name,
                          "current", cfg.current && !strcmp(cfg.current, x->name), "server",
                          x->server, "token_set", x->token != NULL, "token_file", x->token_file,
                          "tls_ca", x->tls_ca, "tls_cert", x->tls_cert, "tls_key", x->tls_key);
            if (!o || json_array_append_new(list, o)) {
                json_decref(list);
                list = NULL;
            }
        }
        json_t *root = list ? json_pack("{s:s?, s:s, s:o}", "current_context", cfg.current, "path",
                                        cfg.path, "contexts", list)
                            : NULL;
        rc = root ? cli_print_json(c, root) : cli_local_error("out of memory");
        json_decref(root);
    } else if (c->output == CLI_OUT_NAME) {
        for (size_t i = 0; i < cfg.n; i++)
            printf("%s\n", cfg.contexts[i].name);
    } else if (!cfg.n) {
        printf("no contexts in %s (fluxion config set-context NAME --server HOST:PORT ...)\n",
               cfg.path);
    } else {
        int w = 4, ws = 6;
        for (size_t i = 0; i < cfg.n; i++) {
            if ((int)strlen(cfg.contexts[i].name) > w)
                w = (int)strlen(cfg.contexts[i].name);
            if (cfg.contexts[i].server && (int)strlen(cfg.contexts[i].server) > ws)
                ws = (int)strlen(cfg.contexts[i].server);
        }
        printf("%-7s  %-*s  %-*s  %-4s  %s\n", "CURRENT", w, "NAME", ws, "SERVER", "TLS", "TOKEN");
        for (size_t i = 0; i < cfg.n; i++) {
            const fxc_context *x = &cfg.contexts[i];
            bool cur = cfg.current && !strcmp(cfg.current, x->name);
            const char *tls = x->tls_cert ? "mtls" : x->tls_ca ? "yes" : "no";
            printf("%-7s  %-*s  %-*s  %-4s  %s\n", cur ? "*" : "", w, x->name, ws,
                   or_dash(x->server), tls, token_shown(x));
        }
    }
    fxc_config_free(&cfg);
    return rc;
}

static const char CONFIG_DETAILS[] =
    "The config file is $FLUXION_CONFIG, else ~/.config/fluxion/config.json, written\n"
    "with mode 0600. Relative file names given here are stored as absolute paths.\n"
    "Settings given later as flags or environment (FLUXION_SERVER, FLUXION_TOKEN)\n"
    "override the context's; --context NAME or FLUXION_CONTEXT picks another context.\n"
    "Options not given keep their values; an empty value (--tls-ca \"\") removes one.\n";

const cli_command cli_config_commands[] = {
    {"config set-context",
     "NAME [--server HOST:PORT] [--token-file FILE] [--tls-ca FILE] ...",
     "create or change a context of the config file",
     CONFIG_DETAILS,
     1,
     1,
     {{"server", 0, "HOST:PORT", "the server"},
      {"token", 0, "TOKEN", "a token, stored in the file"},
      {"token-file", 0, "FILE", "a file holding the token"},
      {"tls-ca", 0, "FILE", "TLS: the CA certificates that verify the server"},
      {"tls-cert", 0, "FILE", "mutual TLS: the client certificate"},
      {"tls-key", 0, "FILE", "mutual TLS: the client key"},
      {"use", 0, NULL, "make it the current context"}},
     cmd_set_context},
    {"config use-context",
     "NAME",
     "make NAME the current context",
     NULL,
     1,
     1,
     {{0}},
     cmd_use_context},
    {"config get-contexts",
     "",
     "list the contexts (never a token's secret); * marks the current",
     NULL,
     0,
     0,
     {{0}},
     cmd_get_contexts},
    {"config delete-context",
     "NAME",
     "remove a context from the config file",
     NULL,
     1,
     1,
     {{0}},
     cmd_delete_context},
};
const size_t cli_n_config_commands = sizeof cli_config_commands / sizeof cli_config_commands[0];
