/*
 * servertest.h - helpers for unit tests of the daemon's modules (they link
 * fluxion_server and fluxion_client; include after <cmocka.h>).
 */
#ifndef FX_SERVERTEST_H
#define FX_SERVERTEST_H

#include <jansson.h>

#include "models/graph.h"
#include "pbjson.h"

/* A graph from a ModelSpec written as JSON (the CLI's model-file form),
 * seeded with seed; fails the test with the message when it does not build. */
static inline fxg_graph *st_graph_json(const char *json, uint64_t seed)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    assert_non_null(j);
    char err[512];
    ProtobufCMessage *spec = pbjson_decode(&fluxion__v1__model_spec__descriptor, j, err,
                                           sizeof err);
    json_decref(j);
    if (!spec)
        fail_msg("spec: %s", err);
    fxg_options o = { .seed = seed };
    fxg_graph *g = NULL;
    fxg_build((Fluxion__V1__ModelSpec *)spec, &o, &g, err, sizeof err);
    protobuf_c_message_free_unpacked(spec, NULL);
    if (!g)
        fail_msg("graph: %s", err);
    return g;
}

#endif
