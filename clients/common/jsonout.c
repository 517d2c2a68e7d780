/*
 * jsonout.c - JSON text with shortest reals and a tensor-friendly layout
 * (see jsonout.h).
 */
#include "jsonout.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

char *jsonout_real(double v, char *buf)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, 32, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    /* "1e+20" and "2" need a mark of a real; "1e+20" already has one. */
    if (!strpbrk(buf, ".eEn"))
        strcat(buf, ".0");
    return buf;
}

static int write_string(FILE *f, const char *s, size_t n)
{
    if (putc('"', f) == EOF)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc;
        switch (c) {
        case '"': rc = fputs("\\\"", f); break;
        case '\\': rc = fputs("\\\\", f); break;
        case '\n': rc = fputs("\\n", f); break;
        case '\r': rc = fputs("\\r", f); break;
        case '\t': rc = fputs("\\t", f); break;
        case '\b': rc = fputs("\\b", f); break;
        case '\f': rc = fputs("\\f", f); break;
        default:
            /* UTF-8 passes through: jansson strings are valid UTF-8. */
            rc = c < 0x20 || c == 0x7f ? fprintf(f, "\\u%04x", c) : putc(c, f);
        }
        if (rc < 0)
            return -1;
    }
    return putc('"', f) == EOF ? -1 : 0;
}

static bool is_container(const json_t *j) { return json_is_object(j) || json_is_array(j); }

static int indent(FILE *f, int layout, int depth)
{
    if (layout != JSONOUT_PRETTY)
        return 0;
    return fprintf(f, "\n%*s", depth * 2, "") < 0 ? -1 : 0;
}

static int write_value(FILE *f, const json_t *j, int layout, int depth);

static int write_array(FILE *f, const json_t *j, int layout, int depth)
{
    size_t n = json_array_size(j);
    bool nested = false;
    for (size_t i = 0; i < n && !nested; i++)
        nested = is_container(json_array_get(j, i));
    int inner = nested ? layout : JSONOUT_LINE;
    if (putc('[', f) == EOF)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if ((i && fputs(inner == JSONOUT_PRETTY ? "," : ", ", f) == EOF) ||
            indent(f, inner, depth + 1) || write_value(f, json_array_get(j, i), layout, depth + 1))
            return -1;
    }
    if (n && indent(f, inner, depth))
        return -1;
    return putc(']', f) == EOF ? -1 : 0;
}

static int write_object(FILE *f, const json_t *j, int layout, int depth)
{
    const char *key;
    json_t *v;
    bool first = true;
    if (putc('{', f) == EOF)
        return -1;
    json_object_foreach((json_t *)j, key, v)
    {
        if ((!first && fputs(layout == JSONOUT_PRETTY ? "," : ", ", f) == EOF) ||
            indent(f, layout, depth + 1) || write_string(f, key, strlen(key)) ||
            fputs(": ", f) == EOF || write_value(f, v, layout, depth + 1))
            return -1;
        first = false;
    }
    if (!first && indent(f, layout, depth))
        return -1;
    return putc('}', f) == EOF ? -1 : 0;
}

static int write_value(FILE *f, const json_t *j, int layout, int depth)
{
    char buf[32];
    switch (json_typeof(j)) {
    case JSON_OBJECT: return write_object(f, j, layout, depth);
    case JSON_ARRAY: return write_array(f, j, layout, depth);
    case JSON_STRING: return write_string(f, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(j)) < 0 ? -1 : 0;
    case JSON_REAL: return fputs(jsonout_real(json_real_value(j), buf), f) == EOF ? -1 : 0;
    case JSON_TRUE: return fputs("true", f) == EOF ? -1 : 0;
    case JSON_FALSE: return fputs("false", f) == EOF ? -1 : 0;
    case JSON_NULL: return fputs("null", f) == EOF ? -1 : 0;
    }
    return -1;
}

int jsonout_write(FILE *f, const json_t *j, int layout)
{
    return j ? write_value(f, j, layout, 0) : -1;
}

char *jsonout_string(const json_t *j, int layout)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    int rc = jsonout_write(f, j, layout);
    if (fclose(f) || rc) {
        free(buf);
        return NULL;
    }
    return buf;
}
