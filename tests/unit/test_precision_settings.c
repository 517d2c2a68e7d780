/* test_precision_settings.c - the daemon's precision settings: the serving
 * setting "precision" (servecfg.c: text, BatchingConfig message both ways,
 * the CPU-only check) and JobSpec.precision (train_precision.c: the value,
 * the devices a spec names, the device a job resolved to). Pure checks: a
 * CUDA device here is only a value, no GPU is needed. */
#include "testutil.h"

#include <string.h>

#include "serving/servecfg.h"
#include "training/train.h"

static void assert_contains(const char *s, const char *part)
{
    if (!strstr(s, part))
        fail_msg("'%s' should mention '%s'", s, part);
}

static const fx_device CUDA0 = { FX_DEV_CUDA, 0 };

static void test_serving_setting(void **state)
{
    (void)state;
    char err[512];
    fxb_config c;
    fxb_config_default(&c);
    assert_int_equal(c.precision, FX_PREC_F32);
    assert_int_equal(fxsv_cfg_set_text(&c, "precision", "bf16", err, sizeof err), 0);
    assert_int_equal(c.precision, FX_PREC_BF16);
    assert_int_equal(fxsv_cfg_set_text(&c, "precision", "fp32", err, sizeof err), 0);
    assert_int_equal(c.precision, FX_PREC_F32);
    const char *bad[] = { "fp16", "BF16", "bf16 ", "int8" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c.precision = FX_PREC_BF16;
        assert_int_equal(fxsv_cfg_set_text(&c, "precision", bad[i], err, sizeof err),
                         FXS_INVALID_ARGUMENT);
        assert_contains(err, "precision");
        assert_contains(err, bad[i]);
        assert_int_equal(c.precision, FX_PREC_BF16); /* unchanged */
    }
    /* "" is the default, as an unset field of a stored record */
    assert_int_equal(fxsv_cfg_set_text(&c, "precision", "", err, sizeof err), 0);
    assert_int_equal(c.precision, FX_PREC_F32);

    /* message both ways; a mask of other fields keeps it */
    c.precision = FX_PREC_BF16;
    Fluxion__V1__BatchingConfig m = FLUXION__V1__BATCHING_CONFIG__INIT;
    uint32_t pref[FXB_MAX_PREFERRED];
    fxsv_cfg_to_msg(&c, &m, pref);
    assert_string_equal(m.precision, "bf16");
    fxb_config back;
    fxb_config_default(&back);
    assert_int_equal(fxsv_cfg_apply(&back, &m, NULL, 0, err, sizeof err), 0);
    assert_int_equal(back.precision, FX_PREC_BF16);
    Fluxion__V1__BatchingConfig other = FLUXION__V1__BATCHING_CONFIG__INIT;
    other.max_batch_size = 4;
    char *mask[] = { "max_batch_size" };
    assert_int_equal(fxsv_cfg_apply(&back, &other, mask, 1, err, sizeof err), 0);
    assert_int_equal(back.precision, FX_PREC_BF16);
    char *pmask[] = { "precision" };
    other.precision = "fp32";
    assert_int_equal(fxsv_cfg_apply(&back, &other, pmask, 1, err, sizeof err), 0);
    assert_int_equal(back.precision, FX_PREC_F32);
    other.precision = "half";
    assert_int_equal(fxsv_cfg_apply(&back, &other, pmask, 1, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_contains(err, "precision");
    bool listed = false;
    for (const char *const *f = fxsv_cfg_fields(); *f; f++)
        listed |= strcmp(*f, "precision") == 0;
    assert_true(listed);

    /* bf16 on the CPU only; fp32 anywhere */
    assert_int_equal(fxsv_cfg_check_precision(&c, fx_cpu(), NULL, err, sizeof err), 0);
    assert_int_equal(fxsv_cfg_check_precision(&c, CUDA0, "serving setting ", err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_contains(err, "serving setting precision: bf16");
    assert_contains(err, "cuda:0");
    c.precision = FX_PREC_F32;
    assert_int_equal(fxsv_cfg_check_precision(&c, CUDA0, NULL, err, sizeof err), 0);
}

static int check(const char *prec, const char *device, char **placement, size_t n,
                 const fx_device *dev, fx_precision *out, char *err, size_t errlen)
{
    Fluxion__V1__JobSpec s = FLUXION__V1__JOB_SPEC__INIT;
    s.precision = (char *)prec;
    s.device = (char *)device;
    s.placement = placement;
    s.n_placement = n;
    return fxt_check_precision(&s, dev, out, err, errlen);
}

static void test_job_spec(void **state)
{
    (void)state;
    char err[512];
    fx_precision p = FX_PREC_BF16;
    assert_int_equal(check("", "", NULL, 0, NULL, &p, err, sizeof err), 0);
    assert_int_equal(p, FX_PREC_F32);
    assert_int_equal(check("bf16", "cpu", NULL, 0, NULL, &p, err, sizeof err), 0);
    assert_int_equal(p, FX_PREC_BF16);
    assert_int_equal(check("fp32", "cuda:0", NULL, 0, &CUDA0, &p, err, sizeof err), 0);
    assert_int_equal(p, FX_PREC_F32);
    assert_int_equal(check("fp16", "", NULL, 0, NULL, &p, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_contains(err, "precision: 'fp16'");
    /* a GPU named, by device or placement, or the one resolved */
    const char *gpus[] = { "cuda:0", "gpu", "cuda:3" };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(check("bf16", gpus[i], NULL, 0, NULL, NULL, err, sizeof err),
                         FXS_INVALID_ARGUMENT);
        assert_contains(err, "precision: bf16 runs on CPU devices only");
        assert_contains(err, gpus[i]);
    }
    char *pl[] = { "cpu", "peer-b/cuda:1" };
    assert_int_equal(check("bf16", "", pl, 2, NULL, NULL, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_contains(err, "placement");
    assert_contains(err, "peer-b/cuda:1");
    char *cpus[] = { "cpu", "peer-b/cpu" };
    assert_int_equal(check("bf16", "", cpus, 2, NULL, NULL, err, sizeof err), 0);
    /* placements decide over the default device resolved */
    assert_int_equal(check("bf16", "", cpus, 2, &CUDA0, NULL, err, sizeof err), 0);
    assert_int_equal(check("bf16", "", NULL, 0, &CUDA0, NULL, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_contains(err, "the job's device is cuda:0");
    fx_device cpu = fx_cpu();
    assert_int_equal(check("bf16", "", NULL, 0, &cpu, NULL, err, sizeof err), 0);
    /* a name that is no device is check_world's to report */
    assert_int_equal(check("bf16", "tpu", NULL, 0, NULL, NULL, err, sizeof err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serving_setting),
        cmocka_unit_test(test_job_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
