/*
 * http_internal.h - private to server/http/: the request state shared by
 * http.c (the libmicrohttpd daemon, bodies, limits, answers) and routes.c
 * (from a path to a gRPC method, the request message and the answer's
 * body).
 */
#ifndef FXH_HTTP_INTERNAL_H
#define FXH_HTTP_INTERNAL_H

#include "http/http.h"

#include <stdint.h>

#include "base/status.h"

/* One request, from its first header to its answer. */
typedef struct {
    fxr_server *rpc;
    const char *method;  /* "GET", "POST" */
    const char *url;     /* raw, not yet %-decoded (split first, then decoded) */
    const char *authorization;  /* the Authorization header or NULL */
    const char *infer_header_len; /* Inference-Header-Content-Length or NULL */
    char peer[96];       /* "http:127.0.0.1:5555" */
    bool tls;
    const char *body;
    size_t body_len;
} fxh_request;

/* The answer routes.c gives: status, content type, body (malloc'd or
 * NULL), and the JSON part's length for the binary extension (SIZE_MAX:
 * no Inference-Header-Content-Length header). An error answer's body is
 * {"error": "..."} (fxh__error). */
typedef struct {
    int status;
    const char *content_type;
    char *body;
    size_t len;
    size_t json_len;
    bool www_authenticate; /* 401: WWW-Authenticate: Bearer */
} fxh_answer;

/* routes.c: answers one request (the body read whole). */
void fxh__route(const fxh_request *r, fxh_answer *a);

/* An error answer: the status of code (or http_status when code is 0),
 * body {"error": message}. */
void fxh__error(fxh_answer *a, fxs_status code, int http_status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Runs method path on the packed request and waits for its end: 0 with
 * the packed response in *resp (malloc'd, *resp_len), or the call's code
 * with its message in msg. */
int fxh__call(const fxh_request *r, const char *path, const uint8_t *req, size_t req_len,
              uint8_t **resp, size_t *resp_len, char *msg, size_t msglen);

#endif
