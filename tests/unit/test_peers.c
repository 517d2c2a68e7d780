/*
 * test_peers.c - server/peers: the peer list (--peers, --peers-file), the
 * peer secret's checks, this daemon's own entry skipped, the KV's key and
 * size checks and its wait; and training/ranks.h's columns codec (the
 * datasets as they travel to a member), round trip and bad bytes. The
 * service over the network is tests/integration/test_peers.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/status.h"
#include "peers/peers.h"
#include "training/ranks.h"

static char dir[] = "/tmp/fxpeers-XXXXXX";

static const char *file(const char *name, const char *text)
{
    static char path[4][256];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static int open_with(const char *peers, const char *pfile, const char *tok, const char *node,
                     fxpr_peers **out, char *err)
{
    fxpr_opts o = { .peers = peers, .peers_file = pfile, .token_file = tok, .node_name = node };
    return fxpr_open(&o, out, err, FXS_ERRLEN);
}

static void test_list(void **state)
{
    (void)state;
    char err[FXS_ERRLEN];
    fxpr_peers *p = NULL;
    const char *tok = file("tok", "0123456789abcdef0123456789abcdef\n");
    const char *pf = file("peers", "# the set\nfluxion-0.fluxion:7070\n\n"
                                   "C=fluxion-2.fluxion:7070   # a comment\n");
    assert_int_equal(open_with("B=127.0.0.1:5001,10.0.0.3:7070", pf, tok,
                               "fluxion-0.fluxion:7070", &p, err), 0);
    assert_int_equal(fxpr_count(p), 4);
    assert_string_equal(fxpr_name(p, 0), "B");
    assert_string_equal(fxpr_addr(p, 0), "127.0.0.1:5001");
    assert_string_equal(fxpr_name(p, 1), "10.0.0.3:7070");
    assert_string_equal(fxpr_name(p, 3), "C");
    assert_string_equal(fxpr_addr(p, 3), "fluxion-2.fluxion:7070");
    assert_string_equal(fxpr_secret(p), "0123456789abcdef0123456789abcdef");
    fxpr_set_listen(p, "0.0.0.0:7070", 7070);
    /* --node-name wins; its own entry is skipped */
    assert_string_equal(fxpr_node(p), "fluxion-0.fluxion:7070");
    assert_int_equal(fxpr_find(p, "fluxion-0.fluxion:7070"), -1);
    assert_int_equal(fxpr_find(p, "B"), 0);
    assert_int_equal(fxpr_find(p, "Z"), -1);
    fxpr_free(p);

    /* no --node-name: HOST:PORT of --listen with the bound port */
    assert_int_equal(open_with("127.0.0.1:5001", NULL, tok, NULL, &p, err), 0);
    fxpr_set_listen(p, "127.0.0.1:0", 5001);
    assert_string_equal(fxpr_node(p), "127.0.0.1:5001");
    assert_int_equal(fxpr_find(p, "127.0.0.1:5001"), -1);
    fxpr_free(p);
}

static void test_refusals(void **state)
{
    (void)state;
    char err[FXS_ERRLEN];
    fxpr_peers *p = NULL;
    const char *tok = file("tok2", "0123456789abcdef0123456789abcdef");
    static const struct {
        const char *peers, *want;
    } bad[] = {
        { "B=nohost", "not HOST:PORT" },   { "B=h:0", "port 0" },
        { "B=h:99999", "1..65535" },        { "=h:1", "name must be" },
        { "B/x=h:1", "only letters" },      { "B=h:1,B=h:2", "named twice" },
        { "B=h h:1", "bad host" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(open_with(bad[i].peers, NULL, tok, NULL, &p, err), FXS_INVALID_ARGUMENT);
        assert_null(p);
        if (!strstr(err, bad[i].want))
            fail_msg("%s: %s (want %s)", bad[i].peers, err, bad[i].want);
    }
    /* the secret */
    assert_int_equal(open_with("B=h:1", NULL, NULL, NULL, &p, err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "--peer-token-file"));
    assert_int_equal(open_with(NULL, NULL, file("e", " \n"), NULL, &p, err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(open_with(NULL, NULL, file("s", "short"), NULL, &p, err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "32..256"));
    assert_int_equal(open_with(NULL, NULL, file("sp", "0123456789abcdef 0123456789abcdef"), NULL,
                               &p, err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "visible ASCII"));
    assert_int_equal(open_with(NULL, NULL, "/nonexistent/tok", NULL, &p, err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(open_with(NULL, NULL, NULL, "bad name", &p, err), FXS_INVALID_ARGUMENT);
    /* a peers file line is named in the message */
    assert_int_equal(open_with(NULL, file("pf", "B=h:1\nbad\n"), tok, NULL, &p, err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, ":2:"));
}

static void test_kv(void **state)
{
    (void)state;
    char err[FXS_ERRLEN];
    fxpr_peers *p = NULL;
    assert_int_equal(open_with(NULL, NULL, NULL, NULL, &p, err), 0);
    assert_int_equal(fxpr_kv_set(p, "w/1/2/a", "xyz", 3, err, sizeof err), 0);
    void *v = NULL;
    size_t n = 0;
    assert_int_equal(fxpr_kv_get(p, "w/1/2/a", 100, &v, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "xyz", 3);
    free(v);
    assert_int_equal(fxpr_kv_get(p, "w/1/2/none", 50, &v, &n, err, sizeof err),
                     FXS_DEADLINE_EXCEEDED);
    assert_int_equal(fxpr_kv_set(p, "x/1", "", 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxpr_kv_set(p, "", "", 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxpr_kv_set(p, "w/\x01", "", 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxpr_kv_set(p, "w/big", "", FXPR_VALUE_MAX + 1, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxpr_kv_get(p, "w/1", FXPR_KV_WAIT_MAX_MS + 1, &v, &n, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    /* a world's keys go with it */
    fxpr_kv_drop(p, "w/1/");
    assert_int_equal(fxpr_kv_get(p, "w/1/2/a", 10, &v, &n, err, sizeof err),
                     FXS_DEADLINE_EXCEEDED);
    fxpr_free(p);
}

static void test_columns(void **state)
{
    (void)state;
    char err[FXS_ERRLEN];
    float x[3][2] = { { 1, 2 }, { 3, 4 }, { 5, 6 } };
    int64_t y[3] = { 7, 8, 9 };
    fxds_column cols[2] = {
        { .name = "x", .dtype = FX_F32, .sample_ndim = 1, .sample_shape = { 2 }, .data = x },
        { .name = "y", .dtype = FX_I64, .sample_ndim = 0, .data = y },
    };
    fxds_columns c = { .num_samples = 3, .n = 2, .cols = cols };
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(fxj_columns_encode(&c, &buf, &len, err, sizeof err), 0);
    fxj_columns *d = NULL;
    assert_int_equal(fxj_columns_decode(buf, len, &d, err, sizeof err), 0);
    const fxds_columns *g = fxj_columns_get(d);
    assert_int_equal(g->num_samples, 3);
    assert_int_equal(g->n, 2);
    int ix = fxds_columns_find(g, "x"), iy = fxds_columns_find(g, "y");
    assert_true(ix >= 0 && iy >= 0);
    assert_int_equal(g->cols[ix].dtype, FX_F32);
    assert_int_equal(g->cols[ix].sample_ndim, 1);
    assert_int_equal(g->cols[ix].sample_shape[0], 2);
    assert_memory_equal(g->cols[ix].data, x, sizeof x);
    assert_int_equal(g->cols[iy].sample_ndim, 0);
    assert_memory_equal(g->cols[iy].data, y, sizeof y);
    fxj_columns_free(d);
    /* truncated bytes: refused, nothing leaks */
    assert_int_equal(fxj_columns_decode(buf, len / 2, &d, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_null(d);
    free(buf);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_kv),
        cmocka_unit_test(test_columns),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
