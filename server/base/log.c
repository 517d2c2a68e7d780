/* log.c - see log.h. One write(2) per line so lines from threads never interleave. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static fxl_level g_min = FXL_INFO;
static bool g_json = false;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void fxl_configure(fxl_level min_level, bool json)
{
    g_min = min_level;
    g_json = json;
}

int fxl_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

/* Appends s to buf as the inside of a JSON string. */
static size_t json_escape(char *buf, size_t pos, size_t cap, const char *s, size_t n)
{
    for (size_t i = 0; i < n && pos + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[pos++] = '\\';
            buf[pos++] = (char)c;
        } else if (c < 0x20) {
            pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x", c);
        } else {
            buf[pos++] = (char)c;
        }
    }
    return pos;
}

/* The message without its trailing key=value pairs: the pairs start at the
 * first " word=" whose word is [a-z_]+. */
static size_t message_len(const char *msg)
{
    for (const char *p = msg; *p; p++) {
        if (*p != ' ')
            continue;
        const char *q = p + 1;
        while ((*q >= 'a' && *q <= 'z') || *q == '_')
            q++;
        if (q > p + 1 && *q == '=')
            return (size_t)(p - msg);
    }
    return strlen(msg);
}

void fxl_log(fxl_level level, const char *comp, const char *fmt, ...)
{
    if (level < g_min)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000);

    char line[4096];
    size_t pos;
    if (!g_json) {
        size_t n = message_len(msg);
        pos = (size_t)snprintf(line, sizeof line, "ts=%s level=%s comp=%s msg=\"", when,
                               level_names[level], comp);
        pos = json_escape(line, pos, sizeof line, msg, n);
        pos += (size_t)snprintf(line + pos, sizeof line - pos, "\"%s\n", msg + n);
    } else {
        size_t n = message_len(msg);
        pos = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"comp\":\"%s\",\"msg\":\"",
                               when, level_names[level], comp);
        pos = json_escape(line, pos, sizeof line, msg, n);
        line[pos++] = '"';
        /* key=value pairs -> "key":"value" (quotes around a value dropped) */
        const char *p = msg + n;
        while (*p == ' ' && pos + 16 < sizeof line) {
            p++;
            const char *eq = strchr(p, '=');
            if (!eq)
                break;
            line[pos++] = ',';
            line[pos++] = '"';
            pos = json_escape(line, pos, sizeof line, p, (size_t)(eq - p));
            pos += (size_t)snprintf(line + pos, sizeof line - pos, "\":\"");
            const char *v = eq + 1, *end;
            if (*v == '"') {
                v++;
                end = strchr(v, '"');
                if (!end)
                    end = v + strlen(v);
                p = *end ? end + 1 : end;
            } else {
                end = strchr(v, ' ');
                if (!end)
                    end = v + strlen(v);
                p = end;
            }
            pos = json_escape(line, pos, sizeof line, v, (size_t)(end - v));
            line[pos++] = '"';
        }
        pos += (size_t)snprintf(line + pos, sizeof line - pos, "}\n");
    }
    if (pos >= sizeof line) {
        pos = sizeof line - 1;
        line[pos - 1] = '\n';
    }
    ssize_t rc = write(STDERR_FILENO, line, pos);
    (void)rc;
}
