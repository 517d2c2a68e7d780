/*
 * metrics.h - the Prometheus text exposition (format 0.0.4) of fluxiond's
 * metrics (metrics/, prefix fxm_): a writer that cannot produce a text a
 * scraper refuses. Pure (includes only base/): the collector that reads the
 * daemon's modules is api/svc_metrics.c.
 *
 * A family is declared once (# HELP and # TYPE), then its samples follow
 * before the next family: the format forbids a family's lines split up or a
 * family repeated, so the writer fails a family declared twice, a sample
 * outside its family, a counter not named *_total, and names that are not
 * metric or label names. Label values (model names come from clients) are
 * escaped (\\, \" and \n); HELP text too (\\ and \n).
 *
 * The first failure sticks: later calls do nothing, and fxm_finish returns
 * it (a collector writes everything, then checks once).
 */
#ifndef FXM_METRICS_H
#define FXM_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { FXM_COUNTER = 1, FXM_GAUGE = 2, FXM_HISTOGRAM = 3 } fxm_type;

typedef struct {
    const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*, not __*, not "le" */
    const char *value; /* any text; escaped */
} fxm_label;

typedef struct {
    char *buf;
    size_t len, cap;
    char **families; /* the names declared so far */
    int n_families, cap_families;
    fxm_type type;   /* of the current family; 0 before the first */
    int rc;          /* the first failure (an fxs status), 0 */
    char err[256];
} fxm_writer;

void fxm_init(fxm_writer *w);
/* Frees what the writer holds (the text too unless fxm_finish took it). */
void fxm_free(fxm_writer *w);

/* Declares the family name (a counter's ends with _total; a histogram's
 * samples are name_bucket, name_sum and name_count) with its help text. */
int fxm_family(fxm_writer *w, const char *name, fxm_type type, const char *help);
/* One sample of the current counter or gauge family. A counter's value is
 * never negative; NaN and +-Inf are written as the format spells them. */
int fxm_sample(fxm_writer *w, const fxm_label *labels, int n_labels, double value);
/* One histogram series of the current histogram family: counts[i] the
 * observations in (bounds[i-1], bounds[i]] for i < n_bounds, counts[n_bounds]
 * those above the last bound (not cumulative: the writer adds them up into
 * le buckets, +Inf last). bounds strictly ascending and finite. */
int fxm_histogram(fxm_writer *w, const fxm_label *labels, int n_labels, const double *bounds,
                  const uint64_t *counts, int n_bounds, double sum);

/* The text (malloc'd, NUL-terminated, the caller frees it) in *out and its
 * length, or the first failure with its message in err (*out NULL). */
int fxm_finish(fxm_writer *w, char **out, size_t *len, char *err, size_t errlen);

/* Whether s is a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) or a label name. */
bool fxm_valid_name(const char *s);
bool fxm_valid_label_name(const char *s);

#endif
