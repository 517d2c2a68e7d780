/* test_tbevents.c - TensorBoard event files (server/tbevents.c).
 *
 * CRC-32C against published vectors (RFC 3720 B.4 and the usual check
 * value), the masked form against a value worked out by hand, the TFRecord
 * framing and the Event bytes of a scalar decoded here independently,
 * buffering until flush, a write that fails (a full disk, made here with
 * RLIMIT_FSIZE) and is retried, and bad arguments.
 *
 * `test_tbevents DIR` instead writes a known file into DIR for
 * tests/py/check_tbevents.py to read with TensorBoard's own reader. */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/status.h"
#include "training/tbevents.h"

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fx_tbevents_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void test_crc32c_vectors(void **state)
{
    (void)state;
    assert_int_equal(fxtb_crc32c("123456789", 9), 0xE3069283u);
    assert_int_equal(fxtb_crc32c("", 0), 0);
    unsigned char zeros[32] = {0}, ones[32];
    memset(ones, 0xFF, sizeof ones);
    assert_int_equal(fxtb_crc32c(zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    assert_int_equal(fxtb_crc32c(ones, 32), 0x62A8AB43u);
    unsigned char inc[32];
    for (int i = 0; i < 32; i++)
        inc[i] = (unsigned char)i;
    assert_int_equal(fxtb_crc32c(inc, 32), 0x46DD794Eu);
    /* rotate right 15, add 0xa282ead8: 0xE3069283 -> 0xC78AB0E5 */
    assert_int_equal(fxtb_masked_crc("123456789", 9), 0xC78AB0E5u);
}

/* Splits a TFRecord stream into records, checking both CRCs of each. */
static int records(const unsigned char *p, size_t len, const unsigned char **data, size_t *dlen,
                   int max)
{
    int n = 0;
    size_t off = 0;
    while (off < len) {
        assert_true(len - off >= 12);
        uint64_t l = le32(p + off) | (uint64_t)le32(p + off + 4) << 32;
        assert_int_equal(le32(p + off + 8), fxtb_masked_crc(p + off, 8));
        assert_true(len - off - 12 >= l + 4);
        assert_true(n < max);
        data[n] = p + off + 12;
        dlen[n] = (size_t)l;
        assert_int_equal(le32(p + off + 12 + l), fxtb_masked_crc(data[n], l));
        n++;
        off += 12 + l + 4;
    }
    return n;
}

static void test_file_layout(void **state)
{
    (void)state;
    char dir[300], err[256] = "";
    snprintf(dir, sizeof dir, "%s/a/b/tb", tmpdir); /* parents are made */
    fxtb_writer *w = NULL;
    assert_int_equal(fxtb_open(dir, &w, err, sizeof err), 0);
    assert_non_null(w);
    const char *path = fxtb_path(w);
    assert_non_null(strstr(path, "/events.out.tfevents."));
    assert_int_equal(strncmp(path, dir, strlen(dir)), 0);

    size_t len;
    unsigned char *p = slurp(path, &len);
    const unsigned char *data[8];
    size_t dlen[8];
    /* the header event is on disk at once: wall_time, step 0, file_version */
    assert_int_equal(records(p, len, data, dlen, 8), 1);
    static const unsigned char version[] = "\x10\x00\x1a\x0d"
                                           "brain.Event:2";
    assert_int_equal(dlen[0], 9 + sizeof version - 1);
    assert_int_equal(data[0][0], 0x09);
    assert_memory_equal(data[0] + 9, version, sizeof version - 1);
    free(p);

    assert_int_equal(fxtb_scalar(w, "ab", 7, 0.5, err, sizeof err), 0);
    assert_int_equal(fxtb_scalar(w, "loss", 300, -2.0, err, sizeof err), 0);
    p = slurp(path, &len);
    assert_int_equal(records(p, len, data, dlen, 8), 1); /* buffered */
    free(p);
    assert_int_equal(fxtb_flush(w, err, sizeof err), 0);
    p = slurp(path, &len);
    assert_int_equal(records(p, len, data, dlen, 8), 3);
    /* step 7 (varint), summary { value { tag "ab", simple_value 0.5f } } */
    static const unsigned char ev1[] = {0x10, 0x07, 0x2a, 0x0b, 0x0a, 0x09, 0x0a, 0x02,
                                        'a',  'b',  0x15, 0x00, 0x00, 0x00, 0x3f};
    assert_int_equal(dlen[1], 9 + sizeof ev1);
    assert_memory_equal(data[1] + 9, ev1, sizeof ev1);
    /* step 300 = 0xac 0x02; -2.0f = 0xc0000000 */
    static const unsigned char ev2[] = {0x10, 0xac, 0x02, 0x2a, 0x0d, 0x0a, 0x0b, 0x0a, 0x04,
                                        'l',  'o',  's',  's',  0x15, 0x00, 0x00, 0x00, 0xc0};
    assert_int_equal(dlen[2], 9 + sizeof ev2);
    assert_memory_equal(data[2] + 9, ev2, sizeof ev2);
    free(p);
    fxtb_close(w);

    /* a second writer on the same dir gets a file of its own */
    fxtb_writer *w1 = NULL, *w2 = NULL;
    assert_int_equal(fxtb_open(dir, &w1, err, sizeof err), 0);
    assert_int_equal(fxtb_open(dir, &w2, err, sizeof err), 0);
    assert_non_null(w1);
    assert_non_null(w2);
    assert_string_not_equal(fxtb_path(w1), fxtb_path(w2));
    fxtb_close(w1);
    fxtb_close(w2);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char err[256] = "", file[300], under[320];
    snprintf(file, sizeof file, "%s/plainfile", tmpdir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(under, sizeof under, "%s/tb", file);
    fxtb_writer *w = (fxtb_writer *)1;
    assert_int_not_equal(fxtb_open(under, &w, err, sizeof err), 0);
    assert_null(w);
    assert_non_null(strstr(err, "plainfile"));
    assert_int_equal(fxtb_open(file, &w, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "plainfile"));
    assert_int_equal(fxtb_open("", &w, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(fxtb_open(NULL, &w, NULL, 0), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxtb_open(tmpdir, NULL, NULL, 0), FXS_INVALID_ARGUMENT);

    assert_int_equal(fxtb_scalar(NULL, "x", 1, 1, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxtb_flush(NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    fxtb_close(NULL);
    assert_null(fxtb_path(NULL));
    assert_int_equal(fxtb_open(tmpdir, &w, err, sizeof err), 0);
    assert_non_null(w);
    assert_int_equal(fxtb_scalar(w, "", 1, 1, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxtb_scalar(w, NULL, 1, 1, NULL, 0), FXS_INVALID_ARGUMENT);
    fxtb_close(w);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* Writes past `limit` bytes fail (EFBIG, as ENOSPC would on a full disk);
 * limit 0 lifts the limit again. */
static void limit_file_size(off_t limit)
{
    static struct rlimit saved;
    static int have;
    if (!have) {
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
        signal(SIGXFSZ, SIG_IGN); /* the write fails instead of killing us */
        have = 1;
    }
    struct rlimit rl = saved;
    if (limit)
        rl.rlim_cur = (rlim_t)limit;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

/* A flush that fails halfway leaves whole records in the file (the torn
 * part is cut off) and keeps its events; once writes work again the next
 * flush writes them, in order. While writes fail, events wait in memory up
 * to a bound, then new ones are dropped with RESOURCE_EXHAUSTED. */
static void test_failed_write_is_retried(void **state)
{
    (void)state;
    char dir[300], err[256] = "";
    snprintf(dir, sizeof dir, "%s/full", tmpdir);
    fxtb_writer *w = NULL;
    assert_int_equal(fxtb_open(dir, &w, err, sizeof err), 0);
    const char *path = fxtb_path(w);
    assert_int_equal(fxtb_scalar(w, "a", 1, 1.0, err, sizeof err), 0);
    assert_int_equal(fxtb_flush(w, err, sizeof err), 0);
    off_t good = file_size(path);

    limit_file_size(good + 10); /* room for part of one record */
    assert_int_equal(fxtb_scalar(w, "b", 2, 2.0, err, sizeof err), 0);
    assert_int_equal(fxtb_scalar(w, "c", 3, 3.0, err, sizeof err), 0);
    int rc = fxtb_flush(w, err, sizeof err);
    limit_file_size(0);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, path));
    assert_int_equal(file_size(path), good); /* no torn record */

    assert_int_equal(fxtb_scalar(w, "d", 4, 4.0, err, sizeof err), 0);
    assert_int_equal(fxtb_flush(w, err, sizeof err), 0);
    size_t len;
    unsigned char *p = slurp(path, &len);
    const unsigned char *data[8];
    size_t dlen[8];
    assert_int_equal(records(p, len, data, dlen, 8), 5); /* header, a, b, c, d */
    for (int i = 1; i < 5; i++) {
        assert_int_equal(data[i][9], 0x10); /* step, a varint */
        assert_int_equal(data[i][10], i);
    }
    free(p);

    /* a disk that stays full: memory stays bounded */
    limit_file_size(file_size(path));
    int kept = 0;
    rc = 0;
    for (int i = 0; i < 200000 && rc != FXS_RESOURCE_EXHAUSTED; i++) {
        rc = fxtb_scalar(w, "loss", 10 + i, 0.5, err, sizeof err);
        kept += rc != FXS_RESOURCE_EXHAUSTED;
    }
    limit_file_size(0);
    assert_int_equal(rc, FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "dropped"));
    assert_true(kept > 1000);
    assert_int_equal(fxtb_flush(w, err, sizeof err), 0);
    p = slurp(path, &len);
    assert_true(len < 2u << 20);
    const unsigned char **all = malloc(sizeof *all * (size_t)(kept + 5));
    size_t *alen = malloc(sizeof *alen * (size_t)(kept + 5));
    assert_int_equal(records(p, len, all, alen, kept + 5), 5 + kept);
    free(all);
    free(alen);
    free(p);
    fxtb_close(w);
}

/* The file check_tbevents.py expects: loss at steps 1..20 (1/step),
 * val_loss at 5, 10, 15, 20 (2/step), "accuracy:logits" at 10, 20
 * (0.5, 0.75), lr at 1..20 (1e-3 * step); flushed twice on the way. */
static int write_sample(const char *dir)
{
    char err[256];
    fxtb_writer *w = NULL;
    if (fxtb_open(dir, &w, err, sizeof err) != 0) {
        fprintf(stderr, "fxtb_open: %s\n", err);
        return 1;
    }
    int rc = 0;
    for (int s = 1; s <= 20; s++) {
        rc |= fxtb_scalar(w, "loss", s, 1.0 / s, err, sizeof err);
        rc |= fxtb_scalar(w, "lr", s, 1e-3 * s, err, sizeof err);
        if (s % 5 == 0)
            rc |= fxtb_scalar(w, "val_loss", s, 2.0 / s, err, sizeof err);
        if (s % 10 == 0)
            rc |= fxtb_scalar(w, "accuracy:logits", s, s == 10 ? 0.5 : 0.75, err, sizeof err);
        if (s == 10)
            rc |= fxtb_flush(w, err, sizeof err);
    }
    printf("%s\n", fxtb_path(w));
    fxtb_close(w);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2)
        return write_sample(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test(test_file_layout),
        cmocka_unit_test(test_failed_write_is_retried),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
