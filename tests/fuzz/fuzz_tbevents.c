/*
 * fuzz_tbevents.c - the TensorBoard writer's inputs (server/training/
 * tbevents.c): tags (a job's metric names, from its spec) and values of
 * any kind (NaN, infinities, huge steps). The input is a list of records,
 * each a tag (up to a NUL byte or the end), an 8-byte step and an 8-byte
 * double; they are written to a new event file, flushed, and the file is
 * read back: it must be a whole TFRecord stream (every length and masked
 * CRC-32C right), as TensorBoard reads it, with one event per accepted
 * scalar after the file_version event.
 */
#include "fuzz_tmp.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "training/tbevents.h"

static char g_dir[256];

static void init(void)
{
    if (g_dir[0])
        return;
    snprintf(g_dir, sizeof g_dir, "%s", fuzz_tmp("tb"));
}

static void rm_files(void)
{
    DIR *d = opendir(g_dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The number of records in the file; aborts on a broken one. */
static int check_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        abort();
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap && !(buf = realloc(buf, cap = cap ? cap * 2 : 4096)))
            abort();
        size_t r = fread(buf + n, 1, cap - n, f);
        if (!r)
            break;
        n += r;
    }
    fclose(f);
    int records = 0;
    for (size_t off = 0; off < n; records++) {
        if (n - off < 12)
            abort();
        uint64_t len = le64(buf + off);
        if (le32(buf + off + 8) != fxtb_masked_crc(buf + off, 8) || len > n - off - 16) {
            fprintf(stderr, "fuzz_tbevents: bad record header at %zu\n", off);
            abort();
        }
        if (le32(buf + off + 12 + len) != fxtb_masked_crc(buf + off + 12, (size_t)len)) {
            fprintf(stderr, "fuzz_tbevents: bad data CRC at %zu\n", off);
            abort();
        }
        off += 16 + (size_t)len;
    }
    free(buf);
    return records;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    fxtb_writer *w = NULL;
    char err[512] = "";
    if (fxtb_open(g_dir, &w, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tbevents: %s\n", err);
        abort();
    }
    int accepted = 0;
    for (size_t off = 0; off < size && accepted < 1000;) {
        const uint8_t *nul = memchr(data + off, 0, size - off);
        size_t tl = nul ? (size_t)(nul - (data + off)) : size - off;
        char *tag = malloc(tl + 1);
        if (!tag)
            abort();
        memcpy(tag, data + off, tl);
        tag[tl] = 0;
        off += tl + (nul ? 1 : 0);
        uint8_t num[16] = {0};
        size_t take = size - off < 16 ? size - off : 16;
        memcpy(num, data + off, take);
        off += take;
        int64_t step = (int64_t)le64(num);
        double value;
        memcpy(&value, num + 8, sizeof value);
        err[0] = 0;
        if (fxtb_scalar(w, tag, step, value, err, sizeof err) == 0)
            accepted++;
        else if (!err[0])
            abort();
        free(tag);
    }
    if (fxtb_flush(w, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tbevents: flush: %s\n", err);
        abort();
    }
    int records = check_file(fxtb_path(w));
    if (records != 1 + accepted) {
        fprintf(stderr, "fuzz_tbevents: %d records for %d scalars\n", records, accepted);
        abort();
    }
    fxtb_close(w);
    rm_files();
    return 0;
}
