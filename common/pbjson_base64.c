/*
 * pbjson_base64.c - base64 for pbjson's bytes fields (see pbjson.h): the
 * standard alphabet out, standard or URL-safe in, padding optional.
 */
#include "pbjson.h"

#include <stdint.h>
#include <stdlib.h>

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *pbjson_base64_encode(const void *data, size_t len)
{
    const unsigned char *s = data;
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < len)
            v |= s[i + 2];
        *o++ = b64_std[v >> 18 & 63];
        *o++ = b64_std[v >> 12 & 63];
        *o++ = i + 1 < len ? b64_std[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? b64_std[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64_digit(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int pbjson_base64_decode(const char *text, size_t len, unsigned char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    size_t pad = 0;
    while (pad < 2 && len > 0 && text[len - 1] == '=') {
        len--;
        pad++;
    }
    /* Padding, when present, completes the last group of 4. */
    if (len % 4 == 1 || (pad && (len + pad) % 4))
        return -1;
    size_t n = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (n == 0)
        return 0;
    unsigned char *buf = malloc(n), *o = buf;
    if (!buf)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_digit(text[i]);
        if (v < 0) {
            free(buf);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    *out = buf;
    *outlen = n;
    return 0;
}
