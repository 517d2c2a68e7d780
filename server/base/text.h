/*
 * text.h - checks for text that comes from clients (string fields of
 * requests, tensor names inside uploaded data) before it is stored.
 *
 * Stored text goes back out in protobuf `string` fields, which standard
 * protobuf runtimes refuse to parse unless they hold valid UTF-8; and the
 * daemon keeps text as C strings, where a NUL byte would silently cut a
 * name short. So every incoming string must be valid UTF-8, hold no NUL,
 * and keep within a length limit (docs/limits.md lists them).
 */
#ifndef FXU_TEXT_H
#define FXU_TEXT_H

#include <stddef.h>

/* The offset of the first byte of s[0..len) that does not begin a valid
 * UTF-8 sequence, or len when all of it is valid. Valid means RFC 3629:
 * shortest forms only (no overlongs such as C0 AF), no UTF-16 surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF, no sequence cut off by the end.
 * NUL (U+0000) is valid UTF-8: fxu_text_check refuses it separately. */
size_t fxu_utf8_invalid_at(const void *s, size_t len);

/* Checks one incoming string s[0..len): at most max_bytes bytes (0: no
 * limit), valid UTF-8, no NUL byte. Returns 0, or FXS_INVALID_ARGUMENT with
 * a message that starts with `what` (the field's name or path) in err:
 *   "description: 5000 bytes, the limit is 4096"
 *   "spec.inputs[0].name: invalid UTF-8 at byte 3"
 *   "name: contains a NUL byte at byte 3"
 * The length is checked first, so an oversize string is not scanned. */
int fxu_text_check(const char *what, const void *s, size_t len, size_t max_bytes, char *err,
                   size_t errlen);

#endif
