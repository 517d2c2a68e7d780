/* rng.c - xoshiro256** seeded through splitmix64: reproducible streams. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void fx__rng_init(struct fx_rng *r, uint64_t seed)
{
    uint64_t z = seed;
    for (int i = 0; i < 4; i++) {
        z += 0x9e3779b97f4a7c15ULL;
        r->s[i] = fx_mix64(z);
    }
}

fx_rng *fx_rng_create(uint64_t seed)
{
    fx_rng *r = malloc(sizeof *r);
    if (r)
        fx__rng_init(r, seed);
    return r;
}

void fx_rng_free(fx_rng *r) { free(r); }
void fx_rng_seed(fx_rng *r, uint64_t seed) { fx__rng_init(r, seed); }

uint64_t fx_rng_u64(fx_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double fx_rng_uniform(fx_rng *r) { return (double)(fx_rng_u64(r) >> 11) * 0x1.0p-53; }

double fx_rng_normal(fx_rng *r)
{
    /* Box-Muller; one value per call keeps the stream simple to replay. */
    double u1 = fx_rng_uniform(r), u2 = fx_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void fx_rng_get_state(const fx_rng *r, uint64_t state[4])
{
    for (int i = 0; i < 4; i++)
        state[i] = r->s[i];
}

void fx_rng_set_state(fx_rng *r, const uint64_t state[4])
{
    for (int i = 0; i < 4; i++)
        r->s[i] = state[i];
}
