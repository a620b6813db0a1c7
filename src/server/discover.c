/* discover.c -- a server's methods described and checked: JSON Schemas
 * (rrpc_server_set_schema), documented errors, interceptors, and the
 * built-in rpc.discover, which answers with an OpenRPC document
 * (docs/PROTOCOL.md section 11).
 *
 * The params check is an interceptor of the library's own, added with the
 * first schema and kept innermost, so a server that registers no schema
 * runs exactly as before, and the caller's interceptors (authorisation)
 * judge a call before its params are.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/discover.h"

#include "core/internal.h"
#include "core/schema.h"
#include "server/record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The version of the OpenRPC specification the document follows. */
#define OPENRPC_VERSION "1.3.2"

/* ---- the params check ---------------------------------------------------- */

/* Refuses params that do not match the method's schema with -32602,
 * naming the first failing path in the message and in data.path. */
static int check_params(rrpc_request *req, void *udata)
{
    (void)udata;
    const rrpc__method *m = rrpc__request_entry(req);
    char why[300];
    if (m == NULL || m->params_schema == NULL ||
        rrpc__schema_validate_params(m->params_schema, rrpc_request_params(req), why, sizeof why) ==
            0)
        return 0;
    const char *colon = strstr(why, ": ");
    json_t *data = json_pack("{s:s%}", "path", why, (size_t)(colon ? colon - why : 0));
    rrpc_request_error(req, RRPC_JSONRPC_INVALID_PARAMS, why, data);
    return 1;
}

static int has_params_check(const rrpc__methods *methods)
{
    for (size_t i = 0; i < methods->n_hooks; i++)
        if (methods->hooks[i].before == check_params)
            return 1;
    return 0;
}

/* ---- registration -------------------------------------------------------- */

static int check_one(const char *which, const char *method, const json_t *schema, char *err,
                     size_t errlen)
{
    char why[220];
    if (schema == NULL || rrpc__schema_check(schema, "schema", why, sizeof why) == RRPC_OK)
        return RRPC_OK;
    return rrpc__fail(err, errlen, RRPC_EINVAL, "%s schema of %.60s: %s", which, method, why);
}

static rrpc__method *find_method(rrpc__methods *methods, const char *method, char *err,
                                 size_t errlen)
{
    rrpc__method *m = (rrpc__method *)rrpc__methods_find(methods, method);
    if (m == NULL)
        rrpc__fail(err, errlen, RRPC_EINVAL, "no method '%.100s' is registered", method);
    return m;
}

int rrpc__discover_set_schema(rrpc__methods *methods, const char *method,
                              const json_t *params_schema, const json_t *result_schema, char *err,
                              size_t errlen)
{
    rrpc__method *m = find_method(methods, method, err, errlen);
    if (m == NULL)
        return RRPC_EINVAL;
    int rc = check_one("params", method, params_schema, err, errlen);
    if (rc == RRPC_OK)
        rc = check_one("result", method, result_schema, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    json_t *p = params_schema ? json_deep_copy(params_schema) : NULL;
    json_t *r = result_schema ? json_deep_copy(result_schema) : NULL;
    if ((params_schema && p == NULL) || (result_schema && r == NULL) ||
        (p != NULL && !has_params_check(methods) &&
         rrpc__methods_add_hook(methods, check_params, NULL, NULL, 1) != RRPC_OK)) {
        json_decref(p);
        json_decref(r);
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    }
    json_decref(m->params_schema);
    json_decref(m->result_schema);
    m->params_schema = p;
    m->result_schema = r;
    return RRPC_OK;
}

int rrpc__discover_add_error(rrpc__methods *methods, const char *method, int code,
                             const char *message, char *err, size_t errlen)
{
    rrpc__method *m = find_method(methods, method, err, errlen);
    if (m == NULL)
        return RRPC_EINVAL;
    if (message == NULL)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "no message");
    json_t *e = json_pack("{s:i, s:s}", "code", code, "message", message);
    if (e == NULL)
        return rrpc__fail(err, errlen, RRPC_EINVAL, "the message is not UTF-8");
    if (m->errors == NULL)
        m->errors = json_array();
    if (m->errors == NULL || json_array_append_new(m->errors, e) != 0)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    return RRPC_OK;
}

/* ---- the OpenRPC document ------------------------------------------------ */

static int is_required(const json_t *schema, const char *name)
{
    size_t i;
    const json_t *r;
    json_array_foreach(json_object_get(schema, "required"), i, r)
    {
        if (json_is_string(r) && strcmp(json_string_value(r), name) == 0)
            return 1;
    }
    return 0;
}

static json_t *descriptor(const char *name, const json_t *schema, int required)
{
    json_t *d = json_pack("{s:s, s:O}", "name", name, "schema", schema);
    const json_t *about = json_object_get(schema, "description");
    if (d && json_is_string(about))
        json_object_set(d, "description", (json_t *)about);
    if (d && required)
        json_object_set_new(d, "required", json_true());
    return d;
}

/* Content descriptors from a params schema of type "object". */
static json_t *params_from_schema(const json_t *schema, json_t *method)
{
    json_t *params = json_array();
    const json_t *type = json_object_get(schema, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "object") != 0) {
        /* Not by name: the whole schema, as an extension. */
        json_object_set(method, "x-rrpc-params-schema", (json_t *)schema);
        return params;
    }
    const char *name;
    json_t *sub;
    json_object_foreach(json_object_get(schema, "properties"), name, sub)
    {
        json_array_append_new(params, descriptor(name, sub, is_required(schema, name)));
    }
    json_object_set_new(method, "paramStructure", json_string("either"));
    return params;
}

/* Content descriptors from an informal shape of rrpc_server_set_params:
 * {"a": "number"} or ["ms"]; a type name becomes a schema. */
static json_t *params_from_shape(const json_t *shape, json_t *method)
{
    json_t *params = json_array();
    static const char *const types[] = {"null",   "boolean", "integer", "number",
                                        "string", "array",   "object"};
    const char *name;
    json_t *v;
    size_t i;
    if (json_is_object(shape)) {
        json_object_foreach((json_t *)shape, name, v)
        {
            json_t *schema = json_object();
            for (size_t t = 0; json_is_string(v) && t < sizeof types / sizeof *types; t++)
                if (strcmp(json_string_value(v), types[t]) == 0)
                    json_object_set_new(schema, "type", json_string(types[t]));
            if (json_is_string(v) && json_object_size(schema) == 0)
                json_object_set(schema, "description", v);
            json_array_append_new(params, descriptor(name, schema, 0));
            json_decref(schema);
        }
    } else if (json_is_array(shape)) {
        json_t *any = json_object();
        json_array_foreach(shape, i, v)
        {
            if (json_is_string(v))
                json_array_append_new(params, descriptor(json_string_value(v), any, 0));
        }
        json_decref(any);
    } else if (shape != NULL) {
        json_object_set(method, "x-rrpc-params", (json_t *)shape);
    }
    return params;
}

static json_t *describe_method(const rrpc__method *m, const json_t *shapes)
{
    json_t *method = json_pack("{s:s}", "name", m->name);
    if (method == NULL)
        return NULL;
    if (m->description != NULL)
        json_object_set_new(method, "description", json_string(m->description));
    json_t *params = m->params_schema ? params_from_schema(m->params_schema, method)
                                      : params_from_shape(json_object_get(shapes, m->name), method);
    json_object_set_new(method, "params", params);
    json_t *any = json_object();
    json_object_set_new(method, "result",
                        descriptor("result", m->result_schema ? m->result_schema : any, 0));
    json_decref(any);
    if (m->errors != NULL)
        json_object_set(method, "errors", m->errors);
    return method;
}

json_t *rrpc__discover_document(const rrpc__methods *methods, const char *service,
                                const json_t *shapes)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < methods->count; i++)
        if (strcmp(methods->items[i].name, "rpc.discover") != 0) /* implied, by the spec */
            json_array_append_new(list, describe_method(&methods->items[i], shapes));
    return json_pack("{s:s, s:{s:s, s:s, s:s}, s:o}", "openrpc", OPENRPC_VERSION, "info", "title",
                     service, "version", rrpc_version(), "x-rrpc-version", rrpc_version(),
                     "methods", list);
}

static json_t *rpc_discover(rrpc_request *req, void *udata)
{
    const rrpc__record *r = udata;
    json_t *doc = rrpc__discover_document(r->methods, r->service, r->params);
    return doc ? doc : rrpc_request_error(req, RRPC_JSONRPC_INTERNAL_ERROR, "out of memory", NULL);
}

int rrpc__discover_init(rrpc__record *r)
{
    return rrpc__methods_add(r->methods, "rpc.discover", rpc_discover, r,
                             "built-in: describes the service as an OpenRPC document");
}
