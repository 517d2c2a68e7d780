/* metrics.c - see metrics.h. */
#include "metrics/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

void fxm_init(fxm_writer *w) { memset(w, 0, sizeof *w); }

void fxm_free(fxm_writer *w)
{
    for (int i = 0; i < w->n_families; i++)
        free(w->families[i]);
    free(w->families);
    free(w->buf);
    memset(w, 0, sizeof *w);
}

static int fail(fxm_writer *w, int rc, const char *fmt, ...)
{
    if (w->rc)
        return w->rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
    w->rc = rc;
    return rc;
}

static void put(fxm_writer *w, const char *s, size_t n)
{
    if (w->rc)
        return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n + 1)
            cap *= 2;
        char *b = realloc(w->buf, cap);
        if (!b) {
            fail(w, FXS_RESOURCE_EXHAUSTED, "metrics: out of memory");
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = 0;
}

static void puts_(fxm_writer *w, const char *s) { put(w, s, strlen(s)); }

/* Escapes \ and newline (HELP), and " too (label values). */
static void put_escaped(fxm_writer *w, const char *s, bool quote)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            puts_(w, "\\\\");
        else if (*p == '\n')
            puts_(w, "\\n");
        else if (quote && *p == '"')
            puts_(w, "\\\"");
        else
            put(w, p, 1);
    }
}

static bool name_chars(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

bool fxm_valid_name(const char *s) { return name_chars(s, true); }
bool fxm_valid_label_name(const char *s)
{
    return name_chars(s, false) && strncmp(s, "__", 2) != 0; /* __*: Prometheus' own */
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int fxm_family(fxm_writer *w, const char *name, fxm_type type, const char *help)
{
    if (w->rc)
        return w->rc;
    if (!fxm_valid_name(name))
        return fail(w, FXS_INVALID_ARGUMENT, "metrics: '%s' is not a metric name", name ? name : "");
    if (type != FXM_COUNTER && type != FXM_GAUGE && type != FXM_HISTOGRAM)
        return fail(w, FXS_INVALID_ARGUMENT, "metrics: %s: unknown type %d", name, (int)type);
    if (type == FXM_COUNTER && !ends_with(name, "_total"))
        return fail(w, FXS_INVALID_ARGUMENT, "metrics: counter %s: the name must end in _total",
                    name);
    if (type != FXM_COUNTER && ends_with(name, "_total"))
        return fail(w, FXS_INVALID_ARGUMENT, "metrics: %s: only a counter ends in _total", name);
    for (int i = 0; i < w->n_families; i++)
        if (strcmp(w->families[i], name) == 0)
            return fail(w, FXS_INVALID_ARGUMENT, "metrics: family %s declared twice", name);
    if (w->n_families == w->cap_families) {
        int cap = w->cap_families ? w->cap_families * 2 : 32;
        char **f = realloc(w->families, sizeof *f * (size_t)cap);
        if (!f)
            return fail(w, FXS_RESOURCE_EXHAUSTED, "metrics: out of memory");
        w->families = f;
        w->cap_families = cap;
    }
    if (!(w->families[w->n_families] = strdup(name)))
        return fail(w, FXS_RESOURCE_EXHAUSTED, "metrics: out of memory");
    w->n_families++;
    w->type = type;
    puts_(w, "# HELP ");
    puts_(w, name);
    puts_(w, " ");
    put_escaped(w, help ? help : "", false);
    puts_(w, "\n# TYPE ");
    puts_(w, name);
    puts_(w, type == FXM_COUNTER ? " counter\n" : type == FXM_GAUGE ? " gauge\n" : " histogram\n");
    return w->rc;
}

static const char *current(const fxm_writer *w)
{
    return w->n_families ? w->families[w->n_families - 1] : NULL;
}

/* name{l1="v1",...[,le="x"]} with the labels checked. */
static int series(fxm_writer *w, const char *suffix, const fxm_label *labels, int n,
                  const char *le)
{
    if (n < 0 || (n > 0 && !labels))
        return fail(w, FXS_INVALID_ARGUMENT, "metrics: %s: %d labels", current(w), n);
    for (int i = 0; i < n; i++) {
        if (!fxm_valid_label_name(labels[i].name) || strcmp(labels[i].name, "le") == 0)
            return fail(w, FXS_INVALID_ARGUMENT, "metrics: %s: '%s' is not a label name",
                        current(w), labels[i].name ? labels[i].name : "");
        for (int j = 0; j < i; j++)
            if (strcmp(labels[i].name, labels[j].name) == 0)
                return fail(w, FXS_INVALID_ARGUMENT, "metrics: %s: label %s given twice",
                            current(w), labels[i].name);
    }
    puts_(w, current(w));
    puts_(w, suffix);
    if (n || le) {
        puts_(w, "{");
        for (int i = 0; i < n; i++) {
            if (i)
                puts_(w, ",");
            puts_(w, labels[i].name);
            puts_(w, "=\"");
            put_escaped(w, labels[i].value ? labels[i].value : "", true);
            puts_(w, "\"");
        }
        if (le) {
            puts_(w, n ? ",le=\"" : "le=\"");
            puts_(w, le);
            puts_(w, "\"");
        }
        puts_(w, "}");
    }
    return w->rc;
}

/* The shortest of %.15g and %.17g that reads back as v (0.005, not
 * 0.0050000000000000001). */
static void fmt_double(char *b, size_t n, double v)
{
    snprintf(b, n, "%.15g", v);
    if (strtod(b, NULL) != v)
        snprintf(b, n, "%.17g", v);
}

static void put_value(fxm_writer *w, double v)
{
    char b[64];
    if (isnan(v))
        snprintf(b, sizeof b, "NaN");
    else if (isinf(v))
        snprintf(b, sizeof b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(b, sizeof b, "%.0f", v); /* counts as integers */
    else
        fmt_double(b, sizeof b, v);
    puts_(w, " ");
    puts_(w, b);
    puts_(w, "\n");
}

int fxm_sample(fxm_writer *w, const fxm_label *labels, int n_labels, double value)
{
    if (w->rc)
        return w->rc;
    if (!current(w) || w->type == FXM_HISTOGRAM)
        return fail(w, FXS_INVALID_ARGUMENT, "metrics: a sample outside a counter or gauge "
                    "family (after %s)", current(w) ? current(w) : "nothing");
    if (w->type == FXM_COUNTER && (value < 0 || isnan(value)))
        return fail(w, FXS_INVALID_ARGUMENT, "metrics: counter %s: value %g", current(w), value);
    if (series(w, "", labels, n_labels, NULL) == 0)
        put_value(w, value);
    return w->rc;
}

int fxm_histogram(fxm_writer *w, const fxm_label *labels, int n_labels, const double *bounds,
                  const uint64_t *counts, int n_bounds, double sum)
{
    if (w->rc)
        return w->rc;
    if (!current(w) || w->type != FXM_HISTOGRAM)
        return fail(w, FXS_INVALID_ARGUMENT, "metrics: a histogram outside a histogram family "
                    "(after %s)", current(w) ? current(w) : "nothing");
    if (n_bounds < 0 || (n_bounds && !bounds) || !counts)
        return fail(w, FXS_INVALID_ARGUMENT, "metrics: %s: no buckets", current(w));
    for (int i = 0; i < n_bounds; i++)
        if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
            return fail(w, FXS_INVALID_ARGUMENT, "metrics: %s: bucket bounds not finite and "
                        "ascending at %d", current(w), i);
    uint64_t cum = 0;
    char le[64];
    for (int i = 0; i <= n_bounds; i++) {
        cum += counts[i];
        if (i < n_bounds)
            fmt_double(le, sizeof le, bounds[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        if (series(w, "_bucket", labels, n_labels, le) == 0)
            put_value(w, (double)cum);
    }
    if (series(w, "_sum", labels, n_labels, NULL) == 0)
        put_value(w, sum);
    if (series(w, "_count", labels, n_labels, NULL) == 0)
        put_value(w, (double)cum);
    return w->rc;
}

int fxm_finish(fxm_writer *w, char **out, size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    if (len)
        *len = 0;
    if (!w->rc && !w->buf)
        put(w, "", 0); /* an empty exposition is a valid one */
    if (w->rc) {
        snprintf(err, errlen, "%s", w->err);
        return w->rc;
    }
    *out = w->buf;
    if (len)
        *len = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    return 0;
}
