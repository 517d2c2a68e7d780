/*
 * test_cli_config.c - the client's connection settings (clients/common/
 * cliconfig.c): the config file of contexts (read, bad shapes named by
 * key, written 0600 and read back), the precedence flags > env > context >
 * default, credentials taken as units, paths relative to the file, token
 * files (trimmed, permissions reported, bad content refused without
 * echoing it), durations; and rpcc's channel options (TLS files checked,
 * the token's characters).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "cliconfig.h"
#include "rpcc.h"
#include "status.h"
#include "testutil.h"

static char dir[] = "/tmp/fx_cli_config_XXXXXX";

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/fx_cli_config_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmtree(dir);
    return 0;
}

static const char *write_file(const char *name, const char *text, mode_t mode)
{
    const char *path = tu_pathf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static const char GOOD[] =
    "{\"current_context\": \"prod\",\n"
    " \"contexts\": {\"prod\": {\"server\": \"h:7443\", \"token_file\": \"prod.token\",\n"
    "                          \"tls_ca\": \"/etc/ca.pem\", \"tls_cert\": \"c.pem\", \"tls_key\": "
    "\"k.pem\"},\n"
    "              \"dev\": {\"server\": \"127.0.0.1:7070\", \"token\": \"fxn_dev\"}}}\n";

static void test_load(void **state)
{
    (void)state;
    char err[512];
    fxc_config cfg;
    const char *path = write_file("config.json", GOOD, 0600);
    assert_int_equal(fxc_config_load(path, &cfg, err, sizeof err), 0);
    assert_true(cfg.exists);
    assert_false(cfg.too_open);
    assert_string_equal(cfg.current, "prod");
    assert_int_equal(cfg.n, 2);
    fxc_context *p = fxc_config_find(&cfg, "prod");
    assert_non_null(p);
    assert_string_equal(p->server, "h:7443");
    assert_string_equal(p->token_file, "prod.token");
    assert_null(p->token);
    fxc_context *d = fxc_config_find(&cfg, "dev");
    assert_string_equal(d->token, "fxn_dev");
    assert_null(fxc_config_find(&cfg, "nope"));
    fxc_config_free(&cfg);

    /* readable by others: reported */
    path = write_file("open.json", GOOD, 0644);
    assert_int_equal(fxc_config_load(path, &cfg, err, sizeof err), 0);
    assert_true(cfg.too_open);
    fxc_config_free(&cfg);

    /* missing: an empty config */
    assert_int_equal(fxc_config_load(tu_pathf("%s/none.json", dir), &cfg, err, sizeof err), 0);
    assert_false(cfg.exists);
    assert_int_equal(cfg.n, 0);
    assert_null(cfg.current);
    fxc_config_free(&cfg);
}

static void test_load_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{", "config.json:"},
        {"[]", "expected a JSON object"},
        {"{\"contexts\": []}", "contexts: expected an object"},
        {"{\"contexts\": {\"a\": {\"server\": 7}}}", "contexts.a.server: expected a string"},
        {"{\"contexts\": {\"a\": {\"tokenfile\": \"x\"}}}", "unknown key \"tokenfile\""},
        {"{\"contexts\": {\"a\": {\"token\": \"x\", \"token_file\": \"y\"}}}",
         "both token and token_file"},
        {"{\"contexts\": {\"a b\": {}}}", "context name \"a b\""},
        {"{\"current_context\": 3}", "current_context: expected a string"},
        {"{\"colour\": 3}", "unknown key \"colour\""},
        {"{\"contexts\": {\"a\": {}, \"a\": {}}}", "duplicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        fxc_config cfg;
        const char *path = write_file("config.json", cases[i].text, 0600);
        assert_int_equal(fxc_config_load(path, &cfg, err, sizeof err), FXS_INVALID_ARGUMENT);
        if (!strstr(err, cases[i].want))
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].text, err, cases[i].want);
        assert_null(cfg.contexts); /* freed on failure */
    }
}

static void test_save_roundtrip(void **state)
{
    (void)state;
    char err[512];
    fxc_config cfg;
    const char *path = tu_pathf("%s/sub/dir/config.json", dir);
    assert_int_equal(fxc_config_load(path, &cfg, err, sizeof err), 0);
    assert_int_equal(fxc_config_use(&cfg, "prod", err, sizeof err), FXS_NOT_FOUND);
    assert_non_null(strstr(err, "context 'prod' not found"));
    fxc_context f = {.name = "prod", .server = "h:1", .token = "fxn_a"};
    assert_int_equal(fxc_config_set(&cfg, &f, err, sizeof err), 0);
    /* update: a token file replaces the token; "" removes the server */
    f = (fxc_context){.name = "prod", .server = "", .token_file = "t", .tls_ca = "ca.pem"};
    assert_int_equal(fxc_config_set(&cfg, &f, err, sizeof err), 0);
    f = (fxc_context){.name = "dev", .server = "127.0.0.1:1"};
    assert_int_equal(fxc_config_set(&cfg, &f, err, sizeof err), 0);
    assert_int_equal(fxc_config_use(&cfg, "dev", err, sizeof err), 0);
    f = (fxc_context){.name = "bad name!"};
    assert_int_equal(fxc_config_set(&cfg, &f, err, sizeof err), FXS_INVALID_ARGUMENT);
    f = (fxc_context){.name = "x", .token = "a", .token_file = "b"};
    assert_int_equal(fxc_config_set(&cfg, &f, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxc_config_save(&cfg, err, sizeof err), 0);
    fxc_config_free(&cfg);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(tu_pathf("%s/sub/dir", dir), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    assert_int_equal(fxc_config_load(path, &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.current, "dev");
    fxc_context *p = fxc_config_find(&cfg, "prod");
    assert_non_null(p);
    assert_null(p->server);
    assert_null(p->token);
    assert_string_equal(p->token_file, "t");
    assert_string_equal(p->tls_ca, "ca.pem");
    assert_string_equal(fxc_config_find(&cfg, "dev")->server, "127.0.0.1:1");
    fxc_config_free(&cfg);
}

static void test_precedence(void **state)
{
    (void)state;
    char err[512];
    fxc_config cfg;
    const char *path = write_file("config.json", GOOD, 0600);
    assert_int_equal(fxc_config_load(path, &cfg, err, sizeof err), 0);
    fxc_conn c;

    /* the current context; its relative paths are relative to the file */
    assert_int_equal(fxc_conn_resolve(NULL, NULL, &cfg, "d:1", &c, err, sizeof err), 0);
    assert_string_equal(c.context, "prod");
    assert_string_equal(c.server, "h:7443");
    assert_string_equal(c.token_file, tu_pathf("%s/prod.token", dir));
    assert_null(c.token);
    assert_string_equal(c.token_source, "context 'prod'");
    assert_string_equal(c.tls_ca, "/etc/ca.pem");
    assert_string_equal(c.tls_cert, tu_pathf("%s/c.pem", dir));
    assert_string_equal(c.tls_key, tu_pathf("%s/k.pem", dir));
    fxc_conn_free(&c);

    /* env beats the context, field by field; the token as a unit */
    fxc_conn_src env = {.server = "e:2", .token = "fxn_env"};
    assert_int_equal(fxc_conn_resolve(NULL, &env, &cfg, "d:1", &c, err, sizeof err), 0);
    assert_string_equal(c.server, "e:2");
    assert_string_equal(c.token, "fxn_env");
    assert_null(c.token_file);
    assert_string_equal(c.token_source, "FLUXION_TOKEN");
    assert_string_equal(c.tls_ca, "/etc/ca.pem");
    fxc_conn_free(&c);

    /* flags beat env; FLUXION_CONTEXT picks another context, --context beats it */
    fxc_conn_src flags = {.token_file = "/x/tok", .context = "dev"};
    env = (fxc_conn_src){.token = "fxn_env", .context = "nope"};
    assert_int_equal(fxc_conn_resolve(&flags, &env, &cfg, "d:1", &c, err, sizeof err), 0);
    assert_string_equal(c.context, "dev");
    assert_string_equal(c.server, "127.0.0.1:7070");
    assert_string_equal(c.token_file, "/x/tok");
    assert_null(c.token);
    assert_string_equal(c.token_source, "--token-file");
    assert_null(c.tls_ca);
    assert_null(c.tls_cert);
    fxc_conn_free(&c);

    /* an unknown context named anywhere is an error naming it and its source */
    assert_int_equal(fxc_conn_resolve(NULL, &env, &cfg, "d:1", &c, err, sizeof err), FXS_NOT_FOUND);
    assert_non_null(strstr(err, "context 'nope' (from FLUXION_CONTEXT) not found"));
    flags = (fxc_conn_src){.context = "zz"};
    assert_int_equal(fxc_conn_resolve(&flags, NULL, &cfg, "d:1", &c, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(err, "--context"));

    /* half a certificate pair, or a token and a token file, from one source */
    flags = (fxc_conn_src){.tls_cert = "c"};
    assert_int_equal(fxc_conn_resolve(&flags, NULL, &cfg, "d:1", &c, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "needs its key"));
    flags = (fxc_conn_src){.token = "a", .token_file = "b"};
    assert_int_equal(fxc_conn_resolve(&flags, NULL, &cfg, "d:1", &c, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    /* a flag pair replaces the context's pair */
    flags = (fxc_conn_src){.tls_cert = "fc", .tls_key = "fk"};
    assert_int_equal(fxc_conn_resolve(&flags, NULL, &cfg, "d:1", &c, err, sizeof err), 0);
    assert_string_equal(c.tls_cert, "fc");
    assert_string_equal(c.tls_key, "fk");
    fxc_conn_free(&c);
    fxc_config_free(&cfg);

    /* no file, nothing set: the default server, no token, no TLS */
    assert_int_equal(fxc_conn_resolve(NULL, NULL, NULL, "d:1", &c, err, sizeof err), 0);
    assert_string_equal(c.server, "d:1");
    assert_null(c.token);
    assert_null(c.token_file);
    assert_null(c.tls_ca);
    assert_null(c.context);
    assert_null(c.token_source);
    fxc_conn_free(&c);
}

static void test_default_path(void **state)
{
    (void)state;
    char *p = fxc_config_default_path("/a/b.json", "/home/u");
    assert_string_equal(p, "/a/b.json");
    free(p);
    p = fxc_config_default_path("", "/home/u");
    assert_string_equal(p, "/home/u/.config/fluxion/config.json");
    free(p);
    assert_null(fxc_config_default_path(NULL, NULL));
}

static void test_token_file(void **state)
{
    (void)state;
    char err[512];
    char *tok;
    bool open_;
    const char *path = write_file("t1", "  fxn_abc\n\n", 0600);
    assert_int_equal(fxc_read_token_file(path, &tok, &open_, err, sizeof err), 0);
    assert_string_equal(tok, "fxn_abc");
    assert_false(open_);
    fxc_secret_free(tok);

    path = write_file("t2", "fxn_abc", 0644);
    assert_int_equal(fxc_read_token_file(path, &tok, &open_, err, sizeof err), 0);
    assert_true(open_);
    fxc_secret_free(tok);

    path = write_file("t3", " \n", 0600);
    assert_int_equal(fxc_read_token_file(path, &tok, &open_, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "is empty"));
    assert_null(tok);

    path = write_file("t4", "fxn_secretline1\nsecondline\n", 0600);
    assert_int_equal(fxc_read_token_file(path, &tok, &open_, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "more than one line"));
    assert_null(strstr(err, "secret")); /* never the content */

    assert_int_equal(
        fxc_read_token_file(tu_pathf("%s/missing", dir), &tok, &open_, err, sizeof err),
        FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(fxc_read_token_file(dir, &tok, &open_, err, sizeof err), FXS_INVALID_ARGUMENT);
}

static void test_duration(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t want;
    } good[] = {
        {"3600", 3600}, {"90s", 90},      {"45m", 2700},
        {"12h", 43200}, {"30d", 2592000}, {"2w", 1209600},
    };
    char err[256];
    int64_t s;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(fxc_parse_duration(good[i].text, &s, err, sizeof err), 0);
        assert_int_equal(s, good[i].want);
    }
    static const char *const bad[] = {
        "", "0", "-5", "5x", "d", "1.5h", "12hh", " 5", "99999999999999999999", "40000d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (fxc_parse_duration(bad[i], &s, err, sizeof err) != FXS_INVALID_ARGUMENT)
            fail_msg("\"%s\" was accepted as %lld", bad[i], (long long)s);
        assert_non_null(strstr(err, "expected a duration"));
    }
}

static void test_channel_opts(void **state)
{
    (void)state;
    char err[512];
    fxc_channel *ch = NULL;
    /* a token with a space or a newline cannot be metadata */
    fxc_channel_opts o = {.token = "fxn_a b"};
    assert_int_equal(fxc_channel_open("127.0.0.1:1", &o, &ch, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "space"));
    assert_null(ch);
    o.token = "fxn_a\n";
    assert_int_equal(fxc_channel_open("127.0.0.1:1", &o, &ch, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    /* TLS files: missing, not PEM, half a pair */
    o = (fxc_channel_opts){.tls_ca_file = tu_pathf("%s/missing.pem", dir)};
    assert_int_equal(fxc_channel_open("127.0.0.1:1", &o, &ch, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "TLS CA"));
    assert_non_null(strstr(err, "missing.pem"));
    o.tls_ca_file = write_file("notpem", "hello", 0600);
    assert_int_equal(fxc_channel_open("127.0.0.1:1", &o, &ch, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "not a PEM file"));
    o = (fxc_channel_opts){.tls_cert_file = o.tls_ca_file};
    assert_int_equal(fxc_channel_open("127.0.0.1:1", &o, &ch, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "needs its key"));
    /* TLS with the default roots, and a token: a channel (nothing is dialled yet) */
    o = (fxc_channel_opts){.tls = true, .token = "fxn_ok"};
    assert_int_equal(fxc_channel_open("127.0.0.1:1", &o, &ch, err, sizeof err), 0);
    assert_true(fxc_channel_tls(ch));
    fxc_channel_free(ch);
    assert_int_equal(fxc_channel_open("127.0.0.1:1", NULL, &ch, err, sizeof err), 0);
    assert_false(fxc_channel_tls(ch));
    fxc_channel_free(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test(test_default_path),
        cmocka_unit_test_setup_teardown(test_token_file, setup, teardown),
        cmocka_unit_test(test_duration),
        cmocka_unit_test_setup_teardown(test_channel_opts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
