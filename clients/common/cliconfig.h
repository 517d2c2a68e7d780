/*
 * cliconfig.h - where a client's connection settings come from: the
 * `fluxion` CLI's config file of named contexts (like kubectl's), the
 * environment and the command line, and the token files they name.
 *
 * The config file (FLUXION_CONFIG, default ~/.config/fluxion/config.json):
 *
 *   {"current_context": "prod",
 *    "contexts": {"prod": {"server": "fluxion.example.com:7443",
 *                          "token_file": "prod.token", "tls_ca": "ca.pem"},
 *                 "local": {"server": "127.0.0.1:7070"}}}
 *
 * A context's keys: server, token, token_file, tls_ca, tls_cert, tls_key
 * (all strings, all optional). Relative paths in the file are relative to
 * the file's directory. Unknown keys are refused (a typo would otherwise
 * silently drop a setting).
 *
 * Precedence, field by field: command-line flags > environment > the
 * context > defaults. The context is --context, else FLUXION_CONTEXT, else
 * the file's current_context. The credentials are taken as units: the
 * token (token or token_file) from the first source that gives either, and
 * the client certificate (tls_cert and tls_key) from the first source that
 * gives either; one source giving both a token and a token file, or half
 * a certificate pair, is an error.
 *
 * No gRPC here: pure parsing, testable alone (tests/unit/test_cli_config.c).
 */
#ifndef FXC_CLICONFIG_H
#define FXC_CLICONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *name;
    char *server, *token, *token_file, *tls_ca, *tls_cert, *tls_key; /* NULL: not set */
} fxc_context;

typedef struct {
    char *path;    /* the file it was read from (or will be written to) */
    char *dir;     /* its directory: relative paths in the file are relative to it */
    char *current; /* current_context, or NULL */
    fxc_context *contexts;
    size_t n;
    bool exists;   /* the file was there */
    bool too_open; /* the file is readable or writable by group or others */
} fxc_config;

/* The config file's path: env_config (FLUXION_CONFIG) when set and not "",
 * else HOME/.config/fluxion/config.json. NULL without either (or out of
 * memory). malloc. */
char *fxc_config_default_path(const char *env_config, const char *home);

/* Reads the file at path. A missing file is an empty config (0, exists
 * false). FXS_INVALID_ARGUMENT for bad JSON or a wrong shape, with a
 * message naming the file and the key ("PATH: contexts.prod.server:
 * expected a string"); FXS_INTERNAL for a file that cannot be read. */
int fxc_config_load(const char *path, fxc_config *out, char *err, size_t errlen);
/* Writes cfg to cfg->path atomically, mode 0600, creating its directory
 * (0700) when missing. */
int fxc_config_save(const fxc_config *cfg, char *err, size_t errlen);
void fxc_config_free(fxc_config *cfg);

fxc_context *fxc_config_find(const fxc_config *cfg, const char *name);
/* Creates the context fields->name, or updates it: each non-NULL field of
 * fields replaces the context's ("" removes it). Setting token removes
 * token_file and the reverse. Context names: 1..64 of [A-Za-z0-9._@:-]. */
int fxc_config_set(fxc_config *cfg, const fxc_context *fields, char *err, size_t errlen);
/* Removes a context (and current_context when it was that one):
 * FXS_NOT_FOUND when there is none. */
int fxc_config_delete(fxc_config *cfg, const char *name, char *err, size_t errlen);
/* Makes name the current context: FXS_NOT_FOUND when there is none. */
int fxc_config_use(fxc_config *cfg, const char *name, char *err, size_t errlen);

/* One source of settings (flags, or the environment); NULL or "": not set. */
typedef struct {
    const char *server, *token, *token_file, *tls_ca, *tls_cert, *tls_key, *context;
} fxc_conn_src;

/* The settings to connect with (malloc'd strings, NULL: not set). */
typedef struct {
    char *server;
    char *token, *token_file; /* at most one of the two */
    char *tls_ca, *tls_cert, *tls_key;
    char *context;      /* the context used, or NULL */
    char *token_source; /* where the token came from, for messages:
                           "--token", "FLUXION_TOKEN", "context 'prod'" */
} fxc_conn;

/* Resolves the settings (flags > env > the context > default_server).
 * cfg may be NULL (no file). A context named by --context or
 * FLUXION_CONTEXT (or current_context) that is not in the file:
 * FXS_NOT_FOUND naming it and the file. */
int fxc_conn_resolve(const fxc_conn_src *flags, const fxc_conn_src *env, const fxc_config *cfg,
                     const char *default_server, fxc_conn *out, char *err, size_t errlen);
void fxc_conn_free(fxc_conn *c);

/* A token file's secret: its content without surrounding whitespace; one
 * line, not empty (FXS_INVALID_ARGUMENT otherwise, naming the file, never
 * the content). *too_open: the file is readable by group or others (the
 * caller warns, like ssh). *token is malloc'd: free it with
 * fxc_secret_free. */
int fxc_read_token_file(const char *path, char **token, bool *too_open, char *err, size_t errlen);
/* Zeroes and frees a secret. */
void fxc_secret_free(char *secret);

/* A duration: "3600" (seconds), "90s", "45m", "12h", "30d", "2w" ->
 * seconds (> 0, at most 100 years). FXS_INVALID_ARGUMENT otherwise. */
int fxc_parse_duration(const char *text, int64_t *seconds, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
