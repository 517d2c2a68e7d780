/*
 * tbevents.c - TensorBoard event files: TFRecord framing around hand-encoded
 * tensorflow.Event protobufs (only the few fields scalars need, so no .proto
 * and no TensorFlow dependency).
 *
 * Records are buffered in memory and written by fxtb_flush (or when the
 * buffer grows large). A crash can tear the last record; TensorBoard's reader
 * stops at a record whose length or CRC does not check out, so everything
 * before it stays readable. A failed write (a full disk) is cut off the file
 * at once and its records stay buffered for the next flush, so a disk that
 * fills up and is freed again costs no events and leaves no torn record.
 */
#include "training/tbevents.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/status.h"
#include "base/util.h"

#define AUTO_FLUSH_BYTES (64 * 1024)
/* Records kept while writes fail (a full disk) before new ones are dropped. */
#define MAX_PENDING (1024 * 1024)

struct fxtb_writer {
    int fd;
    char *path;
    off_t size;         /* bytes of whole records in the file */
    unsigned char *buf; /* framed records not yet written */
    size_t len, cap;
    bool retrying; /* the last write failed: no automatic flush until one works */
    bool broken;   /* a failed write could not be cut off: later calls fail */
};

/* ----------------------------------------------------------------- CRC-32C */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1; /* Castagnoli, reflected */
        crc_table[i] = c;
    }
}

uint32_t fxtb_crc32c(const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t fxtb_masked_crc(const void *data, size_t len)
{
    uint32_t c = fxtb_crc32c(data, len);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

/* ------------------------------------------------------- protobuf encoding */

/* A small growable byte string for building one Event. */
typedef struct {
    unsigned char *p;
    size_t len, cap;
    bool nomem;
} bytes;

static void put(bytes *b, const void *src, size_t n)
{
    if (b->nomem)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->nomem = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_varint(bytes *b, uint64_t v)
{
    unsigned char tmp[10];
    int n = 0;
    do {
        tmp[n] = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v)
            tmp[n] |= 0x80;
        n++;
    } while (v);
    put(b, tmp, (size_t)n);
}

static void put_le(bytes *b, uint64_t v, int n)
{
    unsigned char tmp[8];
    for (int i = 0; i < n; i++)
        tmp[i] = (unsigned char)(v >> (8 * i));
    put(b, tmp, (size_t)n);
}

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

static void put_key(bytes *b, int field, int wire) { put_varint(b, (uint64_t)(field << 3 | wire)); }

static void put_len_field(bytes *b, int field, const void *data, size_t n)
{
    put_key(b, field, WT_LEN);
    put_varint(b, n);
    put(b, data, n);
}

/* Event { wall_time = 1 (double), step = 2 (int64), file_version = 3,
 * summary = 5 { value = 1 { tag = 1, simple_value = 2 (float) } } }. */
static void encode_event(bytes *ev, int64_t step, const char *file_version, const char *tag,
                         double value)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    double wall = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    uint64_t bits;
    memcpy(&bits, &wall, sizeof bits);
    put_key(ev, 1, WT_I64);
    put_le(ev, bits, 8);
    put_key(ev, 2, WT_VARINT);
    put_varint(ev, (uint64_t)step);
    if (file_version)
        put_len_field(ev, 3, file_version, strlen(file_version));
    if (tag) {
        bytes val = {0}, summary = {0};
        put_len_field(&val, 1, tag, strlen(tag));
        float f = (float)value;
        uint32_t fb;
        memcpy(&fb, &f, sizeof fb);
        put_key(&val, 2, WT_I32);
        put_le(&val, fb, 4);
        put_len_field(&summary, 1, val.p, val.len);
        put_len_field(ev, 5, summary.p, summary.len);
        ev->nomem = ev->nomem || val.nomem || summary.nomem;
        free(val.p);
        free(summary.p);
    }
}

/* ------------------------------------------------------------------ writer */

/* Appends one TFRecord (length, masked CRC of it, data, masked CRC). While
 * writes fail (a full disk), records wait in the buffer (no automatic flush
 * until an explicit one works) up to MAX_PENDING bytes; past that, new ones
 * are dropped. */
static int append_record(fxtb_writer *w, const bytes *ev, char *err, size_t errlen)
{
    if (w->len + ev->len + 16 > MAX_PENDING)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED,
                        "%s: %zu bytes of events wait for a write that failed; event dropped",
                        w->path, w->len);
    bytes rec = {.p = w->buf, .len = w->len, .cap = w->cap};
    unsigned char hdr[8];
    for (int i = 0; i < 8; i++)
        hdr[i] = (unsigned char)((uint64_t)ev->len >> (8 * i));
    put(&rec, hdr, 8);
    put_le(&rec, fxtb_masked_crc(hdr, 8), 4);
    put(&rec, ev->p, ev->len);
    put_le(&rec, fxtb_masked_crc(ev->p, ev->len), 4);
    w->buf = rec.p;
    w->cap = rec.cap;
    if (rec.nomem) /* keep the whole records already there; drop the partial one */
        return fxu_oom(err, errlen);
    w->len = rec.len;
    return w->len >= AUTO_FLUSH_BYTES && !w->retrying ? fxtb_flush(w, err, errlen) : 0;
}

/* 0 when w can take events: it exists and no failed write left it torn. */
static int writable(const fxtb_writer *w, char *err, size_t errlen)
{
    if (!w)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensorboard: no writer");
    if (w->broken)
        return fxu_fail(err, errlen, FXS_INTERNAL,
                        "%s: the file could not be repaired after a failed write", w->path);
    return 0;
}

static int add_event(fxtb_writer *w, int64_t step, const char *file_version, const char *tag,
                     double value, char *err, size_t errlen)
{
    int rc0 = writable(w, err, errlen);
    if (rc0)
        return rc0;
    bytes ev = {0};
    encode_event(&ev, step, file_version, tag, value);
    int rc = ev.nomem ? fxu_oom(err, errlen) : append_record(w, &ev, err, errlen);
    free(ev.p);
    return rc;
}

int fxtb_open(const char *dir, fxtb_writer **out, char *err, size_t errlen)
{
    static atomic_uint counter;
    if (!out)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensorboard: no place for the writer");
    *out = NULL;
    if (!dir || !*dir)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensorboard dir is empty");
    int rc = fxu_mkdir_p(dir, err, errlen);
    if (rc)
        return rc;
    char host[256] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0)
        strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    fxtb_writer *w = calloc(1, sizeof *w);
    size_t n = strlen(dir) + strlen(host) + 96;
    if (w)
        w->path = malloc(n);
    if (!w || !w->path) {
        free(w);
        return fxu_oom(err, errlen);
    }
    snprintf(w->path, n, "%s/events.out.tfevents.%lld.%s.%d.%u", dir, (long long)time(NULL), host,
             (int)getpid(), atomic_fetch_add(&counter, 1));
    w->fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int e = errno;
        rc = fxu_fail(err, errlen, fxu_errno_status(e), "%s: %s", w->path, strerror(e));
        free(w->path);
        free(w);
        return rc;
    }
    rc = add_event(w, 0, "brain.Event:2", NULL, 0, err, errlen);
    if (!rc)
        rc = fxtb_flush(w, err, errlen);
    if (rc) {
        fxtb_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

int fxtb_scalar(fxtb_writer *w, const char *tag, int64_t step, double value, char *err,
                size_t errlen)
{
    if (!tag || !*tag)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensorboard: a scalar needs a tag");
    return add_event(w, step, NULL, tag, value, err, errlen);
}

int fxtb_flush(fxtb_writer *w, char *err, size_t errlen)
{
    int rc0 = writable(w, err, errlen);
    if (rc0)
        return rc0;
    if (!w->len)
        return 0;
    if (fxu_write_all(w->fd, w->buf, w->len) != 0) {
        int e = errno;
        /* Cut off what part of the buffer got written: the file keeps whole
         * records only, and the next flush writes the buffer again. */
        if (ftruncate(w->fd, w->size) != 0 || lseek(w->fd, w->size, SEEK_SET) != w->size)
            w->broken = true;
        w->retrying = true;
        return fxu_fail(err, errlen, fxu_errno_status(e), "%s: %s", w->path, strerror(e));
    }
    w->size += (off_t)w->len;
    w->len = 0;
    w->retrying = false;
    if (fsync(w->fd) != 0) {
        int e = errno;
        return fxu_fail(err, errlen, fxu_errno_status(e), "%s: fsync: %s", w->path, strerror(e));
    }
    return 0;
}

void fxtb_close(fxtb_writer *w)
{
    if (!w)
        return;
    fxtb_flush(w, NULL, 0);
    close(w->fd);
    free(w->buf);
    free(w->path);
    free(w);
}

const char *fxtb_path(const fxtb_writer *w) { return w ? w->path : NULL; }
