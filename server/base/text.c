/* text.c - see text.h. */
#include "base/text.h"

#include <stdint.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"

/* The length of the valid UTF-8 sequence at s (n bytes left, n > 0), or 0
 * when it is not one. The second byte's range rules out overlongs (E0, F0),
 * surrogates (ED) and code points above U+10FFFF (F4); C0, C1 and F5..FF
 * never start a sequence. */
static size_t utf8_seq_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

size_t fxu_utf8_invalid_at(const void *str, size_t len)
{
    const uint8_t *s = str;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) { /* ASCII runs are the common case */
            i++;
            continue;
        }
        size_t k = utf8_seq_len(s + i, len - i);
        if (!k)
            return i;
        i += k;
    }
    return len;
}

int fxu_text_check(const char *what, const void *str, size_t len, size_t max_bytes, char *err,
                   size_t errlen)
{
    const uint8_t *s = str;
    if (max_bytes && len > max_bytes)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: %zu bytes, the limit is %zu", what,
                        len, max_bytes);
    size_t bad = fxu_utf8_invalid_at(s, len);
    const uint8_t *nul = memchr(s, 0, bad); /* one before the first invalid byte wins */
    if (nul)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: contains a NUL byte at byte %zu",
                        what, (size_t)(nul - s));
    if (bad < len)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: invalid UTF-8 at byte %zu", what,
                        bad);
    return 0;
}
