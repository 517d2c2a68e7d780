/* servecfg.c - see servecfg.h. */
#include "serving/servecfg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

typedef enum { F_BOOL, F_U32, F_U64, F_LIST, F_STR, F_PREC } field_kind;

typedef struct {
    const char *name;
    field_kind kind;
    size_t cfg_off;   /* in fxb_config */
    size_t msg_off;   /* in Fluxion__V1__BatchingConfig */
} field;

#define CF(m) offsetof(fxb_config, m)
#define MF(m) offsetof(Fluxion__V1__BatchingConfig, m)
static const field FIELDS[] = {
    { "enabled", F_BOOL, CF(enabled), MF(enabled) },
    { "max_batch_size", F_U32, CF(max_batch_size), MF(max_batch_size) },
    { "max_queue_delay_us", F_U64, CF(max_queue_delay_us), MF(max_queue_delay_us) },
    { "preferred_batch_sizes", F_LIST, 0, 0 },
    { "max_queue_size", F_U32, CF(max_queue_size), MF(max_queue_size) },
    { "timeout_us", F_U64, CF(timeout_us), MF(timeout_us) },
    { "priority_levels", F_U32, CF(priority_levels), MF(priority_levels) },
    { "default_priority", F_U32, CF(default_priority), MF(default_priority) },
    { "instances", F_U32, CF(instances), MF(instances) },
    { "pad_variable_dims", F_BOOL, CF(pad_variable_dims), MF(pad_variable_dims) },
    { "device", F_STR, CF(device), MF(device) },
    { "memory_limit_bytes", F_U64, CF(memory_limit_bytes), MF(memory_limit_bytes) },
    { "precision", F_PREC, CF(precision), MF(precision) },
};
#define N_FIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))

const char *const *fxsv_cfg_fields(void)
{
    static const char *names[N_FIELDS + 1];
    for (int i = 0; i < N_FIELDS; i++)
        names[i] = FIELDS[i].name;
    return names;
}

static const field *find(const char *name, char *err, size_t errlen)
{
    for (int i = 0; i < N_FIELDS; i++)
        if (strcmp(FIELDS[i].name, name) == 0)
            return &FIELDS[i];
    char list[512] = "";
    for (int i = 0; i < N_FIELDS; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                 FIELDS[i].name);
    snprintf(err, errlen, "unknown batching setting '%s' (settings: %s)", name, list);
    return NULL;
}

/* Stores v into the field (range-checked for u32). */
static int put_num(fxb_config *c, const field *f, uint64_t v, char *err, size_t errlen)
{
    char *p = (char *)c + f->cfg_off;
    switch (f->kind) {
    case F_BOOL: *(bool *)p = v != 0; return 0;
    case F_U64: *(uint64_t *)p = v; return 0;
    case F_U32:
        if (v > UINT32_MAX) {
            snprintf(err, errlen, "%s: %" PRIu64 " is too large", f->name, v);
            return FXS_INVALID_ARGUMENT;
        }
        *(uint32_t *)p = (uint32_t)v;
        return 0;
    default: return FXS_INTERNAL;
    }
}

static int put_list(fxb_config *c, const uint32_t *v, size_t n, char *err, size_t errlen)
{
    if (n > FXB_MAX_PREFERRED) {
        snprintf(err, errlen, "preferred_batch_sizes: %zu sizes, at most %d", n,
                 FXB_MAX_PREFERRED);
        return FXS_INVALID_ARGUMENT;
    }
    if (n)
        memcpy(c->preferred, v, n * sizeof *v);
    c->n_preferred = (int)n;
    return 0;
}

/* Text fields (device names): checked for size here; for meaning where they
 * are used (devices.h), since what is enabled depends on the server. */
static int put_str(fxb_config *c, const field *f, const char *v, char *err, size_t errlen)
{
    char *p = (char *)c + f->cfg_off;
    size_t cap = sizeof c->device;
    if (strlen(v) >= cap) {
        snprintf(err, errlen, "%s: '%.40s' is longer than %zu characters", f->name, v, cap - 1);
        return FXS_INVALID_ARGUMENT;
    }
    memcpy(p, v, strlen(v) + 1);
    return 0;
}

/* "fp32" or "bf16" ("": fp32, the default). The device it needs is checked
 * where the model is placed (fxsv_cfg_check_precision). */
static int put_prec(fxb_config *c, const char *v, char *err, size_t errlen)
{
    fx_precision p = FX_PREC_F32;
    if (*v && !fx_precision_parse(v, &p)) {
        snprintf(err, errlen, "precision: '%.40s' is not fp32 or bf16", v);
        return FXS_INVALID_ARGUMENT;
    }
    c->precision = p;
    return 0;
}

static bool parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0')
        return false;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *v = x;
    return true;
}

int fxsv_cfg_set_text(fxb_config *c, const char *name, const char *value, char *err,
                     size_t errlen)
{
    const field *f = find(name, err, errlen);
    if (!f)
        return FXS_INVALID_ARGUMENT;
    uint64_t v;
    if (f->kind == F_STR)
        return put_str(c, f, value, err, errlen);
    if (f->kind == F_PREC)
        return put_prec(c, value, err, errlen);
    if (f->kind == F_BOOL) {
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "on"))
            return put_num(c, f, 1, err, errlen);
        if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "off"))
            return put_num(c, f, 0, err, errlen);
        snprintf(err, errlen, "%s: '%s' is not true or false", name, value);
        return FXS_INVALID_ARGUMENT;
    }
    if (f->kind == F_LIST) {
        uint32_t sizes[FXB_MAX_PREFERRED + 1];
        size_t n = 0;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", value);
        for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok;
             tok = strtok_r(NULL, ", ", &save)) {
            if (!parse_u64(tok, &v) || v > UINT32_MAX || n == FXB_MAX_PREFERRED + 1) {
                snprintf(err, errlen, "%s: '%s' is not a list of at most %d sizes (\"4,8\")",
                         name, value, FXB_MAX_PREFERRED);
                return FXS_INVALID_ARGUMENT;
            }
            sizes[n++] = (uint32_t)v;
        }
        return put_list(c, sizes, n, err, errlen);
    }
    if (!parse_u64(value, &v)) {
        snprintf(err, errlen, "%s: '%s' is not a non-negative integer", name, value);
        return FXS_INVALID_ARGUMENT;
    }
    return put_num(c, f, v, err, errlen);
}

static int apply_field(fxb_config *c, const field *f, const Fluxion__V1__BatchingConfig *m,
                       char *err, size_t errlen)
{
    const char *p = (const char *)m + f->msg_off;
    switch (f->kind) {
    case F_BOOL: return put_num(c, f, *(const protobuf_c_boolean *)p != 0, err, errlen);
    case F_U32: return put_num(c, f, *(const uint32_t *)p, err, errlen);
    case F_U64: return put_num(c, f, *(const uint64_t *)p, err, errlen);
    case F_LIST:
        return put_list(c, m->preferred_batch_sizes, m->n_preferred_batch_sizes, err, errlen);
    case F_STR: {
        const char *v = *(char *const *)p;
        return put_str(c, f, v ? v : "", err, errlen);
    }
    case F_PREC: {
        const char *v = *(char *const *)p;
        return put_prec(c, v ? v : "", err, errlen);
    }
    }
    return FXS_INTERNAL;
}

int fxsv_cfg_apply(fxb_config *c, const Fluxion__V1__BatchingConfig *m, char *const *mask,
                  size_t n_mask, char *err, size_t errlen)
{
    for (int i = 0; n_mask == 0 && i < N_FIELDS; i++) {
        int rc = apply_field(c, &FIELDS[i], m, err, errlen);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n_mask; i++) {
        const field *f = find(mask[i], err, errlen);
        int rc = f ? apply_field(c, f, m, err, errlen) : FXS_INVALID_ARGUMENT;
        if (rc)
            return rc;
    }
    return 0;
}

int fxsv_cfg_apply_params(fxb_config *c,
                         Inference__RepositoryModelLoadRequest__ParametersEntry *const *p,
                         size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const Inference__ModelRepositoryParameter *v = p[i]->value;
        char text[64];
        const char *s = text;
        switch (v ? v->parameter_choice_case : 0) {
        case INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM:
            s = v->bool_param ? "true" : "false";
            break;
        case INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_INT64_PARAM:
            if (v->int64_param < 0) {
                snprintf(err, errlen, "parameter '%s': %" PRId64 " is negative", p[i]->key,
                         v->int64_param);
                return FXS_INVALID_ARGUMENT;
            }
            snprintf(text, sizeof text, "%" PRId64, v->int64_param);
            break;
        case INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_STRING_PARAM:
            s = v->string_param;
            break;
        default:
            snprintf(err, errlen, "parameter '%s': give a bool, int64 or string value",
                     p[i]->key);
            return FXS_INVALID_ARGUMENT;
        }
        char ferr[512];
        int rc = fxsv_cfg_set_text(c, p[i]->key, s, ferr, sizeof ferr);
        if (rc) {
            snprintf(err, errlen, "parameter %s", ferr);
            return rc;
        }
    }
    return 0;
}

void fxsv_cfg_to_msg(const fxb_config *c, Fluxion__V1__BatchingConfig *m, uint32_t *pref)
{
    m->enabled = c->enabled;
    m->max_batch_size = c->max_batch_size;
    m->max_queue_delay_us = c->max_queue_delay_us;
    if (c->n_preferred > 0)
        memcpy(pref, c->preferred, sizeof *pref * (size_t)c->n_preferred);
    m->preferred_batch_sizes = pref;
    m->n_preferred_batch_sizes = (size_t)c->n_preferred;
    m->max_queue_size = c->max_queue_size;
    m->timeout_us = c->timeout_us;
    m->priority_levels = c->priority_levels;
    m->default_priority = c->default_priority;
    m->instances = c->instances;
    m->pad_variable_dims = c->pad_variable_dims;
    m->device = (char *)c->device;
    m->memory_limit_bytes = c->memory_limit_bytes;
    m->precision = (char *)fx_precision_name(c->precision);
}

int fxsv_cfg_check_precision(const fxb_config *c, fx_device dev, const char *what, char *err,
                            size_t errlen)
{
    if (c->precision == FX_PREC_F32 || dev.type == FX_DEV_CPU)
        return 0;
    char name[32];
    snprintf(err, errlen, "%sprecision: %s runs on CPU devices only, and the model is placed "
             "on %s (set device cpu, or precision fp32)", what ? what : "",
             fx_precision_name(c->precision), fx_device_str(dev, name, sizeof name));
    return FXS_INVALID_ARGUMENT;
}

/* ---------------------------------------------------------------- store */

/* The stored record is the packed message (store/servecfg_tab.c keeps the
 * bytes), so fields can grow without migrations. The batching settings and
 * the canary share it: each is saved by reading the other back, under the
 * model's change lock (serving.c), so neither overwrites the other. */

/* The stored message, or *out NULL when none is stored. */
static int read_record(fxdb_store *st, const char *model, Fluxion__V1__BatchingConfig **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    void *packed = NULL;
    size_t len = 0;
    int rc = fxdb_servecfg_get(st, model, &packed, &len, err, errlen);
    if (rc == FXS_NOT_FOUND)
        return 0;
    if (rc)
        return rc;
    *out = fluxion__v1__batching_config__unpack(NULL, len, packed);
    free(packed);
    if (!*out) {
        snprintf(err, errlen, "store: the serving config of '%s' does not parse", model);
        return FXS_INTERNAL;
    }
    return 0;
}

static int write_record(fxdb_store *st, const char *model, const fxb_config *c,
                        const fxsv_canary *cn, char *err, size_t errlen)
{
    Fluxion__V1__BatchingConfig m = FLUXION__V1__BATCHING_CONFIG__INIT;
    Fluxion__V1__CanaryConfig canary = FLUXION__V1__CANARY_CONFIG__INIT;
    uint32_t pref[FXB_MAX_PREFERRED];
    fxsv_cfg_to_msg(c, &m, pref);
    if (cn->version) {
        canary.version = cn->version;
        canary.percent = cn->percent;
        m.canary = &canary;
    }
    size_t len = fluxion__v1__batching_config__get_packed_size(&m);
    uint8_t *packed = malloc(len + 1);
    if (!packed) {
        snprintf(err, errlen, "out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    fluxion__v1__batching_config__pack(&m, packed);
    int rc = fxdb_servecfg_put(st, model, packed, len, err, errlen);
    free(packed);
    return rc;
}

int64_t fxsv_cfg_canary_version(const void *config, size_t len)
{
    Fluxion__V1__BatchingConfig *m = fluxion__v1__batching_config__unpack(NULL, len, config);
    int64_t v = m && m->canary && m->canary->version > 0 ? m->canary->version : 0;
    if (m)
        fluxion__v1__batching_config__free_unpacked(m, NULL);
    return v;
}

int fxsv_cfg_load(fxdb_store *st, const char *model, fxb_config *c, char *err, size_t errlen)
{
    fxb_config_default(c);
    Fluxion__V1__BatchingConfig *m;
    int rc = read_record(st, model, &m, err, errlen);
    if (rc || !m)
        return rc; /* !m: the defaults */
    rc = fxsv_cfg_apply(c, m, NULL, 0, err, errlen);
    fluxion__v1__batching_config__free_unpacked(m, NULL);
    return rc;
}

int fxsv_canary_load(fxdb_store *st, const char *model, fxsv_canary *out, char *err,
                    size_t errlen)
{
    *out = (fxsv_canary){ 0, 0 };
    Fluxion__V1__BatchingConfig *m;
    int rc = read_record(st, model, &m, err, errlen);
    if (rc || !m)
        return rc;
    if (m->canary && m->canary->version > 0)
        *out = (fxsv_canary){ m->canary->version, m->canary->percent };
    fluxion__v1__batching_config__free_unpacked(m, NULL);
    return 0;
}

int fxsv_cfg_save(fxdb_store *st, const char *model, const fxb_config *c, char *err,
                 size_t errlen)
{
    fxsv_canary cn;
    int rc = fxsv_canary_load(st, model, &cn, err, errlen);
    return rc ? rc : write_record(st, model, c, &cn, err, errlen);
}

int fxsv_canary_save(fxdb_store *st, const char *model, const fxsv_canary *cn, char *err,
                    size_t errlen)
{
    fxb_config c;
    int rc = fxsv_cfg_load(st, model, &c, err, errlen);
    return rc ? rc : write_record(st, model, &c, cn, err, errlen);
}
