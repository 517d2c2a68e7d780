/* test_safetensors.c - checkpoints in the safetensors format.
 *
 * Round trips of every dtype, a file written byte by byte by the test itself
 * per the format's description, every truncation and many random
 * corruptions of a valid file (refused, never a crash: the sanitizer build
 * catches reads out of bounds, and every truncated copy is its own exact-size
 * allocation), a table of specific corrupt headers, load_into's all-or-
 * nothing checks, and atomic saves that leave no temporary file and keep the
 * previous file when they fail.
 *
 * The binary is also a small tool for the interop test
 * (tests/py/check_safetensors.py, which reads our files with an independent
 * reader and writes files for us to read):
 *     test_safetensors --write PATH   writes the known file of known_params()
 *     test_safetensors --read PATH    loads PATH and prints one line per tensor:
 *                                     name TAB dtype TAB [shape] TAB values
 *                                     (f32 as %.9g, ints, f16/bf16 as raw bits)
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define ERRLEN 512

/* ------------------------------------------------------------ helpers */

/* A fresh temporary directory; removed by rm_dir. */
static char *tmp_dir(void)
{
    char *d = strdup("/tmp/fx_st_XXXXXX");
    assert_non_null(d);
    assert_non_null(mkdtemp(d));
    return d;
}

/* Removes the regular files of dir, then dir. */
static void rm_dir(char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            assert_int_equal(unlink(path), 0);
        }
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
    free(dir);
}

/* Number of entries of dir whose name contains ".tmp.". */
static int count_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* A file laid out per the format: 8-byte LE length of json, json, data. */
static uint8_t *hand_file(const char *json, const void *data, size_t dlen, size_t *len)
{
    size_t n = strlen(json);
    *len = 8 + n + dlen;
    uint8_t *b = malloc(*len);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, n);
    if (dlen)
        memcpy(b + 8 + n, data, dlen);
    return b;
}

static void put_le(uint8_t *p, uint64_t v, int nbytes)
{
    for (int i = 0; i < nbytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static size_t nbytes_of(const fx_tensor *t)
{
    return (size_t)fx_tensor_numel(t) * fx_dtype_size(t->dtype);
}

/* Asserts two lists hold the same names in the same order with equal
 * dtypes, shapes and bytes. */
static void assert_same_params(const fx_params *a, const fx_params *b)
{
    assert_int_equal(a->count, b->count);
    for (int i = 0; i < a->count; i++) {
        const fx_tensor *x = a->items[i].tensor, *y = b->items[i].tensor;
        assert_string_equal(a->items[i].name, b->items[i].name);
        assert_int_equal(x->dtype, y->dtype);
        assert_true(fx_tensor_same_shape(x, y));
        size_t n = nbytes_of(x);
        uint8_t *p = malloc(n + 1), *q = malloc(n + 1);
        assert_int_equal(fx_tensor_to_host(x, p, n), FX_OK);
        assert_int_equal(fx_tensor_to_host(y, q, n), FX_OK);
        assert_memory_equal(p, q, n);
        free(p);
        free(q);
    }
}

/* --------------------------------------------------- the known tensors */

/* Names and values the interop script knows independently. */
#define ODD_NAME "na\xc3\xafve \"q\"/\\ \xf0\x9f\x98\x80"
static const char *known_keys[] = { "format", "epoch", "note" };
static const char *known_values[] = { "pt", "7", "line1\nline2 \"q\" \\ tab\t \xc3\xa9" };

static void known_params(fx_params *p)
{
    float f32[6];
    for (int i = 0; i < 6; i++)
        f32[i] = (float)i * 0.5f - 1.0f;
    int32_t i32[4] = { INT32_MIN, -1, 0, INT32_MAX };
    int64_t i64[4] = { -((int64_t)1 << 40), 1, ((int64_t)1 << 62) + 5, -1 };
    uint16_t f16[3] = { 0x3C00, 0xC000, 0x3800 }; /* 1, -2, 0.5 */
    uint16_t bf16[2] = { 0x3F80, 0xC040 };        /* 1, -3 */
    float scalar = 42.0f, odd = 7.25f;
    fx_params_init(p);
    assert_int_equal(fx_params_add(p, "f32", tu_from(FX_F32, 2, TU_SHAPE(2, 3), f32)), FX_OK);
    assert_int_equal(fx_params_add(p, "i32", tu_from(FX_I32, 1, TU_SHAPE(4), i32)), FX_OK);
    assert_int_equal(fx_params_add(p, "i64", tu_from(FX_I64, 2, TU_SHAPE(2, 2), i64)), FX_OK);
    assert_int_equal(fx_params_add(p, "f16", tu_from(FX_F16, 1, TU_SHAPE(3), f16)), FX_OK);
    assert_int_equal(fx_params_add(p, "bf16", tu_from(FX_BF16, 1, TU_SHAPE(2), bf16)), FX_OK);
    assert_int_equal(fx_params_add(p, "scalar", tu_from(FX_F32, 0, NULL, &scalar)), FX_OK);
    assert_int_equal(fx_params_add(p, "empty", tu_from(FX_F32, 2, TU_SHAPE(0, 3), NULL)), FX_OK);
    assert_int_equal(fx_params_add(p, ODD_NAME, tu_from(FX_F32, 1, TU_SHAPE(1), &odd)), FX_OK);
}

/* A few more tensors of every dtype with seeded values. */
static void random_params(fx_params *p, uint64_t seed)
{
    fx_rng *rng = fx_rng_create(seed);
    fx_params_init(p);
    for (int k = 0; k < 10; k++) {
        fx_dtype dt = (fx_dtype)(k % FX_DTYPE_COUNT);
        int64_t shape[3] = { 1 + k % 3, 2 + k % 4, 1 + k % 2 };
        int ndim = 1 + k % 3;
        int64_t n = 1;
        for (int d = 0; d < ndim; d++)
            n *= shape[d];
        size_t es = fx_dtype_size(dt);
        uint8_t *v = malloc((size_t)n * es);
        for (size_t i = 0; i < (size_t)n * es; i++)
            v[i] = (uint8_t)fx_rng_u64(rng);
        if (dt == FX_F32) /* keep f32 values ordinary numbers */
            for (int64_t i = 0; i < n; i++)
                ((float *)v)[i] = (float)fx_rng_normal(rng);
        char name[32];
        snprintf(name, sizeof name, "layer%d.%s", k, fx_dtype_name(dt));
        assert_int_equal(fx_params_add(p, name, tu_from(dt, ndim, shape, v)), FX_OK);
        free(v);
    }
    fx_rng_free(rng);
}

/* ---------------------------------------------------------------- tests */

/* Save + load and encode + decode give back the same names, dtypes, shapes
 * and bytes; the file equals the encoding; the header is padded with
 * spaces to a multiple of 8 and carries the metadata. */
static void test_round_trip(void **state)
{
    (void)state;
    char *dir = tmp_dir(), path[256], err[ERRLEN];
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    for (int round = 0; round < 2; round++) {
        fx_params src, back, dec;
        if (round == 0)
            known_params(&src);
        else
            random_params(&src, 11);
        fx_params_init(&back);
        fx_params_init(&dec);
        assert_int_equal(fx_safetensors_save(path, &src, 3, known_keys, known_values, err, ERRLEN),
                         FX_OK);
        assert_string_equal(err, "");
        assert_int_equal(fx_safetensors_load(path, &back, err, ERRLEN), FX_OK);
        assert_same_params(&src, &back);

        uint8_t *enc;
        size_t len, flen;
        assert_int_equal(fx_safetensors_encode(&src, 3, known_keys, known_values, &enc, &len, err,
                                               ERRLEN),
                         FX_OK);
        uint8_t *file = read_all(path, &flen);
        assert_int_equal(flen, len);
        assert_memory_equal(file, enc, len);
        assert_int_equal(fx_safetensors_decode(enc, len, &dec, err, ERRLEN), FX_OK);
        assert_same_params(&src, &dec);

        uint64_t n = 0;
        for (int i = 7; i >= 0; i--)
            n = n << 8 | enc[i];
        assert_int_equal(n % 8, 0);
        assert_true(8 + n <= len);
        char *json = strndup((const char *)enc + 8, (size_t)n);
        size_t end = strlen(json);
        while (end && json[end - 1] == ' ')
            end--;
        assert_int_equal(json[end - 1], '}');
        assert_true(n - end < 8);
        assert_non_null(strstr(json, "\"__metadata__\":{\"format\":\"pt\",\"epoch\":\"7\""));
        free(json);
        free(file);
        free(enc);
        fx_params_free_tensors(&src);
        fx_params_free_tensors(&back);
        fx_params_free_tensors(&dec);
    }
    /* No tensors and no metadata is a valid file too. */
    fx_params none, back;
    fx_params_init(&none);
    fx_params_init(&back);
    assert_int_equal(fx_safetensors_save(path, &none, 0, NULL, NULL, err, ERRLEN), FX_OK);
    assert_int_equal(fx_safetensors_load(path, &back, err, ERRLEN), FX_OK);
    assert_int_equal(back.count, 0);
    rm_dir(dir);
}

/* A file written here byte by byte: whitespace, members in another order
 * than their data, escapes (\u00e9 and a surrogate pair), an unpadded
 * header, explicit little-endian data. */
static void test_hand_written(void **state)
{
    (void)state;
    const char *json = " { \"__metadata__\" : { \"format\" : \"pt\" } ,\n"
                       "  \"b\" : {\"shape\":[2],\"dtype\":\"I64\",\"data_offsets\":[16,32]},\n"
                       "  \"a\" : {\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\n"
                       "  \"c\\u00e9\\ud83d\\ude00\\n\" : {\"dtype\":\"BF16\",\"shape\":[],"
                       "\"data_offsets\":[32,34]},\n"
                       "  \"d\" : {\"dtype\":\"I32\",\"shape\":[1,0],\"data_offsets\":[34,34]} }";
    uint8_t data[34];
    const uint32_t fbits[4] = { 0x3F800000, 0x40000000, 0xC0400000, 0x3E800000 }; /* 1 2 -3 .25 */
    for (int i = 0; i < 4; i++)
        put_le(data + 4 * i, fbits[i], 4);
    put_le(data + 16, (uint64_t)-1, 8);
    put_le(data + 24, (uint64_t)1 << 40, 8);
    put_le(data + 32, 0xBF80, 2); /* bf16 -1 */
    size_t len;
    uint8_t *file = hand_file(json, data, sizeof data, &len);
    fx_params out;
    fx_params_init(&out);
    char err[ERRLEN];
    assert_int_equal(fx_safetensors_decode(file, len, &out, err, ERRLEN), FX_OK);
    assert_int_equal(out.count, 4);

    fx_tensor *a = fx_params_find(&out, "a");
    assert_non_null(a);
    assert_int_equal(a->dtype, FX_F32);
    assert_int_equal(a->ndim, 2);
    float av[4];
    assert_int_equal(fx_tensor_to_host(a, av, sizeof av), FX_OK);
    assert_true(av[0] == 1.0f && av[1] == 2.0f && av[2] == -3.0f && av[3] == 0.25f);

    fx_tensor *b = fx_params_find(&out, "b");
    assert_non_null(b);
    assert_int_equal(b->dtype, FX_I64);
    int64_t bv[2];
    assert_int_equal(fx_tensor_to_host(b, bv, sizeof bv), FX_OK);
    assert_true(bv[0] == -1 && bv[1] == (int64_t)1 << 40);

    fx_tensor *c = fx_params_find(&out, "c\xc3\xa9\xf0\x9f\x98\x80\n");
    assert_non_null(c);
    assert_int_equal(c->dtype, FX_BF16);
    assert_int_equal(c->ndim, 0);
    uint16_t cv;
    assert_int_equal(fx_tensor_to_host(c, &cv, 2), FX_OK);
    assert_int_equal(cv, 0xBF80);

    fx_tensor *d = fx_params_find(&out, "d");
    assert_non_null(d);
    assert_int_equal(d->dtype, FX_I32);
    assert_int_equal(fx_tensor_numel(d), 0);
    fx_params_free_tensors(&out);
    free(file);
}

/* Every proper prefix of a valid file is refused with FX_ERR_FORMAT and adds
 * nothing. Each prefix is copied into an allocation of exactly its size so
 * that the sanitizers see any read past it. */
static void test_truncations(void **state)
{
    (void)state;
    fx_params src;
    known_params(&src);
    uint8_t *enc;
    size_t len;
    char err[ERRLEN];
    assert_int_equal(
        fx_safetensors_encode(&src, 3, known_keys, known_values, &enc, &len, err, ERRLEN), FX_OK);
    for (size_t n = 0; n < len; n++) {
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, enc, n);
        fx_params out;
        fx_params_init(&out);
        fx_status s = fx_safetensors_decode(n ? cut : NULL, n, &out, err, ERRLEN);
        if (s != FX_ERR_FORMAT)
            fail_msg("prefix of %zu of %zu bytes: status %d (%s)", n, len, s, err);
        assert_int_equal(out.count, 0);
        assert_true(strlen(err) > 0);
        free(cut);
    }
    free(enc);
    fx_params_free_tensors(&src);
}

/* Random single-byte changes (in the length field, the header and the data)
 * either load or give FX_ERR_FORMAT; loads give tensors of the sizes the
 * header says. */
static void test_random_corruption(void **state)
{
    (void)state;
    fx_params src;
    known_params(&src);
    uint8_t *enc;
    size_t len;
    char err[ERRLEN];
    assert_int_equal(
        fx_safetensors_encode(&src, 3, known_keys, known_values, &enc, &len, err, ERRLEN), FX_OK);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | enc[i];
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    int ok = 0, refused = 0;
    uint8_t *copy = malloc(len);
    for (int it = 0; it < 4000; it++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t at = it % 8 == 0 ? (size_t)(x % len) : (size_t)(x % (8 + hlen));
        uint8_t v = (uint8_t)(x >> 32);
        if (it % 3 == 0) /* bytes that matter to the syntax */
            v = (uint8_t) "{}[]\",:\\0123456789-eE. \x80\xff"[(x >> 40) % 24];
        memcpy(copy, enc, len);
        copy[at] = v;
        fx_params out;
        fx_params_init(&out);
        fx_status s = fx_safetensors_decode(copy, len, &out, err, ERRLEN);
        if (s == FX_OK) {
            ok++;
            int64_t total = 0;
            for (int i = 0; i < out.count; i++)
                total += (int64_t)nbytes_of(out.items[i].tensor);
            assert_true((uint64_t)total <= len);
        } else {
            if (s != FX_ERR_FORMAT)
                fail_msg("byte %zu = 0x%02x: status %d (%s)", at, v, s, err);
            assert_int_equal(out.count, 0);
            refused++;
        }
        fx_params_free_tensors(&out);
    }
    assert_true(ok > 0 && refused > 0);
    free(copy);
    free(enc);
    fx_params_free_tensors(&src);
}

typedef struct {
    const char *json;
    size_t dlen;
    const char *want; /* a substring of the message */
} corrupt_case;

/* Specific corrupt headers: each is FX_ERR_FORMAT, adds nothing, and the
 * message says what (naming the tensor where there is one). */
static void test_corrupt_cases(void **state)
{
    (void)state;
    static const corrupt_case cases[] = {
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, "tensor 'w'" },
        { "{\"fc1.weight\":{\"dtype\":\"F32\",\"shape\":[5,20],\"data_offsets\":[0,100]}}", 100,
          "tensor 'fc1.weight': data_offsets [0,100] do not match shape [5,20] F32 (400 bytes)" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
          12, "'a' [0,8] and 'b' [4,12] overlap" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
          12, "before tensor 'b'" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "cover" },
        { "{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "tensor 'w'" },
        { "{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
          "\"data_offsets\":[0,4]}}", 4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
          "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
          8, "tensor 'w' appears twice" },
        { "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
          "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
          4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4e0]}}", 4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}",
          4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}", 4, "tensor 'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1] \"data_offsets\":[0,4]}}", 4, "tensor 'w'" },
        { "{\"w\":[0,4]}", 4, "tensor 'w'" },
        { "[1,2]", 0, "not a JSON object" },
        { "\"w\"", 0, "not a JSON object" },
        { "", 0, "not a JSON object" },
        { "        ", 0, "not a JSON object" },
        { "{", 0, "end of the header" },
        { "{} x", 0, "after the JSON object" },
        { "{},{}", 0, "after the JSON object" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},}", 4, "expected" },
        { "{\"w\\x\":{}}", 0, "unknown escape" },
        { "{\"\\ud800\":{}}", 0, "surrogate" },
        { "{\"\\udc00x\":{}}", 0, "surrogate" },
        { "{\"\\u12g4\":{}}", 0, "hex digit" },
        { "{\"\\u0000\":{}}", 0, "\\u0000" },
        { "{\"\xff\":{}}", 0, "UTF-8" },
        { "{\"\xc0\xaf\":{}}", 0, "UTF-8" }, /* overlong '/' */
        { "{\"\xed\xa0\x80\":{}}", 0, "UTF-8" }, /* encoded surrogate */
        { "{\"a\tb\":{}}", 0, "control character" },
        { "{\"w", 0, "unterminated" },
        { "{\"__metadata__\":{\"a\":1}}", 0, "strings" },
        { "{\"__metadata__\":{\"a\":\"b\"},\"__metadata__\":{}}", 0, "twice" },
        { "{\"__metadata__\":[]}", 0, "__metadata__" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} ", 8, "cover" },
    };
    char err[ERRLEN];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t data[128] = { 0 };
        size_t len;
        uint8_t *file = hand_file(cases[i].json, data, cases[i].dlen, &len);
        fx_params out;
        fx_params_init(&out);
        fx_status s = fx_safetensors_decode(file, len, &out, err, ERRLEN);
        if (s != FX_ERR_FORMAT || !strstr(err, cases[i].want))
            fail_msg("case %zu (%s): status %d, message \"%s\", wanted \"%s\"", i, cases[i].json,
                     s, err, cases[i].want);
        assert_int_equal(out.count, 0);
        free(file);
    }

    /* Header lengths: over the cap, and over the file. */
    uint8_t raw[16] = { 0 };
    fx_params out;
    fx_params_init(&out);
    put_le(raw, (uint64_t)1 << 40, 8);
    assert_int_equal(fx_safetensors_decode(raw, sizeof raw, &out, err, ERRLEN), FX_ERR_FORMAT);
    assert_non_null(strstr(err, "limit"));
    put_le(raw, UINT64_MAX, 8);
    assert_int_equal(fx_safetensors_decode(raw, sizeof raw, &out, err, ERRLEN), FX_ERR_FORMAT);
    put_le(raw, 9, 8);
    assert_int_equal(fx_safetensors_decode(raw, sizeof raw, &out, err, ERRLEN), FX_ERR_FORMAT);
    assert_non_null(strstr(err, "truncated"));
    assert_int_equal(out.count, 0);
}

/* load_into copies by name when every check passes, and changes nothing
 * when any destination does not fit (shape, dtype, missing name). */
static void test_load_into(void **state)
{
    (void)state;
    char *dir = tmp_dir(), path[256], err[ERRLEN];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    float w[6] = { 1, 2, 3, 4, 5, 6 }, b[3] = { -1, -2, -3 }, zeros[6] = { 0 };
    int64_t step = 123;
    fx_params file;
    fx_params_init(&file);
    fx_params_add(&file, "w", tu_from(FX_F32, 2, TU_SHAPE(2, 3), w));
    fx_params_add(&file, "b", tu_from(FX_F32, 1, TU_SHAPE(3), b));
    fx_params_add(&file, "step", tu_from(FX_I64, 1, TU_SHAPE(1), &step));
    assert_int_equal(fx_safetensors_save(path, &file, 0, NULL, NULL, err, ERRLEN), FX_OK);

    /* A model with w and b: both copied, the file's "step" ignored. */
    fx_params model;
    fx_params_init(&model);
    fx_params_add(&model, "b", tu_from(FX_F32, 1, TU_SHAPE(3), zeros));
    fx_params_add(&model, "w", tu_from(FX_F32, 2, TU_SHAPE(2, 3), zeros));
    assert_int_equal(fx_safetensors_load_into(path, &model, false, err, ERRLEN), FX_OK);
    float *v = tu_values(fx_params_find(&model, "w"));
    tu_assert_close(v, w, 6, 0);
    free(v);
    v = tu_values(fx_params_find(&model, "b"));
    tu_assert_close(v, b, 3, 0);
    free(v);
    fx_params_free_tensors(&model);

    /* w fits but b does not: nothing may change, w included. */
    struct {
        fx_tensor *b;
        fx_status want;
        const char *msg;
    } bad[] = {
        { tu_from(FX_F32, 1, TU_SHAPE(4), zeros), FX_ERR_SHAPE, "tensor 'b': the file has shape [3]" },
        { tu_from(FX_F32, 2, TU_SHAPE(3, 1), zeros), FX_ERR_SHAPE, "tensor 'b'" },
        { tu_from(FX_I32, 1, TU_SHAPE(3), zeros), FX_ERR_DTYPE, "tensor 'b'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fx_params_init(&model);
        fx_params_add(&model, "w", tu_from(FX_F32, 2, TU_SHAPE(2, 3), zeros));
        fx_params_add(&model, "b", bad[i].b);
        assert_int_equal(fx_safetensors_load_into(path, &model, false, err, ERRLEN), bad[i].want);
        assert_non_null(strstr(err, bad[i].msg));
        v = tu_values(fx_params_find(&model, "w"));
        tu_assert_close(v, zeros, 6, 0);
        free(v);
        fx_params_free_tensors(&model);
    }

    /* A name the file lacks: refused unless allow_missing, then skipped. */
    fx_params_init(&model);
    fx_params_add(&model, "w", tu_from(FX_F32, 2, TU_SHAPE(2, 3), zeros));
    fx_params_add(&model, "extra", tu_from(FX_F32, 1, TU_SHAPE(2), zeros));
    assert_int_equal(fx_safetensors_load_into(path, &model, false, err, ERRLEN), FX_ERR_ARG);
    assert_non_null(strstr(err, "'extra'"));
    v = tu_values(fx_params_find(&model, "w"));
    tu_assert_close(v, zeros, 6, 0);
    free(v);
    assert_int_equal(fx_safetensors_load_into(path, &model, true, err, ERRLEN), FX_OK);
    v = tu_values(fx_params_find(&model, "w"));
    tu_assert_close(v, w, 6, 0);
    free(v);
    v = tu_values(fx_params_find(&model, "extra"));
    tu_assert_close(v, zeros, 2, 0);
    free(v);
    fx_params_free_tensors(&model);

    /* A corrupt file: FX_ERR_FORMAT naming the path; a missing one: I/O. */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fputc(0xFF, f); /* header length now far over the file */
    fclose(f);
    fx_params_init(&model);
    fx_params_add(&model, "w", tu_from(FX_F32, 2, TU_SHAPE(2, 3), zeros));
    assert_int_equal(fx_safetensors_load_into(path, &model, false, err, ERRLEN), FX_ERR_FORMAT);
    assert_non_null(strstr(err, path));
    fx_params out;
    fx_params_init(&out);
    assert_int_equal(fx_safetensors_load(path, &out, err, ERRLEN), FX_ERR_FORMAT);
    assert_non_null(strstr(err, path));
    assert_int_equal(out.count, 0);
    unlink(path);
    assert_int_equal(fx_safetensors_load_into(path, &model, false, err, ERRLEN), FX_ERR_IO);
    assert_non_null(strstr(err, strerror(ENOENT)));
    assert_int_equal(fx_safetensors_load(path, &out, err, ERRLEN), FX_ERR_IO);
    assert_non_null(strstr(err, path));
    assert_int_equal(fx_safetensors_load(dir, &out, err, ERRLEN), FX_ERR_IO);
    fx_params_free_tensors(&model);
    fx_params_free_tensors(&file);
    rm_dir(dir);
}

/* Saving leaves only the final file; a failed save returns FX_ERR_IO with
 * the system's reason, leaves the previous file as it was and no temporary
 * file behind. */
static void test_atomic_save(void **state)
{
    (void)state;
    char *dir = tmp_dir(), path[256], sub[300], tmp[320], err[ERRLEN];
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    fx_params a, b;
    known_params(&a);
    random_params(&b, 3);
    assert_int_equal(fx_safetensors_save(path, &a, 0, NULL, NULL, err, ERRLEN), FX_OK);
    assert_int_equal(count_tmp(dir), 0);
    size_t alen;
    uint8_t *abytes = read_all(path, &alen);
    /* Overwriting works and leaves no temporary file either. */
    assert_int_equal(fx_safetensors_save(path, &b, 0, NULL, NULL, err, ERRLEN), FX_OK);
    assert_int_equal(count_tmp(dir), 0);
    fx_params back;
    fx_params_init(&back);
    assert_int_equal(fx_safetensors_load(path, &back, err, ERRLEN), FX_OK);
    assert_same_params(&b, &back);
    fx_params_free_tensors(&back);
    assert_int_equal(fx_safetensors_save(path, &a, 0, NULL, NULL, err, ERRLEN), FX_OK);

    /* A directory that does not exist. */
    snprintf(sub, sizeof sub, "%s/nodir/ck.safetensors", dir);
    assert_int_equal(fx_safetensors_save(sub, &b, 0, NULL, NULL, err, ERRLEN), FX_ERR_IO);
    assert_non_null(strstr(err, strerror(ENOENT)));
    assert_non_null(strstr(err, "nodir"));

    /* The target is a directory: the rename fails, the temporary goes. */
    snprintf(sub, sizeof sub, "%s/isdir", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(fx_safetensors_save(sub, &b, 0, NULL, NULL, err, ERRLEN), FX_ERR_IO);
    assert_non_null(strstr(err, "rename"));
    assert_int_equal(count_tmp(dir), 0);
    assert_int_equal(rmdir(sub), 0);

    /* The temporary cannot be created: the previous file stays. */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_equal(mkdir(tmp, 0700), 0);
    assert_int_equal(fx_safetensors_save(path, &b, 0, NULL, NULL, err, ERRLEN), FX_ERR_IO);
    assert_non_null(strstr(err, tmp));
    assert_int_equal(rmdir(tmp), 0);
    size_t len;
    uint8_t *now = read_all(path, &len);
    assert_int_equal(len, alen);
    assert_memory_equal(now, abytes, len);
    free(now);

    /* A write fails half way (file size limit): the previous file stays and
     * the partial temporary is removed. */
    fx_params big;
    fx_params_init(&big);
    float *zero64k = calloc(65536, sizeof(float));
    fx_params_add(&big, "big", tu_from(FX_F32, 1, TU_SHAPE(65536), zero64k));
    free(zero64k);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4096;
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    fx_status s = fx_safetensors_save(path, &big, 0, NULL, NULL, err, ERRLEN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, oldsig);
    assert_int_equal(s, FX_ERR_IO);
    assert_non_null(strstr(err, strerror(EFBIG)));
    assert_int_equal(count_tmp(dir), 0);
    now = read_all(path, &len);
    assert_int_equal(len, alen);
    assert_memory_equal(now, abytes, len);
    free(now);

    /* A directory without write permission (not meaningful as root). */
    if (geteuid() != 0) {
        assert_int_equal(chmod(dir, 0500), 0);
        assert_int_equal(fx_safetensors_save(path, &b, 0, NULL, NULL, err, ERRLEN), FX_ERR_IO);
        assert_non_null(strstr(err, strerror(EACCES)));
        assert_int_equal(chmod(dir, 0700), 0);
        now = read_all(path, &len);
        assert_memory_equal(now, abytes, alen);
        free(now);
    }
    assert_int_equal(count_tmp(dir), 0);
    free(abytes);
    fx_params_free_tensors(&big);
    fx_params_free_tensors(&a);
    fx_params_free_tensors(&b);
    rm_dir(dir);
}

/* Bad arguments are FX_ERR_ARG with a message and write nothing. */
static void test_bad_args(void **state)
{
    (void)state;
    char *dir = tmp_dir(), path[256], err[ERRLEN];
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    float one = 1;
    fx_tensor *t = tu_from(FX_F32, 1, TU_SHAPE(1), &one);
    fx_named_tensor dup_items[2] = { { "x", t }, { "x", t } };
    fx_params dup = { dup_items, 2, 2 };
    fx_named_tensor null_items[1] = { { "x", NULL } };
    fx_params nul = { null_items, 1, 1 };
    fx_named_tensor meta_items[1] = { { "__metadata__", t } };
    fx_params meta = { meta_items, 1, 1 };
    fx_named_tensor utf_items[1] = { { "bad\xff", t } };
    fx_params utf = { utf_items, 1, 1 };
    const fx_params *lists[] = { &dup, &nul, &meta, &utf };
    for (int i = 0; i < 4; i++) {
        assert_int_equal(fx_safetensors_save(path, lists[i], 0, NULL, NULL, err, ERRLEN),
                         FX_ERR_ARG);
        assert_true(strlen(err) > 0);
    }
    fx_named_tensor ok_items[1] = { { "x", t } };
    fx_params ok = { ok_items, 1, 1 };
    const char *k[] = { "k" }, *nv[] = { NULL };
    assert_int_equal(fx_safetensors_save(path, &ok, 1, k, nv, err, ERRLEN), FX_ERR_ARG);
    assert_int_equal(fx_safetensors_save(path, &ok, -1, NULL, NULL, err, ERRLEN), FX_ERR_ARG);
    assert_int_equal(fx_safetensors_save(path, NULL, 0, NULL, NULL, err, ERRLEN), FX_ERR_ARG);
    assert_int_equal(fx_safetensors_save(NULL, &ok, 0, NULL, NULL, err, ERRLEN), FX_ERR_ARG);
    assert_int_equal(access(path, F_OK), -1);
    uint8_t *enc;
    size_t len;
    assert_int_equal(fx_safetensors_encode(&dup, 0, NULL, NULL, &enc, &len, err, ERRLEN),
                     FX_ERR_ARG);
    assert_null(enc);

    /* Decoding into a list that already has the name adds nothing. */
    assert_int_equal(fx_safetensors_encode(&ok, 0, NULL, NULL, &enc, &len, NULL, 0), FX_OK);
    fx_params out;
    fx_params_init(&out);
    fx_tensor *mine = tu_from(FX_F32, 1, TU_SHAPE(1), &one);
    fx_params_add(&out, "x", mine);
    assert_int_equal(fx_safetensors_decode(enc, len, &out, err, ERRLEN), FX_ERR_ARG);
    assert_non_null(strstr(err, "'x'"));
    assert_int_equal(out.count, 1);
    assert_ptr_equal(out.items[0].tensor, mine);
    assert_int_equal(fx_safetensors_decode(enc, len, NULL, err, ERRLEN), FX_ERR_ARG);
    fx_params_free_tensors(&out);

    /* Decoding into a list with other names appends and keeps them. */
    fx_params_init(&out);
    mine = tu_from(FX_F32, 1, TU_SHAPE(1), &one);
    fx_params_add(&out, "y", mine);
    assert_int_equal(fx_safetensors_decode(enc, len, &out, err, ERRLEN), FX_OK);
    assert_int_equal(out.count, 2);
    assert_ptr_equal(fx_params_find(&out, "y"), mine);
    assert_non_null(fx_params_find(&out, "x"));
    /* The list stays usable: it grows and refuses duplicates as before. */
    assert_int_equal(fx_params_add(&out, "z", tu_from(FX_F32, 1, TU_SHAPE(1), &one)), FX_OK);
    assert_int_equal(fx_params_add(&out, "x", t), FX_ERR_ARG);
    assert_int_equal(out.count, 3);
    free(enc);
    fx_params_free_tensors(&out);
    fx_tensor_free(t);
    rm_dir(dir);
}

/* -------------------------------------------------- interop tool modes */

static int tool_write(const char *path)
{
    fx_params p;
    char err[ERRLEN];
    known_params(&p);
    fx_status s = fx_safetensors_save(path, &p, 3, known_keys, known_values, err, ERRLEN);
    fx_params_free_tensors(&p);
    if (s != FX_OK) {
        fprintf(stderr, "save failed: %s: %s\n", fx_status_name(s), err);
        return 1;
    }
    return 0;
}

static int tool_read(const char *path)
{
    fx_params p;
    char err[ERRLEN], sh[256];
    fx_params_init(&p);
    fx_status s = fx_safetensors_load(path, &p, err, ERRLEN);
    if (s != FX_OK) {
        fprintf(stderr, "load failed: %s: %s\n", fx_status_name(s), err);
        return 1;
    }
    for (int i = 0; i < p.count; i++) {
        const fx_tensor *t = p.items[i].tensor;
        int64_t n = fx_tensor_numel(t);
        size_t nb = nbytes_of(t);
        uint8_t *v = malloc(nb + 1);
        fx_tensor_to_host(t, v, nb);
        printf("%s\t%s\t%s\t", p.items[i].name, fx_dtype_name(t->dtype),
               fx_shape_str(t, sh, sizeof sh));
        for (int64_t j = 0; j < n; j++) {
            if (j)
                putchar(' ');
            switch (t->dtype) {
            case FX_F32: printf("%.9g", ((float *)v)[j]); break;
            case FX_I32: printf("%d", ((int32_t *)v)[j]); break;
            case FX_I64: printf("%lld", (long long)((int64_t *)v)[j]); break;
            default: printf("%u", ((uint16_t *)v)[j]); break;
            }
        }
        putchar('\n');
        free(v);
    }
    fx_params_free_tensors(&p);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write") == 0)
        return tool_write(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--read") == 0)
        return tool_read(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),     cmocka_unit_test(test_hand_written),
        cmocka_unit_test(test_truncations),    cmocka_unit_test(test_random_corruption),
        cmocka_unit_test(test_corrupt_cases),  cmocka_unit_test(test_load_into),
        cmocka_unit_test(test_atomic_save),    cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
