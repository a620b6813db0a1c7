/* schema.c -- a small JSON Schema validator: the subset of schema.h.
 *
 * Servers check a request's params against the schema its method
 * registered before the handler runs.  A full JSON Schema implementation
 * ($ref, formats, regular expressions, combinators) is far larger than
 * what method params need, so this one knows a documented subset and
 * refuses the rest when the schema is registered (rrpc__schema_check):
 * a keyword silently ignored would let through params its author meant
 * to refuse.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/schema.h"

#include <rrpc/rrpc.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Deeper schemas or values are refused rather than walked: the stack
 * must stay bounded whatever a peer sends. */
#define MAX_DEPTH 64

static const char *const TYPES[] = {"null",   "boolean", "integer", "number",
                                    "string", "array",   "object"};
static const char *const ANNOTATIONS[] = {"title", "description", "default", "examples",
                                          "$comment"};

/* A JSON path being walked: "params.a[2]", grown and cut back in place. */
typedef struct path {
    char text[256];
    size_t len;
} path;

/* Appends S (N bytes) to P, cut to what fits, as snprintf would cut it
 * (by hand: snprintf for every parameter was a tenth of a worker's
 * instructions with calc-server's schemas). */
static void path_append(path *p, const char *s, size_t n)
{
    size_t room = sizeof p->text - p->len;
    size_t take = n < room ? n : room - 1;
    memcpy(p->text + p->len, s, take);
    p->len += take;
    p->text[p->len] = '\0';
}

static size_t path_push_key(path *p, const char *key)
{
    size_t was = p->len;
    path_append(p, ".", 1);
    if (p->len > was)
        path_append(p, key, strlen(key));
    return was;
}

static size_t path_push_index(path *p, size_t i)
{
    size_t was = p->len;
    char num[32], *at = num + sizeof num;
    *--at = ']';
    do
        *--at = (char)('0' + i % 10);
    while ((i /= 10) != 0);
    *--at = '[';
    path_append(p, at, (size_t)(num + sizeof num - at));
    return was;
}

/* Writes "PATH: WHY" into ERR; a long path loses its middle, so that
 * the reason always fits. */
static void path_message(const path *p, const char *why, char *err, size_t errlen)
{
    if (err == NULL || errlen == 0)
        return;
    if (p->len <= 120)
        snprintf(err, errlen, "%s: %s", p->text, why);
    else
        snprintf(err, errlen, "%.50s...%s: %s", p->text, p->text + p->len - 60, why);
}

static void path_pop(path *p, size_t was)
{
    p->len = was;
    p->text[was] = '\0';
}

static void path_init(path *p, const char *root)
{
    p->len = 0;
    path_append(p, root, strlen(root));
}

static int in_list(const char *word, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(word, list[i]) == 0)
            return 1;
    return 0;
}

#define IN(word, list) in_list(word, list, sizeof list / sizeof list[0])

/* ---- checking a schema --------------------------------------------------- */

typedef struct checker {
    path at;
    char *err;
    size_t errlen;
} checker;

static int refuse(checker *c, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    path_message(&c->at, why, c->err, c->errlen);
    return RRPC_EINVAL;
}

static int check_schema(checker *c, const json_t *schema, int depth);

static int check_type(checker *c, const json_t *type)
{
    if (json_is_string(type))
        return IN(json_string_value(type), TYPES)
                   ? RRPC_OK
                   : refuse(c, "unknown type '%s'", json_string_value(type));
    if (!json_is_array(type) || json_array_size(type) == 0)
        return refuse(c, "type must be a type name or a non-empty array of them");
    size_t i;
    const json_t *t;
    json_array_foreach(type, i, t)
    {
        if (!json_is_string(t) || !IN(json_string_value(t), TYPES))
            return refuse(c, "type: unknown type at %zu", i);
    }
    return RRPC_OK;
}

static int check_count(checker *c, const char *key, const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) >= 0
               ? RRPC_OK
               : refuse(c, "%s must be a non-negative integer", key);
}

static int check_properties(checker *c, const json_t *props, int depth)
{
    if (!json_is_object(props))
        return refuse(c, "properties must be an object");
    const char *name;
    const json_t *sub;
    json_object_foreach((json_t *)props, name, sub)
    {
        size_t was = path_push_key(&c->at, "properties");
        path_push_key(&c->at, name);
        int rc = check_schema(c, sub, depth + 1);
        path_pop(&c->at, was);
        if (rc != RRPC_OK)
            return rc;
    }
    return RRPC_OK;
}

static int check_required(checker *c, const json_t *req)
{
    size_t i;
    const json_t *r;
    if (!json_is_array(req))
        return refuse(c, "required must be an array of member names");
    json_array_foreach(req, i, r)
    {
        if (!json_is_string(r))
            return refuse(c, "required must be an array of member names");
    }
    return RRPC_OK;
}

static int check_sub(checker *c, const char *key, const json_t *sub, int depth)
{
    size_t was = path_push_key(&c->at, key);
    int rc = check_schema(c, sub, depth + 1);
    path_pop(&c->at, was);
    return rc;
}

/* One keyword KEY with value V of a schema object. */
static int check_keyword(checker *c, const char *key, const json_t *v, int depth)
{
    if (strcmp(key, "type") == 0)
        return check_type(c, v);
    if (strcmp(key, "properties") == 0)
        return check_properties(c, v, depth);
    if (strcmp(key, "required") == 0)
        return check_required(c, v);
    if (strcmp(key, "items") == 0)
        return json_is_array(v) ? refuse(c, "items must be one schema (the tuple form is not "
                                            "supported)")
                                : check_sub(c, key, v, depth);
    if (strcmp(key, "additionalProperties") == 0)
        return check_sub(c, key, v, depth);
    if (strcmp(key, "enum") == 0)
        return json_is_array(v) && json_array_size(v) > 0
                   ? RRPC_OK
                   : refuse(c, "enum must be a non-empty array");
    if (strcmp(key, "minimum") == 0 || strcmp(key, "maximum") == 0)
        return json_is_number(v) ? RRPC_OK : refuse(c, "%s must be a number", key);
    if (strcmp(key, "minLength") == 0 || strcmp(key, "maxLength") == 0 ||
        strcmp(key, "minItems") == 0 || strcmp(key, "maxItems") == 0)
        return check_count(c, key, v);
    if (IN(key, ANNOTATIONS))
        return RRPC_OK;
    return refuse(c, "unsupported keyword '%s'", key);
}

static int check_schema(checker *c, const json_t *schema, int depth)
{
    if (depth > MAX_DEPTH)
        return refuse(c, "nested more than %d deep", MAX_DEPTH);
    if (json_is_boolean(schema))
        return RRPC_OK;
    if (!json_is_object(schema))
        return refuse(c, "a schema must be an object or a boolean");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)schema, key, v)
    {
        int rc = check_keyword(c, key, v, depth);
        if (rc != RRPC_OK)
            return rc;
    }
    const json_t *lo = json_object_get(schema, "minimum"), *hi = json_object_get(schema, "maximum");
    if (lo && hi && json_number_value(lo) > json_number_value(hi))
        return refuse(c, "minimum is above maximum");
    return RRPC_OK;
}

int rrpc__schema_check(const json_t *schema, const char *where, char *err, size_t errlen)
{
    checker c = {.err = err, .errlen = errlen};
    path_init(&c.at, where ? where : "schema");
    if (schema == NULL)
        return refuse(&c, "no schema");
    return check_schema(&c, schema, 0);
}

/* ---- validating a value -------------------------------------------------- */

typedef struct validator {
    path at;
    char *err;
    size_t errlen;
} validator;

static int invalid(validator *v, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    path_message(&v->at, why, v->err, v->errlen);
    return -1;
}

static int validate(validator *v, const json_t *schema, const json_t *value, int depth);

/* JSON Schema counts 1.0 as an integer: the value, not its spelling. */
static int is_type(const char *type, const json_t *value)
{
    switch (type[0]) {
    case 'n': return type[1] == 'u' && type[2] == 'l' ? json_is_null(value) : json_is_number(value);
    case 'b': return json_is_boolean(value);
    case 'i':
        return json_is_integer(value) ||
               (json_is_real(value) && json_real_value(value) == floor(json_real_value(value)));
    case 's': return json_is_string(value);
    case 'a': return json_is_array(value);
    case 'o': return json_is_object(value);
    }
    return 0;
}

static int validate_type(validator *v, const json_t *type, const json_t *value)
{
    if (json_is_string(type))
        return is_type(json_string_value(type), value)
                   ? 0
                   : invalid(v, "expected %s", json_string_value(type));
    size_t i;
    const json_t *t;
    char names[160] = "";
    json_array_foreach(type, i, t)
    {
        if (is_type(json_string_value(t), value))
            return 0;
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", i ? " or " : "", json_string_value(t));
    }
    return invalid(v, "expected %s", names);
}

/* Characters, not bytes: the value is valid UTF-8 (jansson checked). */
static size_t utf8_length(const char *s, size_t bytes)
{
    size_t n = 0;
    for (size_t i = 0; i < bytes; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static json_int_t count_of(const json_t *schema, const char *key)
{
    const json_t *v = json_object_get(schema, key);
    return v ? json_integer_value(v) : -1;
}

static int validate_number(validator *v, const json_t *schema, const json_t *value)
{
    if (!json_is_number(value))
        return 0;
    const json_t *lo = json_object_get(schema, "minimum"), *hi = json_object_get(schema, "maximum");
    double x = json_number_value(value);
    if (lo && x < json_number_value(lo))
        return invalid(v, "below the minimum %g", json_number_value(lo));
    if (hi && x > json_number_value(hi))
        return invalid(v, "above the maximum %g", json_number_value(hi));
    return 0;
}

static int validate_string(validator *v, const json_t *schema, const json_t *value)
{
    if (!json_is_string(value))
        return 0;
    json_int_t lo = count_of(schema, "minLength"), hi = count_of(schema, "maxLength");
    size_t n = utf8_length(json_string_value(value), json_string_length(value));
    if (lo >= 0 && n < (size_t)lo)
        return invalid(v, "shorter than %lld characters", (long long)lo);
    if (hi >= 0 && n > (size_t)hi)
        return invalid(v, "longer than %lld characters", (long long)hi);
    return 0;
}

static int validate_array(validator *v, const json_t *schema, const json_t *value, int depth)
{
    if (!json_is_array(value))
        return 0;
    json_int_t lo = count_of(schema, "minItems"), hi = count_of(schema, "maxItems");
    size_t n = json_array_size(value);
    if (lo >= 0 && n < (size_t)lo)
        return invalid(v, "fewer than %lld items", (long long)lo);
    if (hi >= 0 && n > (size_t)hi)
        return invalid(v, "more than %lld items", (long long)hi);
    const json_t *items = json_object_get(schema, "items");
    for (size_t i = 0; items && i < n; i++) {
        size_t was = path_push_index(&v->at, i);
        int rc = validate(v, items, json_array_get(value, i), depth + 1);
        path_pop(&v->at, was);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* A member NAME (VALUE) against SUB, at path ...NAME. */
static int validate_member(validator *v, const char *name, const json_t *sub, const json_t *value,
                           int depth)
{
    size_t was = path_push_key(&v->at, name);
    int rc = validate(v, sub, value, depth + 1);
    path_pop(&v->at, was);
    return rc;
}

static int validate_object(validator *v, const json_t *schema, const json_t *value, int depth)
{
    if (!json_is_object(value))
        return 0;
    const json_t *req = json_object_get(schema, "required"), *r;
    size_t i;
    json_array_foreach(req, i, r)
    {
        if (json_object_get(value, json_string_value(r)) == NULL) {
            size_t was = path_push_key(&v->at, json_string_value(r));
            invalid(v, "missing");
            path_pop(&v->at, was);
            return -1;
        }
    }
    const json_t *props = json_object_get(schema, "properties");
    const json_t *extra = json_object_get(schema, "additionalProperties");
    const char *name;
    const json_t *member;
    json_object_foreach((json_t *)value, name, member)
    {
        const json_t *sub = json_object_get(props, name);
        if (sub == NULL && json_is_false(extra)) {
            size_t was = path_push_key(&v->at, name);
            invalid(v, "not allowed (no such member)");
            path_pop(&v->at, was);
            return -1;
        }
        if (sub == NULL)
            sub = extra; /* NULL or a schema: a boolean true lets anything by */
        if (sub != NULL && validate_member(v, name, sub, member, depth) != 0)
            return -1;
    }
    return 0;
}

static int validate_enum(validator *v, const json_t *choices, const json_t *value)
{
    size_t i;
    const json_t *c;
    json_array_foreach(choices, i, c)
    {
        if (json_equal(c, value))
            return 0;
    }
    return invalid(v, "not one of the allowed values");
}

static int validate(validator *v, const json_t *schema, const json_t *value, int depth)
{
    if (json_is_true(schema))
        return 0;
    if (json_is_false(schema))
        return invalid(v, "not allowed");
    if (depth > MAX_DEPTH)
        return invalid(v, "nested more than %d deep", MAX_DEPTH);
    const json_t *type = json_object_get(schema, "type");
    const json_t *choices = json_object_get(schema, "enum");
    if ((type && validate_type(v, type, value)) || (choices && validate_enum(v, choices, value)))
        return -1;
    if (validate_number(v, schema, value) || validate_string(v, schema, value) ||
        validate_array(v, schema, value, depth) || validate_object(v, schema, value, depth))
        return -1;
    return 0;
}

int rrpc__schema_validate(const json_t *schema, const json_t *value, const char *root, char *err,
                          size_t errlen)
{
    validator v = {.err = err, .errlen = errlen};
    path_init(&v.at, root ? root : "");
    return validate(&v, schema, value, 0);
}

/* ---- params by position -------------------------------------------------- */

static int describes_by_name(const json_t *schema)
{
    const json_t *type = json_object_get(schema, "type");
    return json_is_string(type) && strcmp(json_string_value(type), "object") == 0;
}

static int is_required(const json_t *schema, const char *name)
{
    size_t i;
    const json_t *r;
    json_array_foreach(json_object_get(schema, "required"), i, r)
    {
        if (strcmp(json_string_value(r), name) == 0)
            return 1;
    }
    return 0;
}

/* PARAMS, an array, against the object SCHEMA's properties in order. */
static int validate_positions(validator *v, const json_t *schema, const json_t *params)
{
    const json_t *props = json_object_get(schema, "properties");
    const json_t *extra = json_object_get(schema, "additionalProperties");
    size_t n = json_array_size(params), i = 0;
    const char *name;
    const json_t *sub;
    json_object_foreach((json_t *)props, name, sub)
    {
        if (i >= n) {
            if (is_required(schema, name))
                return invalid(v, "missing parameter %zu (%s)", i, name);
        } else {
            size_t was = path_push_index(&v->at, i);
            int rc = validate(v, sub, json_array_get(params, i), 1);
            path_pop(&v->at, was);
            if (rc != 0)
                return rc;
        }
        i++;
    }
    for (; i < n; i++) {
        size_t was = path_push_index(&v->at, i);
        int rc = json_is_false(extra)
                     ? invalid(v, "not allowed (at most %zu parameters)", json_object_size(props))
                 : extra ? validate(v, extra, json_array_get(params, i), 1)
                         : 0;
        path_pop(&v->at, was);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int rrpc__schema_validate_params(const json_t *schema, const json_t *params, char *err,
                                 size_t errlen)
{
    validator v = {.err = err, .errlen = errlen};
    path_init(&v.at, "params");
    if (json_is_array(params) && describes_by_name(schema))
        return validate_positions(&v, schema, params);
    if (params != NULL)
        return validate(&v, schema, params, 0);
    json_t *none = json_object(); /* absent params: no parameters, by name */
    int rc = none ? validate(&v, schema, none, 0) : invalid(&v, "out of memory");
    json_decref(none);
    return rc;
}
