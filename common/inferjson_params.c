/*
 * inferjson_params.c - the parameters of the Open Inference Protocol's
 * messages (map<string, InferParameter>) in the REST form, plain JSON
 * values: {"priority": 1, "binary_data": true, "tag": "a"} (inferjson.h).
 */
#include "inferjson.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A plain JSON value -> an InferParameter: true/false, an integer, a real
 * (an integral one beyond int64 as uint64) or a string. */
static Inference__InferParameter *param_from_json(jsonpath *c, const json_t *v)
{
    Inference__InferParameter *p = malloc(sizeof *p);
    if (!p) {
        jsonpath_fail(c, "out of memory");
        return NULL;
    }
    inference__infer_parameter__init(p);
    if (json_is_boolean(v)) {
        p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM;
        p->bool_param = json_is_true(v);
    } else if (json_is_integer(v)) {
        p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
        p->int64_param = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && d >= 9223372036854775808.0 && d < 18446744073709551616.0) {
            p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM;
            p->uint64_param = (uint64_t)d;
        } else {
            p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM;
            p->double_param = d;
        }
    } else if (json_is_string(v)) {
        p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
        if (!(p->string_param = strdup(json_string_value(v)))) {
            free(p);
            jsonpath_fail(c, "out of memory");
            return NULL;
        }
    } else {
        free(p);
        jsonpath_fail(c, "expected a bool, a number or a string, got %s", jsonpath_kind(v));
        return NULL;
    }
    return p;
}

static json_t *param_to_json(const Inference__InferParameter *p)
{
    switch (p->parameter_choice_case) {
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM:
        return json_boolean(p->bool_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM:
        return json_integer(p->int64_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM:
        return json_string(p->string_param ? p->string_param : "");
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM:
        return isfinite(p->double_param) ? json_real(p->double_param) : json_null();
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM:
        return p->uint64_param <= INT64_MAX ? json_integer((json_int_t)p->uint64_param)
                                            : json_real((double)p->uint64_param);
    default: return json_null();
    }
}

/* "parameters" of a request, input or output -> its map entries (of type
 * entry, a map<string, InferParameter> entry), leaving out the key skip.
 * The path is the parameters object's. The array is owned by the message
 * as soon as it is set, so a failure leaves nothing to free. */
int inferjson_params_from_json(jsonpath *c, const json_t *obj,
                               const ProtobufCMessageDescriptor *entry, const char *skip,
                               inferjson_param ***out, size_t *n_out)
{
    size_t n = json_object_size(obj);
    *out = calloc(n ? n : 1, sizeof **out);
    if (!*out)
        return jsonpath_fail(c, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        if (skip && !strcmp(key, skip))
            continue;
        size_t old = jsonpath_key(c, key);
        inferjson_param *e = malloc(entry->sizeof_message);
        if (!e)
            return jsonpath_fail(c, "out of memory");
        entry->message_init(&e->base);
        (*out)[(*n_out)++] = e;
        if (!(e->key = strdup(key)))
            return jsonpath_fail(c, "out of memory");
        if (!(e->value = param_from_json(c, val)))
            return -1;
        jsonpath_pop(c, old);
    }
    return 0;
}

/* A bool parameter of a map, or dflt when absent or not a bool. */
bool inferjson_param_bool(inferjson_param *const *params, size_t n, const char *key, bool dflt)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(params[i]->key, key) && params[i]->value &&
            params[i]->value->parameter_choice_case ==
                INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM)
            return params[i]->value->bool_param;
    return dflt;
}

/* A parameters map -> a JSON object (NULL on out of memory). */
json_t *inferjson_params_json(inferjson_param *const *params, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++)
        if (params[i]->key && params[i]->value &&
            json_object_set_new(o, params[i]->key, param_to_json(params[i]->value))) {
            json_decref(o);
            return NULL;
        }
    return o;
}
