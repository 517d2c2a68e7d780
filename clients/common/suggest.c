/*
 * suggest.c - "did you mean" (see suggest.h).
 */
#include "suggest.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

static size_t min3(size_t a, size_t b, size_t c)
{
    size_t m = a < b ? a : b;
    return m < c ? m : c;
}

/* Three rows of the dynamic programme are enough: the swap of two letters
 * looks two rows back. */
size_t fxc_edit_distance(const char *a, const char *b)
{
    size_t la = strnlen(a, FXC_SUGGEST_MAXLEN), lb = strnlen(b, FXC_SUGGEST_MAXLEN);
    size_t rows[3][FXC_SUGGEST_MAXLEN + 1];
    size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        int ca = tolower((unsigned char)a[i - 1]);
        for (size_t j = 1; j <= lb; j++) {
            int cb = tolower((unsigned char)b[j - 1]);
            size_t cost = ca != cb;
            cur[j] = min3(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && prev2[j - 2] + 1 < cur[j])
                cur[j] = prev2[j - 2] + 1;
        }
        size_t *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

static size_t allowed_edits(size_t len) { return len <= 2 ? 1 : len <= 5 ? 2 : 3; }

/* The distance when close enough to suggest, else SIZE_MAX: within the
 * edits the word's length allows, and at most a third of the longer word
 * changed ("yaml" is 2 edits from "name": half of it, not a typo). */
static size_t distance_within(const char *word, size_t len, const char *cand)
{
    size_t d = fxc_edit_distance(word, cand), clen = strlen(cand);
    size_t longer = len > clen ? len : clen;
    return d <= allowed_edits(len) && 3 * d <= longer ? d : SIZE_MAX;
}

static bool is_prefix(const char *word, size_t len, const char *cand)
{
    return strlen(cand) > len && !strncasecmp(cand, word, len);
}

/* Appends cand unless it is there already (a word in two tables: an option
 * of a command and the global one of the same name). */
static void add(const char **out, size_t *got, const char *cand)
{
    for (size_t k = 0; k < *got; k++)
        if (!strcmp(out[k], cand))
            return;
    out[(*got)++] = cand;
}

size_t fxc_suggest(const char *word, const char *const *cands, size_t n, const char **out,
                   size_t max)
{
    size_t len = strlen(word), got = 0;
    if (!len || !max)
        return 0;
    for (size_t i = 0; i < n && got < max; i++)
        if (cands[i] && is_prefix(word, len, cands[i]))
            add(out, &got, cands[i]);
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < n; i++)
        if (cands[i] && !is_prefix(word, len, cands[i])) {
            size_t d = distance_within(word, len, cands[i]);
            if (d < best)
                best = d;
        }
    if (best == SIZE_MAX)
        return got;
    for (size_t i = 0; i < n && got < max; i++) {
        if (!cands[i] || is_prefix(word, len, cands[i]) ||
            distance_within(word, len, cands[i]) != best)
            continue;
        add(out, &got, cands[i]);
    }
    return got;
}
