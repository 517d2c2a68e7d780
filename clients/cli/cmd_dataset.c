/*
 * cmd_dataset.c - `fluxion dataset ...`: upload (a safetensors or CSV file,
 * streamed in chunks of samples), list, get, delete
 * (fluxion.v1.DatasetService).
 */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fluxion/v1/dataset.pb-c.h"

#define MAX_TENSORS     256
#define MAX_DIMS        8

/* One tensor of the file: its samples are either in memory (CSV) or at an
 * offset of the file (safetensors, read chunk by chunk). */
typedef struct {
    char *name;
    Fluxion__V1__DataType dtype;
    int ndim;                /* with the sample dimension */
    int64_t shape[MAX_DIMS];
    uint64_t sample_bytes;
    void *mem;               /* NULL: in the file at off */
    int64_t cap;             /* samples mem has room for */
    uint64_t off;
} src_tensor;

typedef struct {
    src_tensor t[MAX_TENSORS];
    int n;
    /* CSV: where column c's values go: tensor col_t[c], element col_pos[c]
     * of each sample (0 but in a --features group) */
    int col_t[MAX_TENSORS], col_pos[MAX_TENSORS], ncols;
    char *col_name[MAX_TENSORS];
    FILE *f;
    const char *path;        /* for messages */
    int64_t max_samples;
    uint64_t total_bytes;
} source;

static void source_free(source *s)
{
    for (int c = 0; c < s->ncols; c++)
        free(s->col_name[c]);
    for (int i = 0; i < s->n; i++) {
        free(s->t[i].name);
        free(s->t[i].mem);
    }
    if (s->f)
        fclose(s->f);
}

static size_t dtype_size(Fluxion__V1__DataType dt)
{
    return dt == FLUXION__V1__DATA_TYPE__INT64 ? 8 : 4;
}

static void add_totals(source *s)
{
    for (int i = 0; i < s->n; i++) {
        if (s->t[i].shape[0] > s->max_samples)
            s->max_samples = s->t[i].shape[0];
        s->total_bytes += s->t[i].sample_bytes * (uint64_t)s->t[i].shape[0];
    }
}

/* ------------------------------------------------------------ safetensors */

static int st_dtype(const char *s, Fluxion__V1__DataType *dt)
{
    if (!strcmp(s, "F32"))
        *dt = FLUXION__V1__DATA_TYPE__FP32;
    else if (!strcmp(s, "I32"))
        *dt = FLUXION__V1__DATA_TYPE__INT32;
    else if (!strcmp(s, "I64"))
        *dt = FLUXION__V1__DATA_TYPE__INT64;
    else
        return -1;
    return 0;
}

/* One header entry {"dtype", "shape", "data_offsets"} into t. */
static int st_entry(source *s, const char *name, json_t *e, uint64_t data_start, uint64_t fsize)
{
    src_tensor *t = &s->t[s->n];
    json_t *dt = json_object_get(e, "dtype"), *shape = json_object_get(e, "shape"),
           *offs = json_object_get(e, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(shape) || json_array_size(offs) != 2)
        return cli_local_error("%s: tensor '%s': not a safetensors entry", s->path, name);
    if (st_dtype(json_string_value(dt), &t->dtype) != 0)
        return cli_local_error("%s: tensor '%s': dtype %s (datasets hold F32, I32 or I64)",
                               s->path, name, json_string_value(dt));
    size_t nd = json_array_size(shape);
    if (nd < 1 || nd > MAX_DIMS)
        return cli_local_error("%s: tensor '%s': %zu dimensions (1 to %d: samples first)",
                               s->path, name, nd, MAX_DIMS);
    uint64_t bytes = dtype_size(t->dtype);
    t->ndim = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 ||
            __builtin_mul_overflow(bytes, (uint64_t)json_integer_value(d), &bytes))
            return cli_local_error("%s: tensor '%s': bad shape", s->path, name);
        t->shape[i] = json_integer_value(d);
    }
    t->sample_bytes = t->shape[0] ? bytes / (uint64_t)t->shape[0] : 0;
    if (!t->shape[0]) {
        t->sample_bytes = dtype_size(t->dtype);
        for (int i = 1; i < t->ndim; i++)
            t->sample_bytes *= (uint64_t)t->shape[i];
    }
    json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
        (uint64_t)(json_integer_value(en) - json_integer_value(b)) != bytes ||
        data_start + (uint64_t)json_integer_value(en) > fsize)
        return cli_local_error("%s: tensor '%s': data_offsets do not match its shape or lie "
                               "past the end of the file", s->path, name);
    t->off = data_start + (uint64_t)json_integer_value(b);
    if (!(t->name = strdup(name)))
        return cli_local_error("out of memory");
    s->n++;
    return CLI_OK;
}

static int cmp_src(const void *a, const void *b)
{
    return strcmp(((const src_tensor *)a)->name, ((const src_tensor *)b)->name);
}

static int load_safetensors(source *s)
{
    struct stat st;
    unsigned char len8[8];
    if (fstat(fileno(s->f), &st) != 0 || fread(len8, 1, 8, s->f) != 8)
        return cli_local_error("%s: not a safetensors file (too short)", s->path);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen > (100u << 20) || 8 + hlen > (uint64_t)st.st_size)
        return cli_local_error("%s: not a safetensors file (header length %" PRIu64 ")", s->path,
                               hlen);
    char *h = malloc(hlen + 1);
    if (!h || fread(h, 1, hlen, s->f) != hlen) {
        free(h);
        return cli_local_error("%s: cannot read the header", s->path);
    }
    json_error_t je;
    json_t *root = json_loadb(h, hlen, JSON_REJECT_DUPLICATES, &je);
    free(h);
    if (!json_is_object(root)) {
        json_decref(root);
        return cli_local_error("%s: the safetensors header is not a JSON object: %s", s->path,
                               je.text);
    }
    const char *key;
    json_t *e;
    int rc = CLI_OK;
    json_object_foreach(root, key, e) {
        if (!strcmp(key, "__metadata__"))
            continue;
        if (s->n == MAX_TENSORS) {
            rc = cli_local_error("%s: more than %d tensors", s->path, MAX_TENSORS);
            break;
        }
        if ((rc = st_entry(s, key, e, 8 + hlen, (uint64_t)st.st_size)) != CLI_OK)
            break;
    }
    json_decref(root);
    if (!rc && s->n == 0)
        rc = cli_local_error("%s: no tensors", s->path);
    qsort(s->t, (size_t)s->n, sizeof s->t[0], cmp_src);
    return rc;
}

/* -------------------------------------------------------------------- CSV */

typedef struct {
    char **cells;
    int n, cap;
} row;

/* Splits line (modified in place) at commas; trims spaces and a CR. */
static int split(char *line, row *r)
{
    r->n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line;;) {
        if (r->n == r->cap) {
            int nc = r->cap ? r->cap * 2 : 16;
            char **c = realloc(r->cells, (size_t)nc * sizeof *c);
            if (!c)
                return -1;
            r->cells = c;
            r->cap = nc;
        }
        char *end = strchr(p, ',');
        if (end)
            *end = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        size_t l = strlen(p);
        while (l && (p[l - 1] == ' ' || p[l - 1] == '\t'))
            p[--l] = '\0';
        r->cells[r->n++] = p;
        if (!end)
            return 0;
        p = end + 1;
    }
}

static int grow(src_tensor *t, int64_t need)
{
    if (need <= t->cap)
        return 0;
    int64_t cap = t->cap ? t->cap * 2 : 1024;
    void *m = realloc(t->mem, (size_t)cap * t->sample_bytes);
    if (!m)
        return -1;
    t->mem = m;
    t->cap = cap;
    return 0;
}

/* Column c's cell of the sample at row (the tensors' shape[0] grows once
 * the whole row is read). */
static int csv_value(source *s, int c, const char *cell, long line)
{
    const char *colname = s->col_name[c];
    src_tensor *t = &s->t[s->col_t[c]];
    char *end;
    errno = 0;
    int64_t width = t->ndim == 2 ? t->shape[1] : 1;
    int64_t i = t->shape[0] * width + s->col_pos[c];
    if (t->dtype == FLUXION__V1__DATA_TYPE__INT64) {
        long long v = strtoll(cell, &end, 10);
        if (!*cell || *end || errno)
            return cli_local_error("%s: line %ld, column '%s': \"%s\" is not an integer class "
                                   "label", s->path, line, colname, cell);
        ((int64_t *)t->mem)[i] = v;
    } else {
        float v = strtof(cell, &end);
        if (!*cell || *end || errno == ERANGE)
            return cli_local_error("%s: line %ld, column '%s': \"%s\" is not a number", s->path,
                                   line, colname, cell);
        ((float *)t->mem)[i] = v;
    }
    return CLI_OK;
}

/* --features [NAME=]A,B,...: the group's tensor name (default "x") and its
 * columns, found in the header row r (the group is tensor s->n, made here). */
static int csv_features(source *s, row *r, const char *features, const char *label)
{
    const char *eq = strchr(features, '=');
    const char *list = eq ? eq + 1 : features;
    size_t nlen = eq ? (size_t)(eq - features) : 1;
    if (eq && nlen == 0)
        return cli_usage_error("--features: no tensor name before '=' in \"%s\"", features);
    if (s->n == MAX_TENSORS)
        return cli_local_error("%s: more than %d tensors", s->path, MAX_TENSORS);
    src_tensor *g = &s->t[s->n];
    if (!(g->name = eq ? strndup(features, nlen) : strdup("x")))
        return cli_local_error("out of memory");
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, g->name))
            return cli_usage_error("--features: the tensor name '%s' is also a column's: name "
                                   "the group (--features NAME=%s)", g->name, list);
    char *copy = strdup(list);
    if (!copy)
        return cli_local_error("out of memory");
    int k = 0, rc = CLI_OK;
    char *save = NULL;
    for (char *name = strtok_r(copy, ",", &save); name && !rc;
         name = strtok_r(NULL, ",", &save)) {
        while (*name == ' ')
            name++;
        int c = 0;
        while (c < r->n && strcmp(r->cells[c], name) != 0)
            c++;
        if (c == r->n)
            rc = cli_local_error("%s: --features: no column '%s' in the header", s->path, name);
        else if (label && !strcmp(label, name))
            rc = cli_usage_error("--features: '%s' is the --label column", name);
        else if (s->col_t[c] == s->n)
            rc = cli_usage_error("--features: column '%s' is listed twice", name);
        else {
            s->col_t[c] = s->n;
            s->col_pos[c] = k++;
        }
    }
    free(copy);
    if (!rc && k == 0)
        rc = cli_usage_error("--features: no columns in \"%s\"", features);
    if (rc)
        return rc;
    g->dtype = FLUXION__V1__DATA_TYPE__FP32;
    g->ndim = 2;
    g->shape[1] = k;
    g->sample_bytes = 4 * (uint64_t)k;
    s->n++;
    return CLI_OK;
}

static int csv_header(source *s, row *r, const char *label, const char *features)
{
    if (r->n > MAX_TENSORS)
        return cli_local_error("%s: %d columns (at most %d)", s->path, r->n, MAX_TENSORS);
    bool found = !label;
    for (int i = 0; i < r->n; i++) {
        if (!(s->col_name[i] = strdup(r->cells[i])))
            return cli_local_error("out of memory");
        s->ncols = i + 1;
        if (!*r->cells[i])
            return cli_local_error("%s: line 1: column %d has no name", s->path, i + 1);
        for (int k = 0; k < i; k++)
            if (!strcmp(r->cells[k], r->cells[i]))
                return cli_local_error("%s: line 1: column '%s' appears twice", s->path,
                                       r->cells[i]);
        found |= label && !strcmp(label, r->cells[i]);
        s->col_t[i] = -1;
    }
    if (!found)
        return cli_local_error("%s: --label %s: no such column in the header", s->path, label);
    int rc = features ? csv_features(s, r, features, label) : CLI_OK;
    /* every other column: a tensor of its own */
    for (int i = 0; !rc && i < r->n; i++) {
        if (s->col_t[i] >= 0)
            continue;
        if (s->n == MAX_TENSORS)
            return cli_local_error("%s: more than %d tensors", s->path, MAX_TENSORS);
        src_tensor *t = &s->t[s->n];
        bool is_label = label && !strcmp(label, r->cells[i]);
        t->dtype = is_label ? FLUXION__V1__DATA_TYPE__INT64 : FLUXION__V1__DATA_TYPE__FP32;
        t->ndim = 1;
        t->sample_bytes = dtype_size(t->dtype);
        if (!(t->name = strdup(r->cells[i])))
            return cli_local_error("out of memory");
        if (features)
            for (int k = 0; k < s->n; k++)
                if (!strcmp(s->t[k].name, t->name))
                    return cli_usage_error("--features: the tensor name '%s' is also a "
                                           "column's: name the group (--features NAME=...)",
                                           t->name);
        s->col_t[i] = s->n++;
        s->col_pos[i] = 0;
    }
    return rc;
}

static int load_csv(source *s, const char *label, const char *features)
{
    char *line = NULL;
    size_t cap = 0;
    row r = {0};
    long lineno = 0;
    int rc = CLI_OK;
    while (!rc && getline(&line, &cap, s->f) > 0) {
        lineno++;
        if (split(line, &r) != 0) {
            rc = cli_local_error("out of memory");
            break;
        }
        if (lineno > 1 && r.n == 1 && !*r.cells[0])
            continue; /* blank line */
        if (lineno == 1) {
            rc = csv_header(s, &r, label, features);
            continue;
        }
        if (r.n != s->ncols) {
            rc = cli_local_error("%s: line %ld has %d fields, the header %d", s->path, lineno,
                                 r.n, s->ncols);
            break;
        }
        for (int i = 0; !rc && i < s->n; i++)
            if (grow(&s->t[i], s->t[i].shape[0] + 1) != 0)
                rc = cli_local_error("out of memory");
        for (int c = 0; !rc && c < s->ncols; c++)
            rc = csv_value(s, c, r.cells[c], lineno);
        for (int i = 0; !rc && i < s->n; i++)
            s->t[i].shape[0]++;
    }
    if (!rc && ferror(s->f))
        rc = cli_local_error("%s: %s", s->path, strerror(errno));
    if (!rc && lineno == 0)
        rc = cli_local_error("%s: empty file (a header row is needed)", s->path);
    free(line);
    free(r.cells);
    if (!rc)
        qsort(s->t, (size_t)s->n, sizeof s->t[0], cmp_src);
    return rc;
}

/* ---------------------------------------------------------------- upload */

typedef struct {
    source *src;
    const char *name, *description;
    int64_t per_chunk, at;
    uint64_t sent;
    bool first, progress;
    Fluxion__V1__UploadDatasetChunk chunk;
    Fluxion__V1__TensorData td[MAX_TENSORS];
    Fluxion__V1__TensorData *tdp[MAX_TENSORS];
    int64_t shapes[MAX_TENSORS][MAX_DIMS]; /* the pieces': shape[0] is theirs */
    unsigned char *buf;      /* file data of this chunk */
    int read_errno;
} upload_state;

static void show_progress(upload_state *u, bool done)
{
    if (!u->progress)
        return;
    char a[32], b[32];
    fprintf(stderr, "\ruploading %s: %3d%% (%s of %s)%s", u->name,
            u->src->total_bytes ? (int)(100 * u->sent / u->src->total_bytes) : 100,
            cli_bytes(u->sent, a, sizeof a), cli_bytes(u->src->total_bytes, b, sizeof b),
            done ? "\n" : "");
    fflush(stderr);
}

/* Samples [at, at + per_chunk) of every tensor that has them. */
static const ProtobufCMessage *upload_next(void *data, int *fail)
{
    upload_state *u = data;
    source *s = u->src;
    if (!u->first && u->at >= s->max_samples) {
        show_progress(u, true);
        return NULL;
    }
    fluxion__v1__upload_dataset_chunk__init(&u->chunk);
    if (u->first) {
        u->chunk.name = (char *)u->name;
        u->chunk.description = (char *)u->description;
        u->first = false;
    }
    size_t boff = 0;
    u->chunk.tensors = u->tdp;
    for (int i = 0; i < s->n; i++) {
        src_tensor *t = &s->t[i];
        if (u->at >= t->shape[0] && !(u->at == 0 && t->shape[0] == 0))
            continue;
        int64_t n = t->shape[0] - u->at < u->per_chunk ? t->shape[0] - u->at : u->per_chunk;
        size_t bytes = (size_t)((uint64_t)n * t->sample_bytes);
        Fluxion__V1__TensorData *td = &u->td[u->chunk.n_tensors];
        fluxion__v1__tensor_data__init(td);
        td->name = t->name;
        td->dtype = t->dtype;
        td->n_shape = (size_t)t->ndim;
        td->shape = u->shapes[u->chunk.n_tensors];
        memcpy(td->shape, t->shape, sizeof t->shape);
        td->shape[0] = n;
        if (t->mem) {
            td->data.data = (uint8_t *)t->mem + (uint64_t)u->at * t->sample_bytes;
        } else {
            if (fseeko(s->f, (off_t)(t->off + (uint64_t)u->at * t->sample_bytes), SEEK_SET) != 0 ||
                fread(u->buf + boff, 1, bytes, s->f) != bytes) {
                u->read_errno = errno ? errno : EIO;
                *fail = 1;
                return NULL;
            }
            td->data.data = u->buf + boff;
            boff += bytes;
        }
        td->data.len = bytes;
        u->sent += bytes;
        u->tdp[u->chunk.n_tensors++] = td;
    }
    u->at += u->per_chunk;
    show_progress(u, false);
    return &u->chunk.base;
}

static void print_dataset(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Dataset *d = (const Fluxion__V1__Dataset *)msg;
    char t[32], b[32];
    printf("name:        %s\n", d->name);
    if (*d->description)
        printf("description: %s\n", d->description);
    printf("created:     %s\n", cli_time(d->created_unix_ms, t, sizeof t));
    printf("samples:     %" PRIu64 "\n", d->num_samples);
    printf("size:        %s in %u shard%s\n", cli_bytes(d->bytes, b, sizeof b), d->num_shards,
           d->num_shards == 1 ? "" : "s");
    printf("sha256:      %s\n", d->sha256);
    printf("tensors:\n");
    for (size_t i = 0; i < d->n_tensors; i++) {
        const Fluxion__V1__DatasetTensor *x = d->tensors[i];
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(&fluxion__v1__data_type__descriptor, x->dtype);
        printf("  %-16s %-6s [N", x->name, v ? v->name : "?");
        for (size_t k = 0; k < x->n_sample_shape; k++)
            printf(", %" PRId64, x->sample_shape[k]);
        printf("]\n");
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

static int open_source(source *s, const char *path, const char *label, const char *features)
{
    bool csv = ends_with(path, ".csv");
    if (!csv && !ends_with(path, ".safetensors"))
        return cli_usage_error("dataset upload: %s: expected a .safetensors or .csv file", path);
    if ((label || features) && !csv)
        return cli_usage_error("dataset upload: --%s applies to CSV files only",
                               label ? "label" : "features");
    s->path = path;
    if (!(s->f = fopen(path, "rb")))
        return cli_local_error("%s: %s", path, strerror(errno));
    int rc = csv ? load_csv(s, label, features) : load_safetensors(s);
    if (!rc)
        add_totals(s);
    return rc;
}

static int cmd_upload(cli_ctx *c, const cli_args *a)
{
    int64_t chunk_mb = 1;
    if (a->opt[1] && cli_parse_positive("--chunk-mb", a->opt[1], &chunk_mb))
        return CLI_ERR_USAGE;
    if (chunk_mb > 1024)
        return cli_usage_error("--chunk-mb: %" PRId64 " is more than 1024", chunk_mb);
    source *s = calloc(1, sizeof *s);
    upload_state *u = calloc(1, sizeof *u);
    if (!s || !u) {
        free(s);
        free(u);
        return cli_local_error("out of memory");
    }
    int rc = open_source(s, a->pos[1], a->opt[2], a->opt[3]);
    uint64_t row = 0;
    for (int i = 0; i < s->n; i++)
        row += s->t[i].sample_bytes;
    /* a message also carries names and shapes: leave room under the limit */
    uint64_t budget = ((uint64_t)chunk_mb << 20) - ((uint64_t)chunk_mb << 20) / 16;
    *u = (upload_state){ .src = s, .name = a->pos[0], .description = a->opt[0] ? a->opt[0] : "",
                         .per_chunk = row && budget / row > 0 ? (int64_t)(budget / row) : 1,
                         .first = true, .progress = !c->json && isatty(STDERR_FILENO) };
    if (!rc && !(u->buf = malloc((size_t)(u->per_chunk * (int64_t)(row ? row : 1)))))
        rc = cli_local_error("out of memory for a chunk of %" PRId64 " samples", u->per_chunk);
    fxc_channel *ch = rc ? NULL : cli_channel(c);
    if (!rc && !ch)
        rc = CLI_ERR_LOCAL;
    ProtobufCMessage *resp = NULL;
    if (!rc) {
        char err[1024] = "";
        fxc_call_opts o = cli_call_opts(c);
        cli_rpc r = cli_rpc_of(&fluxion__v1__dataset_service__descriptor, "UploadDataset");
        int code = fxc_client_stream(ch, r.path, upload_next, NULL, u, r.resp, &resp, &o, err,
                                     sizeof err);
        if (u->progress && code)
            fputc('\n', stderr);
        if (u->read_errno)
            rc = cli_local_error("%s: %s", s->path, strerror(u->read_errno));
        else if (code)
            rc = cli_status_error(c, code, err);
    }
    if (!rc)
        rc = cli_show(c, resp, print_dataset, NULL);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    free(u->buf);
    free(u);
    source_free(s);
    free(s);
    return rc;
}

/* ------------------------------------------------------ list, get, delete */

static int by_name(const void *a, const void *b)
{
    return strcmp((*(Fluxion__V1__Dataset *const *)a)->name,
                  (*(Fluxion__V1__Dataset *const *)b)->name);
}

static void print_datasets(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__ListDatasetsResponse *l = (const Fluxion__V1__ListDatasetsResponse *)msg;
    if (!l->n_datasets) {
        printf("no datasets\n");
        return;
    }
    int w = 4;
    for (size_t i = 0; i < l->n_datasets; i++)
        if ((int)strlen(l->datasets[i]->name) > w)
            w = (int)strlen(l->datasets[i]->name);
    printf("%-*s  %10s  %10s  %7s  %-20s  %s\n", w, "NAME", "SAMPLES", "SIZE", "TENSORS",
           "CREATED", "DESCRIPTION");
    for (size_t i = 0; i < l->n_datasets; i++) {
        const Fluxion__V1__Dataset *d = l->datasets[i];
        char t[32], b[32];
        printf("%-*s  %10" PRIu64 "  %10s  %7zu  %-20s  %s\n", w, d->name, d->num_samples,
               cli_bytes(d->bytes, b, sizeof b), d->n_tensors,
               cli_time(d->created_unix_ms, t, sizeof t), d->description);
    }
}

static int cmd_list(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__ListDatasetsRequest req = FLUXION__V1__LIST_DATASETS_REQUEST__INIT;
    ProtobufCMessage *resp;
    int rc = cli_unary(c, &fluxion__v1__dataset_service__descriptor, "ListDatasets", &req.base,
                       &resp);
    if (rc)
        return rc;
    Fluxion__V1__ListDatasetsResponse *l = (Fluxion__V1__ListDatasetsResponse *)resp;
    if (l->n_datasets > 1)
        qsort(l->datasets, l->n_datasets, sizeof *l->datasets, by_name);
    rc = cli_show(c, resp, print_datasets, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cmd_get(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__GetDatasetRequest req = FLUXION__V1__GET_DATASET_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    return cli_call_print(c, &fluxion__v1__dataset_service__descriptor, "GetDataset", &req.base,
                          print_dataset, NULL);
}

static int cmd_delete(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__DeleteDatasetRequest req = FLUXION__V1__DELETE_DATASET_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    return cli_call_print(c, &fluxion__v1__dataset_service__descriptor, "DeleteDataset",
                          &req.base, cli_print_done, &(cli_done){ "deleted", "dataset", a->pos[0] });
}

/* ------------------------------------------------------------------ table */

const cli_command cli_dataset_commands[] = {
    {"dataset upload",
     "NAME FILE [--description TEXT] [--chunk-mb N] [--label COLUMN] [--features [T=]A,B,..]",
     "upload a dataset from a .safetensors or .csv file",
     "safetensors: every tensor's first dimension is the sample index (F32, I32 or\n"
     "I64). CSV: a header row names the columns; each numeric column becomes an\n"
     "FP32 tensor of that name, and --label COLUMN makes that column INT64 class\n"
     "labels; --features [T=]A,B,C,D groups those columns, in that order, into\n"
     "one FP32 tensor T (default x) of shape [N, 4]. The file is streamed in\n"
     "chunks of whole samples of about --chunk-mb MiB (default 1; keep it under\n"
     "the server's --max-message-mb), so files far\n"
     "larger than one message go through; a progress line shows on a terminal.\n"
     "The server stores the dataset only when the whole upload is valid.\n",
     2,
     2,
     {{"description", 0, "TEXT", "a description kept with the dataset"},
      {"chunk-mb", 0, "N", "size of each streamed chunk, MiB (default 1)"},
      {"label", 0, "COLUMN", "CSV: this column holds integer class labels (INT64)"},
      {"features", 0, "[T=]A,B,..", "CSV: columns grouped into one FP32 tensor T [N, k] (T: x)"}},
     cmd_upload},
    {"dataset list", "", "list the datasets on the server, by name", NULL, 0, 0, {{0}}, cmd_list},
    {"dataset get",
     "NAME",
     "show a dataset: samples, tensors, size, checksum",
     NULL,
     1,
     1,
     {{0}},
     cmd_get},
    {"dataset delete",
     "NAME",
     "delete a dataset (refused while a training job uses it)",
     NULL,
     1,
     1,
     {{0}},
     cmd_delete},
};
const size_t cli_n_dataset_commands = sizeof cli_dataset_commands / sizeof cli_dataset_commands[0];
