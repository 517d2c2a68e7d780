/*
 * suggest.h - "did you mean": the known words closest to a mistyped one,
 * for the CLI's unknown commands, subcommands, options and output formats.
 *
 * A candidate is suggested when the word is a prefix of it ("mo" ->
 * "model") or when it is within a few edits of it: insertions, deletions,
 * substitutions and swaps of two neighbouring letters (the optimal string
 * alignment form of the Damerau-Levenshtein distance), ignoring case. The
 * number of edits allowed grows with the word's length: 1 up to 2 letters,
 * 2 up to 5, 3 beyond, and is at most a third of the longer of the two
 * words (so "x" suggests nothing, "modle" suggests "model", and "yaml",
 * half changed, does not suggest "name"). Every prefix match is listed, then every candidate at the
 * smallest distance found, each in the order of the candidates: ties are
 * all shown, never one picked at random.
 *
 * No I/O, no allocation beyond the stack: testable alone
 * (tests/unit/test_cli_suggest.c).
 */
#ifndef FXC_SUGGEST_H
#define FXC_SUGGEST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Words longer than this are compared by their first FXC_SUGGEST_MAXLEN
 * letters (no command or option comes close). */
#define FXC_SUGGEST_MAXLEN 63

/* The edit distance of a and b, ignoring ASCII case. */
size_t fxc_edit_distance(const char *a, const char *b);

/* The candidates to suggest for word, at most max of them, into out (in the
 * candidates' order, prefix matches first); returns how many. NULL
 * candidates are skipped; an empty word gets none. */
size_t fxc_suggest(const char *word, const char *const *cands, size_t n, const char **out,
                   size_t max);

#ifdef __cplusplus
}
#endif
#endif
