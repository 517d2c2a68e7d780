/*
 * cliconfig.c - the config file of contexts, the precedence of flags,
 * environment and context, token files, durations (cliconfig.h).
 */
#define _GNU_SOURCE
#include "cliconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "fsutil.h"
#include "status.h"
#include "util.h"

#define CONTEXT_NAME_MAX 64
#define TOKEN_FILE_MAX   8192

/* The keys of a context, in the order they are written. */
typedef struct {
    const char *key;
    size_t off;
} field;
#define F(name)                                                                                    \
    {                                                                                              \
#name, offsetof(fxc_context, name)                                                         \
    }
static const field FIELDS[] = {
    F(server), F(token), F(token_file), F(tls_ca), F(tls_cert), F(tls_key),
};
#undef F
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

static char **slot(fxc_context *c, const field *f) { return (char **)((char *)c + f->off); }
static const char *get(const fxc_context *c, const field *f)
{
    return *(char *const *)((const char *)c + f->off);
}

static void context_clear(fxc_context *c)
{
    free(c->name);
    for (size_t i = 0; i < N_FIELDS; i++) {
        char **s = slot(c, &FIELDS[i]);
        if (*s && !strcmp(FIELDS[i].key, "token"))
            fxc_secret_free(*s);
        else
            free(*s);
        *s = NULL;
    }
    c->name = NULL;
}

void fxc_secret_free(char *secret)
{
    if (!secret)
        return;
    volatile char *p = secret;
    while (*p)
        *p++ = '\0';
    free(secret);
}

void fxc_config_free(fxc_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n; i++)
        context_clear(&cfg->contexts[i]);
    free(cfg->contexts);
    free(cfg->path);
    free(cfg->dir);
    free(cfg->current);
    memset(cfg, 0, sizeof *cfg);
}

char *fxc_config_default_path(const char *env_config, const char *home)
{
    if (env_config && *env_config)
        return strdup(env_config);
    if (home && *home)
        return fxu_strf("%s/.config/fluxion/config.json", home);
    return NULL;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static bool context_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CONTEXT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@:-", name[i]))
            return false;
    return true;
}

static int bad_shape(const char *path, char *err, size_t errlen, const char *fmt, const char *a,
                     const char *b)
{
    char what[256];
    snprintf(what, sizeof what, fmt, a, b);
    return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: %s", path, what);
}

/* One context object of the file into c. */
static int parse_context(const char *path, const char *name, json_t *obj, fxc_context *c, char *err,
                         size_t errlen)
{
    if (!json_is_object(obj))
        return bad_shape(path, err, errlen, "contexts.%s: expected an object%s", name, "");
    if (!context_name_ok(name))
        return bad_shape(path, err, errlen,
                         "context name \"%s\": use 1..64 of A-Z a-z 0-9 . _ @ : -%s", name, "");
    if (!(c->name = strdup(name)))
        return fxu_oom(err, errlen);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        const field *f = NULL;
        for (size_t i = 0; i < N_FIELDS; i++)
            if (!strcmp(FIELDS[i].key, key))
                f = &FIELDS[i];
        if (!f)
            return bad_shape(path, err, errlen,
                             "contexts.%s: unknown key \"%s\" (known: server, "
                             "token, token_file, tls_ca, tls_cert, tls_key)",
                             name, key);
        if (!json_is_string(v))
            return bad_shape(path, err, errlen, "contexts.%s.%s: expected a string", name, key);
        if (!(*slot(c, f) = strdup(json_string_value(v))))
            return fxu_oom(err, errlen);
    }
    if (c->token && c->token_file)
        return bad_shape(path, err, errlen, "contexts.%s: both token and token_file (keep one)%s",
                         name, "");
    return 0;
}

static int parse_config(json_t *root, fxc_config *cfg, char *err, size_t errlen)
{
    const char *path = cfg->path;
    if (!json_is_object(root))
        return bad_shape(path, err, errlen, "expected a JSON object%s%s", "", "");
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (!strcmp(key, "current_context")) {
            if (json_is_null(v))
                continue;
            if (!json_is_string(v))
                return bad_shape(path, err, errlen, "current_context: expected a string%s%s", "",
                                 "");
            if (!(cfg->current = strdup(json_string_value(v))))
                return fxu_oom(err, errlen);
        } else if (!strcmp(key, "contexts")) {
            if (!json_is_object(v))
                return bad_shape(path, err, errlen, "contexts: expected an object%s%s", "", "");
            size_t n = json_object_size(v);
            cfg->contexts = calloc(n ? n : 1, sizeof *cfg->contexts);
            if (!cfg->contexts)
                return fxu_oom(err, errlen);
            const char *name;
            json_t *obj;
            json_object_foreach(v, name, obj)
            {
                int rc = parse_context(path, name, obj, &cfg->contexts[cfg->n++], err, errlen);
                if (rc)
                    return rc;
            }
        } else {
            return bad_shape(path, err, errlen,
                             "unknown key \"%s\" (known: current_context, "
                             "contexts)%s",
                             key, "");
        }
    }
    return 0;
}

int fxc_config_load(const char *path, fxc_config *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!path || !*path)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "no config file path");
    if (!(out->path = strdup(path)) || !(out->dir = dir_of(path))) {
        fxc_config_free(out);
        return fxu_oom(err, errlen);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        int e = errno;
        fxc_config_free(out);
        return fxu_fail(err, errlen, FXS_INTERNAL, "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) == 0)
        out->too_open = (st.st_mode & 077) != 0;
    void *buf = NULL;
    size_t len = 0;
    int rc = fxu_read_fd(fd, path, &buf, &len, err, errlen);
    close(fd);
    if (rc) {
        fxc_config_free(out);
        return rc;
    }
    out->exists = true;
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    memset(buf, 0, len); /* it may hold tokens */
    free(buf);
    if (!root) {
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s:%d:%d: %s", path, je.line, je.column,
                      je.text);
    } else {
        rc = parse_config(root, out, err, errlen);
        json_decref(root);
    }
    if (rc)
        fxc_config_free(out);
    return rc;
}

int fxc_config_save(const fxc_config *cfg, char *err, size_t errlen)
{
    json_t *root = json_object(), *ctxs = json_object();
    if (!root || !ctxs) {
        json_decref(root);
        json_decref(ctxs);
        return fxu_oom(err, errlen);
    }
    int bad = 0;
    if (cfg->current)
        bad |= json_object_set_new(root, "current_context", json_string(cfg->current));
    for (size_t i = 0; i < cfg->n; i++) {
        json_t *o = json_object();
        bad |= !o;
        for (size_t k = 0; o && k < N_FIELDS; k++) {
            const char *v = get(&cfg->contexts[i], &FIELDS[k]);
            if (v)
                bad |= json_object_set_new(o, FIELDS[k].key, json_string(v));
        }
        bad |= json_object_set_new(ctxs, cfg->contexts[i].name, o);
    }
    bad |= json_object_set_new(root, "contexts", ctxs);
    char *text = bad ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        return fxu_oom(err, errlen);
    size_t len = strlen(text);
    int rc = 0;
    struct stat st;
    if (stat(cfg->dir, &st) != 0) {
        rc = fxu_mkdir_p(cfg->dir, err, errlen);
        if (!rc && chmod(cfg->dir, 0700) != 0)
            rc = fxu_fail(err, errlen, FXS_INTERNAL, "%s: %s", cfg->dir, strerror(errno));
    }
    /* fxu_write_file_atomic's temporary file is 0600 and renamed into place. */
    text[len] = '\n'; /* in place of the terminator: len + 1 bytes are written */
    if (!rc)
        rc = fxu_write_file_atomic(cfg->path, text, len + 1, err, errlen);
    memset(text, 0, len);
    free(text);
    return rc;
}

fxc_context *fxc_config_find(const fxc_config *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->n; i++)
        if (!strcmp(cfg->contexts[i].name, name))
            return &cfg->contexts[i];
    return NULL;
}

static int set_field(fxc_context *c, const field *f, const char *value)
{
    char **s = slot(c, f);
    char *dup = *value ? strdup(value) : NULL;
    if (*value && !dup)
        return -1;
    if (!strcmp(f->key, "token"))
        fxc_secret_free(*s);
    else
        free(*s);
    *s = dup;
    return 0;
}

int fxc_config_set(fxc_config *cfg, const fxc_context *fields, char *err, size_t errlen)
{
    if (!fields->name || !context_name_ok(fields->name))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "context name \"%s\": use 1..64 of "
                        "A-Z a-z 0-9 . _ @ : -",
                        fields->name ? fields->name : "");
    if (fields->token && *fields->token && fields->token_file && *fields->token_file)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "give a token or a token file, not both");
    fxc_context *c = fxc_config_find(cfg, fields->name);
    if (!c) {
        fxc_context *grown = realloc(cfg->contexts, (cfg->n + 1) * sizeof *grown);
        if (!grown)
            return fxu_oom(err, errlen);
        cfg->contexts = grown;
        c = &cfg->contexts[cfg->n];
        memset(c, 0, sizeof *c);
        if (!(c->name = strdup(fields->name)))
            return fxu_oom(err, errlen);
        cfg->n++;
    }
    for (size_t i = 0; i < N_FIELDS; i++) {
        const char *v = get(fields, &FIELDS[i]);
        if (v && set_field(c, &FIELDS[i], v))
            return fxu_oom(err, errlen);
    }
    /* the newer of token and token_file wins */
    if (fields->token && *fields->token) {
        free(c->token_file);
        c->token_file = NULL;
    }
    if (fields->token_file && *fields->token_file) {
        fxc_secret_free(c->token);
        c->token = NULL;
    }
    return 0;
}

static int not_found(const fxc_config *cfg, const char *name, char *err, size_t errlen)
{
    return fxu_fail(err, errlen, FXS_NOT_FOUND,
                    "context '%s' not found in %s (fluxion config "
                    "get-contexts lists them)",
                    name ? name : "", cfg->path ? cfg->path : "the config");
}

int fxc_config_delete(fxc_config *cfg, const char *name, char *err, size_t errlen)
{
    fxc_context *c = fxc_config_find(cfg, name);
    if (!c)
        return not_found(cfg, name, err, errlen);
    if (cfg->current && !strcmp(cfg->current, name)) {
        free(cfg->current);
        cfg->current = NULL;
    }
    context_clear(c);
    size_t i = (size_t)(c - cfg->contexts);
    memmove(c, c + 1, (cfg->n - i - 1) * sizeof *c);
    cfg->n--;
    return 0;
}

int fxc_config_use(fxc_config *cfg, const char *name, char *err, size_t errlen)
{
    if (!fxc_config_find(cfg, name))
        return not_found(cfg, name, err, errlen);
    char *dup = strdup(name);
    if (!dup)
        return fxu_oom(err, errlen);
    free(cfg->current);
    cfg->current = dup;
    return 0;
}

/* ------------------------------------------------------------ resolve */

static const char *nz(const char *s) { return s && *s ? s : NULL; }

void fxc_conn_free(fxc_conn *c)
{
    if (!c)
        return;
    free(c->server);
    fxc_secret_free(c->token);
    free(c->token_file);
    free(c->tls_ca);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->context);
    free(c->token_source);
    memset(c, 0, sizeof *c);
}

/* A path from the config file: relative ones are relative to its directory. */
static char *config_path(const fxc_config *cfg, const char *p)
{
    if (p[0] == '/' || !cfg || !cfg->dir)
        return strdup(p);
    return fxu_strf("%s/%s", cfg->dir, p);
}

/* value from the highest source that has it; from_cfg tells whether it came
 * from the file (then a path is made relative to it). */
static int pick(const char *flag, const char *env, const char *ctxv, const fxc_config *cfg,
                bool is_path, char **out)
{
    const char *v = nz(flag) ? flag : nz(env) ? env : NULL;
    if (v)
        *out = strdup(v);
    else if (nz(ctxv))
        *out = is_path ? config_path(cfg, ctxv) : strdup(ctxv);
    else
        return 0;
    return *out ? 0 : -1;
}

int fxc_conn_resolve(const fxc_conn_src *flags, const fxc_conn_src *env, const fxc_config *cfg,
                     const char *default_server, fxc_conn *out, char *err, size_t errlen)
{
    static const fxc_conn_src none = {0};
    memset(out, 0, sizeof *out);
    if (!flags)
        flags = &none;
    if (!env)
        env = &none;
    const char *name = nz(flags->context) ? flags->context
                       : nz(env->context) ? env->context
                       : cfg              ? nz(cfg->current)
                                          : NULL;
    const char *name_src = nz(flags->context) ? "--context"
                           : nz(env->context) ? "FLUXION_CONTEXT"
                                              : "current_context";
    const fxc_context *ctx = NULL;
    static const fxc_context empty = {0};
    if (name) {
        ctx = fxc_config_find(cfg, name);
        if (!ctx)
            return fxu_fail(err, errlen, FXS_NOT_FOUND,
                            "context '%s' (from %s) not found in %s "
                            "(fluxion config get-contexts lists them)",
                            name, name_src, cfg && cfg->path ? cfg->path : "the config file");
        if (!(out->context = strdup(name)))
            goto oom;
    }
    const fxc_context *cx = ctx ? ctx : &empty;

    /* one source gives the token, as a unit */
    const struct {
        const char *token, *file;
        bool from_cfg;
    } tsrc[3] = {
        {nz(flags->token), nz(flags->token_file), false},
        {nz(env->token), nz(env->token_file), false},
        {nz(cx->token), nz(cx->token_file), true},
    };
    for (int i = 0; i < 3; i++) {
        if (!tsrc[i].token && !tsrc[i].file)
            continue;
        if (tsrc[i].token && tsrc[i].file) {
            fxc_conn_free(out);
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: give a token or a token file, "
                            "not both",
                            i == 0   ? "flags"
                            : i == 1 ? "environment"
                                     : "context");
        }
        if (tsrc[i].token && !(out->token = strdup(tsrc[i].token)))
            goto oom;
        if (tsrc[i].file && !(out->token_file = tsrc[i].from_cfg ? config_path(cfg, tsrc[i].file)
                                                                 : strdup(tsrc[i].file)))
            goto oom;
        if (i == 0)
            out->token_source = strdup(tsrc[i].token ? "--token" : "--token-file");
        else if (i == 1)
            out->token_source =
                strdup(tsrc[i].token ? "FLUXION_TOKEN" : "the environment's token file");
        else
            out->token_source = fxu_strf("context '%s'", ctx->name);
        if (!out->token_source)
            goto oom;
        break;
    }

    /* the client certificate, as a unit */
    const struct {
        const char *cert, *key;
        bool from_cfg;
        const char *what;
    } csrc[3] = {
        {nz(flags->tls_cert), nz(flags->tls_key), false, "flags (--tls-cert, --tls-key)"},
        {nz(env->tls_cert), nz(env->tls_key), false, "environment"},
        {nz(cx->tls_cert), nz(cx->tls_key), true, "context (tls_cert, tls_key)"},
    };
    for (int i = 0; i < 3; i++) {
        if (!csrc[i].cert && !csrc[i].key)
            continue;
        if (!csrc[i].cert || !csrc[i].key) {
            fxc_conn_free(out);
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: a client certificate needs "
                            "its key and the reverse (give both)",
                            csrc[i].what);
        }
        if (csrc[i].from_cfg) {
            out->tls_cert = config_path(cfg, csrc[i].cert);
            out->tls_key = config_path(cfg, csrc[i].key);
        } else {
            out->tls_cert = strdup(csrc[i].cert);
            out->tls_key = strdup(csrc[i].key);
        }
        if (!out->tls_cert || !out->tls_key)
            goto oom;
        break;
    }

    if (pick(flags->server, env->server, cx->server, cfg, false, &out->server) ||
        pick(flags->tls_ca, env->tls_ca, cx->tls_ca, cfg, true, &out->tls_ca))
        goto oom;
    if (!out->server && default_server && !(out->server = strdup(default_server)))
        goto oom;
    return 0;
oom:
    fxc_conn_free(out);
    return fxu_oom(err, errlen);
}

/* ------------------------------------------------------------ secrets */

int fxc_read_token_file(const char *path, char **token, bool *too_open, char *err, size_t errlen)
{
    *token = NULL;
    *too_open = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "token file %s: %s", path,
                        strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > TOKEN_FILE_MAX) {
        close(fd);
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "token file %s: not a regular file of "
                        "at most %d bytes",
                        path, TOKEN_FILE_MAX);
    }
    *too_open = (st.st_mode & 077) != 0;
    void *buf = NULL;
    size_t len = 0;
    int rc = fxu_read_fd(fd, path, &buf, &len, err, errlen);
    close(fd);
    if (rc)
        return rc;
    char *s = buf;
    s[len] = '\0';
    size_t a = 0, b = len;
    while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\n' || s[a] == '\r'))
        a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\n' || s[b - 1] == '\r'))
        b--;
    const char *why = NULL;
    if (a == b)
        why = "is empty";
    else if (memchr(s + a, '\n', b - a) || memchr(s + a, '\0', b - a))
        why = "has more than one line (it should hold only the token)";
    if (!why) {
        memmove(s, s + a, b - a);
        memset(s + (b - a), 0, len - (b - a));
        *token = s;
        return 0;
    }
    memset(s, 0, len);
    free(s);
    return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "token file %s %s", path, why);
}

/* -------------------------------------------------------------- misc */

int fxc_parse_duration(const char *text, int64_t *seconds, char *err, size_t errlen)
{
    static const int64_t MAX = 100LL * 366 * 86400;
    *seconds = 0;
    const char *p = text ? text : "";
    int64_t v = 0;
    bool digits = false;
    for (; *p >= '0' && *p <= '9'; p++) {
        digits = true;
        if (v > MAX)
            break;
        v = v * 10 + (*p - '0');
    }
    int64_t unit = 0;
    if (*p == '\0')
        unit = 1;
    else if (p[1] == '\0')
        unit = *p == 's'   ? 1
               : *p == 'm' ? 60
               : *p == 'h' ? 3600
               : *p == 'd' ? 86400
               : *p == 'w' ? 7 * 86400
                           : 0;
    if (!digits || !unit || v <= 0 || v > MAX / unit)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "expected a duration like 3600, 90s, "
                        "45m, 12h, 30d or 2w (at most 100 years), got \"%s\"",
                        text ? text : "");
    *seconds = v * unit;
    return 0;
}
