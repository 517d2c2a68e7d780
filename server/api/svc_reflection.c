/*
 * svc_reflection.c - gRPC server reflection, grpc.reflection.v1 and
 * grpc.reflection.v1alpha ServerReflection (one bidi method,
 * ServerReflectionInfo): what grpcurl, Postman and grpcio-reflection ask to
 * list the services and learn their messages without the .proto files.
 *
 * The schema comes from a FileDescriptorSet of every .proto under proto/ (and
 * their imports) that the build made with protoc and embedded in the binary
 * (CMakeLists.txt, cmake/fx_embed.cmake), read once at registration with
 * protoc-c's descriptor.proto into an index of files and symbols that stays
 * read-only afterwards, so every stream reads it without a lock.
 *
 * Every request gets one response on the stream, in order; one that cannot
 * be answered (an unknown file, symbol or type) gets an error_response with
 * NOT_FOUND, as the protocol says, and the stream goes on. A file is sent
 * with its transitive dependencies (the file first), every time: a client
 * keeps the ones it already has.
 *
 * The two versions are the same messages on the wire (only the package
 * differs), so a v1alpha request is read as v1 through its bytes and the v1
 * answer written back as v1alpha the same way: one implementation.
 *
 * Public (FXP_PUBLIC), like health: it reveals the schema, which is public,
 * and nothing of any team's objects.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/log.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpcreflect/v1/reflection.pb-c.h"
#include "grpcreflect/v1alpha/reflection.pb-c.h"

/* The embedded set (generated descriptor_set.c). */
extern const unsigned char fxa_descriptor_set[];
extern const size_t fxa_descriptor_set_len;

typedef Grpc__Reflection__V1__ServerReflectionRequest refl_req;
typedef Grpc__Reflection__V1__ServerReflectionResponse refl_resp;

/* gRPC status codes in error_response (its error_code is the number). */
enum { CODE_INVALID_ARGUMENT = 3, CODE_NOT_FOUND = 5 };

typedef struct {
    char *name; /* fully qualified, no leading dot ("fluxion.v1.Model.name") */
    size_t file;
} refl_sym;

typedef struct {
    char *extendee; /* fully qualified, no leading dot */
    int32_t number;
    size_t file;
} refl_ext;

typedef struct {
    Google__Protobuf__FileDescriptorSet *set;
    ProtobufCBinaryData *packed; /* per file: its FileDescriptorProto, serialized */
    refl_sym *syms;              /* sorted by name */
    size_t n_syms, cap_syms;
    refl_ext *exts;
    size_t n_exts, cap_exts;
    char **services; /* full names, in the set's order */
    size_t n_services;
} refl_index;

/* ------------------------------------------------------------- the index */

static char *join(const char *scope, const char *name)
{
    size_t a = strlen(scope), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s)
        return NULL;
    if (a) {
        memcpy(s, scope, a);
        s[a++] = '.';
    }
    memcpy(s + a, name, b + 1);
    return s;
}

static int add_sym(refl_index *ix, const char *scope, const char *name, size_t file)
{
    if (ix->n_syms == ix->cap_syms) {
        size_t cap = ix->cap_syms ? ix->cap_syms * 2 : 256;
        refl_sym *p = realloc(ix->syms, cap * sizeof *p);
        if (!p)
            return -1;
        ix->syms = p;
        ix->cap_syms = cap;
    }
    char *full = join(scope, name);
    if (!full)
        return -1;
    ix->syms[ix->n_syms++] = (refl_sym){ full, file };
    return 0;
}

/* An extension field (declared at file or message scope). */
static int add_ext(refl_index *ix, const char *scope, const Google__Protobuf__FieldDescriptorProto *f,
                   size_t file)
{
    if (add_sym(ix, scope, f->name, file))
        return -1;
    if (!f->extendee || !f->has_number)
        return 0;
    if (ix->n_exts == ix->cap_exts) {
        size_t cap = ix->cap_exts ? ix->cap_exts * 2 : 16;
        refl_ext *p = realloc(ix->exts, cap * sizeof *p);
        if (!p)
            return -1;
        ix->exts = p;
        ix->cap_exts = cap;
    }
    /* protoc writes resolved type names with a leading dot */
    char *e = strdup(f->extendee[0] == '.' ? f->extendee + 1 : f->extendee);
    if (!e)
        return -1;
    ix->exts[ix->n_exts++] = (refl_ext){ e, f->number, file };
    return 0;
}

/* An enum and its values; the values are scoped beside the enum (C++
 * scoping, as protoc resolves them), not inside it. */
static int add_enum(refl_index *ix, const char *scope, const Google__Protobuf__EnumDescriptorProto *e,
                    size_t file)
{
    if (add_sym(ix, scope, e->name, file))
        return -1;
    for (size_t i = 0; i < e->n_value; i++)
        if (add_sym(ix, scope, e->value[i]->name, file))
            return -1;
    return 0;
}

static int add_message(refl_index *ix, const char *scope, const Google__Protobuf__DescriptorProto *m,
                       size_t file)
{
    char *full = join(scope, m->name);
    int rc = !full || add_sym(ix, scope, m->name, file) ? -1 : 0;
    for (size_t i = 0; !rc && i < m->n_field; i++)
        rc = add_sym(ix, full, m->field[i]->name, file);
    for (size_t i = 0; !rc && i < m->n_oneof_decl; i++)
        rc = add_sym(ix, full, m->oneof_decl[i]->name, file);
    for (size_t i = 0; !rc && i < m->n_nested_type; i++)
        rc = add_message(ix, full, m->nested_type[i], file);
    for (size_t i = 0; !rc && i < m->n_enum_type; i++)
        rc = add_enum(ix, full, m->enum_type[i], file);
    for (size_t i = 0; !rc && i < m->n_extension; i++)
        rc = add_ext(ix, full, m->extension[i], file);
    free(full);
    return rc;
}

static int add_file(refl_index *ix, size_t file)
{
    const Google__Protobuf__FileDescriptorProto *f = ix->set->file[file];
    const char *pkg = f->package ? f->package : "";
    int rc = 0;
    for (size_t i = 0; !rc && i < f->n_message_type; i++)
        rc = add_message(ix, pkg, f->message_type[i], file);
    for (size_t i = 0; !rc && i < f->n_enum_type; i++)
        rc = add_enum(ix, pkg, f->enum_type[i], file);
    for (size_t i = 0; !rc && i < f->n_extension; i++)
        rc = add_ext(ix, pkg, f->extension[i], file);
    for (size_t i = 0; !rc && i < f->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = f->service[i];
        char *full = join(pkg, s->name);
        rc = !full || add_sym(ix, pkg, s->name, file) ? -1 : 0;
        for (size_t j = 0; !rc && j < s->n_method; j++)
            rc = add_sym(ix, full, s->method[j]->name, file);
        free(full);
    }
    return rc;
}

static int sym_cmp(const void *a, const void *b)
{
    return strcmp(((const refl_sym *)a)->name, ((const refl_sym *)b)->name);
}

static void index_free(refl_index *ix)
{
    if (!ix)
        return;
    for (size_t i = 0; i < ix->n_syms; i++)
        free(ix->syms[i].name);
    for (size_t i = 0; i < ix->n_exts; i++)
        free(ix->exts[i].extendee);
    if (ix->packed)
        for (size_t i = 0; i < ix->set->n_file; i++)
            free(ix->packed[i].data);
    free(ix->syms);
    free(ix->exts);
    free(ix->packed);
    for (size_t i = 0; i < ix->n_services; i++)
        free(ix->services[i]);
    free(ix->services);
    if (ix->set)
        google__protobuf__file_descriptor_set__free_unpacked(ix->set, NULL);
    free(ix);
}

/* Reads the set. NULL with a message in err when it does not parse (a
 * broken build) or memory runs out. */
static refl_index *index_build(const uint8_t *data, size_t len, char *err, size_t errlen)
{
    refl_index *ix = calloc(1, sizeof *ix);
    if (!ix) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ix->set = google__protobuf__file_descriptor_set__unpack(NULL, len, data);
    if (!ix->set || !ix->set->n_file) {
        snprintf(err, errlen, "the embedded descriptor set (%zu bytes) does not parse", len);
        index_free(ix);
        return NULL;
    }
    size_t n = ix->set->n_file, n_services = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ix->set->file[i]->name) {
            snprintf(err, errlen, "the embedded descriptor set has a file without a name");
            index_free(ix);
            return NULL;
        }
        n_services += ix->set->file[i]->n_service;
    }
    ix->packed = calloc(n, sizeof *ix->packed);
    ix->services = calloc(n_services ? n_services : 1, sizeof *ix->services);
    int rc = ix->packed && ix->services ? 0 : -1;
    for (size_t i = 0; !rc && i < n; i++) {
        const Google__Protobuf__FileDescriptorProto *f = ix->set->file[i];
        size_t sz = google__protobuf__file_descriptor_proto__get_packed_size(f);
        ix->packed[i].data = malloc(sz ? sz : 1);
        if (!ix->packed[i].data) {
            rc = -1;
            break;
        }
        ix->packed[i].len = google__protobuf__file_descriptor_proto__pack(f, ix->packed[i].data);
        rc = add_file(ix, i);
    }
    for (size_t i = 0; !rc && i < n; i++) {
        const Google__Protobuf__FileDescriptorProto *f = ix->set->file[i];
        for (size_t j = 0; !rc && j < f->n_service; j++) {
            char *full = join(f->package ? f->package : "", f->service[j]->name);
            if (full)
                ix->services[ix->n_services++] = full;
            else
                rc = -1;
        }
    }
    if (rc) {
        snprintf(err, errlen, "out of memory reading the descriptor set");
        index_free(ix);
        return NULL;
    }
    qsort(ix->syms, ix->n_syms, sizeof *ix->syms, sym_cmp);
    return ix;
}

static long find_file(const refl_index *ix, const char *name)
{
    for (size_t i = 0; i < ix->set->n_file; i++)
        if (strcmp(ix->set->file[i]->name, name) == 0)
            return (long)i;
    return -1;
}

static long find_symbol(const refl_index *ix, const char *name)
{
    if (name[0] == '.') /* a resolved type name as descriptors write it */
        name++;
    refl_sym key = { (char *)name, 0 };
    const refl_sym *s = bsearch(&key, ix->syms, ix->n_syms, sizeof *ix->syms, sym_cmp);
    return s ? (long)s->file : -1;
}

/* True when name is a message type of the set. */
static bool is_message(const refl_index *ix, const char *name)
{
    if (name[0] == '.')
        name++;
    long f = find_symbol(ix, name);
    if (f < 0)
        return false;
    /* a symbol, but a message? walk the file's messages by name */
    const Google__Protobuf__FileDescriptorProto *fd = ix->set->file[f];
    const char *pkg = fd->package ? fd->package : "";
    size_t pl = strlen(pkg);
    if (pl && (strncmp(name, pkg, pl) != 0 || name[pl] != '.'))
        return false;
    const char *rest = name + (pl ? pl + 1 : 0);
    Google__Protobuf__DescriptorProto *const *msgs = fd->message_type;
    size_t n = fd->n_message_type;
    for (;;) {
        const char *dot = strchr(rest, '.');
        size_t len = dot ? (size_t)(dot - rest) : strlen(rest);
        const Google__Protobuf__DescriptorProto *m = NULL;
        for (size_t i = 0; i < n && !m; i++)
            if (strlen(msgs[i]->name) == len && strncmp(msgs[i]->name, rest, len) == 0)
                m = msgs[i];
        if (!m)
            return false;
        if (!dot)
            return true;
        msgs = m->nested_type;
        n = m->n_nested_type;
        rest = dot + 1;
    }
}

/* The file, then every file it imports, transitively, each once: what a
 * client needs to build the file's descriptors. order has n_file slots. */
static size_t closure(const refl_index *ix, size_t file, bool *seen, size_t *order, size_t n)
{
    if (seen[file])
        return n;
    seen[file] = true;
    order[n++] = file;
    const Google__Protobuf__FileDescriptorProto *f = ix->set->file[file];
    for (size_t i = 0; i < f->n_dependency; i++) {
        long d = find_file(ix, f->dependency[i]);
        if (d >= 0) /* --include_imports puts every import in the set */
            n = closure(ix, (size_t)d, seen, order, n);
    }
    return n;
}

/* ------------------------------------------------------------ answering */

/* What one response points to; freed after it is sent. */
typedef struct {
    Grpc__Reflection__V1__FileDescriptorResponse files;
    Grpc__Reflection__V1__ListServiceResponse list;
    Grpc__Reflection__V1__ExtensionNumberResponse numbers;
    Grpc__Reflection__V1__ErrorResponse error;
    char message[320];
    ProtobufCBinaryData *blobs;
    Grpc__Reflection__V1__ServiceResponse *svc;
    Grpc__Reflection__V1__ServiceResponse **psvc;
    int32_t *ext_numbers;
} refl_scratch;

static void scratch_free(refl_scratch *sc)
{
    free(sc->blobs);
    free(sc->svc);
    free(sc->psvc);
    free(sc->ext_numbers);
}

static void set_error(refl_resp *out, refl_scratch *sc, int32_t code, const char *fmt, const char *arg)
{
    grpc__reflection__v1__error_response__init(&sc->error);
    snprintf(sc->message, sizeof sc->message, fmt, arg);
    sc->error.error_code = code;
    sc->error.error_message = sc->message;
    out->message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    out->error_response = &sc->error;
}

/* 0, or -1 when out of memory. */
static int set_files(const refl_index *ix, refl_resp *out, refl_scratch *sc, size_t file)
{
    size_t n = ix->set->n_file;
    bool *seen = calloc(n, sizeof *seen);
    size_t *order = calloc(n, sizeof *order);
    sc->blobs = calloc(n, sizeof *sc->blobs);
    if (!seen || !order || !sc->blobs) {
        free(seen);
        free(order);
        return -1;
    }
    size_t k = closure(ix, file, seen, order, 0);
    for (size_t i = 0; i < k; i++)
        sc->blobs[i] = ix->packed[order[i]];
    free(seen);
    free(order);
    grpc__reflection__v1__file_descriptor_response__init(&sc->files);
    sc->files.file_descriptor_proto = sc->blobs;
    sc->files.n_file_descriptor_proto = k;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    out->file_descriptor_response = &sc->files;
    return 0;
}

static int set_services(const refl_index *ix, refl_resp *out, refl_scratch *sc)
{
    size_t n = ix->n_services;
    sc->svc = calloc(n ? n : 1, sizeof *sc->svc);
    sc->psvc = calloc(n ? n : 1, sizeof *sc->psvc);
    if (!sc->svc || !sc->psvc)
        return -1;
    for (size_t i = 0; i < n; i++) {
        grpc__reflection__v1__service_response__init(&sc->svc[i]);
        sc->svc[i].name = ix->services[i];
        sc->psvc[i] = &sc->svc[i];
    }
    grpc__reflection__v1__list_service_response__init(&sc->list);
    sc->list.service = sc->psvc;
    sc->list.n_service = n;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    out->list_services_response = &sc->list;
    return 0;
}

static int set_ext_numbers(const refl_index *ix, refl_resp *out, refl_scratch *sc, const char *type)
{
    if (!is_message(ix, type)) {
        set_error(out, sc, CODE_NOT_FOUND, "message type '%.200s' is not served here", type);
        return 0;
    }
    sc->ext_numbers = calloc(ix->n_exts ? ix->n_exts : 1, sizeof *sc->ext_numbers);
    if (!sc->ext_numbers)
        return -1;
    grpc__reflection__v1__extension_number_response__init(&sc->numbers);
    const char *bare = type[0] == '.' ? type + 1 : type;
    for (size_t i = 0; i < ix->n_exts; i++)
        if (strcmp(ix->exts[i].extendee, bare) == 0)
            sc->ext_numbers[sc->numbers.n_extension_number++] = ix->exts[i].number;
    sc->numbers.base_type_name = (char *)type;
    sc->numbers.extension_number = sc->ext_numbers;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    out->all_extension_numbers_response = &sc->numbers;
    return 0;
}

/* Fills *out (pointing into rq, ix and sc) with the answer to rq. 0, or -1
 * when out of memory. */
static int answer(const refl_index *ix, const refl_req *rq, refl_resp *out, refl_scratch *sc)
{
    grpc__reflection__v1__server_reflection_response__init(out);
    out->valid_host = rq->host;
    out->original_request = (refl_req *)rq;
    long f;
    switch (rq->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        return set_services(ix, out, sc);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        if ((f = find_file(ix, rq->file_by_filename)) < 0) {
            set_error(out, sc, CODE_NOT_FOUND, "file '%.200s' is not served here",
                      rq->file_by_filename);
            return 0;
        }
        return set_files(ix, out, sc, (size_t)f);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        if ((f = find_symbol(ix, rq->file_containing_symbol)) < 0) {
            set_error(out, sc, CODE_NOT_FOUND, "symbol '%.200s' is not served here",
                      rq->file_containing_symbol);
            return 0;
        }
        return set_files(ix, out, sc, (size_t)f);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
        const Grpc__Reflection__V1__ExtensionRequest *e = rq->file_containing_extension;
        const char *type = e && e->containing_type ? e->containing_type : "";
        if (type[0] == '.')
            type++;
        for (size_t i = 0; e && i < ix->n_exts; i++)
            if (ix->exts[i].number == e->extension_number && strcmp(ix->exts[i].extendee, type) == 0)
                return set_files(ix, out, sc, ix->exts[i].file);
        char what[260];
        snprintf(what, sizeof what, "%.200s(%d)", type, e ? (int)e->extension_number : 0);
        set_error(out, sc, CODE_NOT_FOUND, "no extension %s is served here", what);
        return 0;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        return set_ext_numbers(ix, out, sc, rq->all_extension_numbers_of_type);
    default:
        set_error(out, sc, CODE_INVALID_ARGUMENT,
                  "%s", "the request sets none of file_by_filename, file_containing_symbol, "
                        "file_containing_extension, all_extension_numbers_of_type, list_services");
        return 0;
    }
}

/* ------------------------------------------------------------ the stream */

/* m (of descriptor `from`) re-read as a message of descriptor `to`, which
 * has the same fields and numbers; NULL when memory runs out. */
static ProtobufCMessage *retype(const ProtobufCMessage *m, const ProtobufCMessageDescriptor *to)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *r = protobuf_c_message_unpack(to, NULL, n, buf);
    free(buf);
    return r;
}

static void serve(fxr_call *call, const refl_index *ix, bool alpha)
{
    for (;;) {
        ProtobufCMessage *msg;
        int r = fxr_recv(call, &msg);
        if (r == 0) {
            fxr_finish(call);
            return;
        }
        if (r < 0) {
            bool gone = fxr_cancelled(call);
            fxr_fail(call, gone ? FXS_CANCELLED : FXS_INVALID_ARGUMENT, "%s",
                     gone ? "reflection stream cancelled"
                          : "a ServerReflectionRequest does not parse");
            return;
        }
        ProtobufCMessage *rq = alpha ? retype(msg, &grpc__reflection__v1__server_reflection_request__descriptor)
                                     : msg;
        refl_resp out;
        refl_scratch sc = { 0 };
        int rc = rq ? answer(ix, (const refl_req *)rq, &out, &sc) : -1;
        ProtobufCMessage *send = NULL;
        if (!rc)
            send = alpha ? retype(&out.base, &grpc__reflection__v1alpha__server_reflection_response__descriptor)
                         : &out.base;
        int sent = send ? fxr_send(call, send) : -1;
        if (alpha && send)
            protobuf_c_message_free_unpacked(send, NULL);
        scratch_free(&sc);
        if (rq && rq != msg)
            protobuf_c_message_free_unpacked(rq, NULL);
        protobuf_c_message_free_unpacked(msg, NULL);
        if (!send) {
            fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory answering a reflection request");
            return;
        }
        if (sent != 0) {
            fxr_fail(call, FXS_CANCELLED, "reflection stream: the client is gone");
            return;
        }
    }
}

static void info_v1(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    (void)msg;
    serve(call, data, false);
}

static void info_v1alpha(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    (void)msg;
    serve(call, data, true);
}

/* Built once, read-only afterwards, kept for the life of the process: a
 * stream may still read it while main tears the rest down. */
static refl_index *g_index;

int fxa_register_reflection_service(fxa_daemon *d)
{
    if (!g_index) {
        char err[200];
        g_index = index_build(fxa_descriptor_set, fxa_descriptor_set_len, err, sizeof err);
        if (!g_index) {
            fxl_log(FXL_ERROR, "reflection", "cannot serve reflection error=\"%s\"", err);
            return FXS_INTERNAL;
        }
    }
    static const fxr_method v1[] = {
        { "ServerReflectionInfo", FXR_BIDI, FXP_PUBLIC, info_v1 },
    };
    static const fxr_method v1alpha[] = {
        { "ServerReflectionInfo", FXR_BIDI, FXP_PUBLIC, info_v1alpha },
    };
    int rc = fxr_server_add_service(d->rpc, &grpc__reflection__v1__server_reflection__descriptor, v1, 1,
                                    g_index);
    if (!rc)
        rc = fxr_server_add_service(d->rpc, &grpc__reflection__v1alpha__server_reflection__descriptor,
                                    v1alpha, 1, g_index);
    return rc;
}
