/* schema.h -- a small JSON Schema validator (schema.c), no I/O.
 *
 * The subset (docs/PROTOCOL.md, "rpc.discover"): type, properties,
 * required, items (one schema), enum, minimum, maximum, minLength,
 * maxLength, minItems, maxItems, additionalProperties, and the
 * annotations title, description, default, examples and $comment.  A
 * schema is a JSON object of those keywords, or true / false. */
#ifndef RRPC_SCHEMA_H
#define RRPC_SCHEMA_H

#include <jansson.h>

#include <stddef.h>

/* Checks that SCHEMA is one this validator understands in full.  0, or
 * RRPC_EINVAL with ERR saying where and why ("schema.properties.a:
 * unsupported keyword 'pattern'"): a keyword outside the subset is
 * refused rather than ignored, so a schema never promises a check that
 * is not made.  WHERE names the schema's root in the message. */
int rrpc__schema_check(const json_t *schema, const char *where, char *err, size_t errlen);

/* Validates VALUE against SCHEMA (rrpc__schema_check'ed).  0, or -1 with
 * ERR naming the first failing path from ROOT: "params.b: expected
 * integer". */
int rrpc__schema_validate(const json_t *schema, const json_t *value, const char *root, char *err,
                          size_t errlen);

/* Validates a request's PARAMS (NULL: absent, read as {}) against a
 * method's params SCHEMA.  A schema of type "object" describes the params
 * by name; params by position ([1, 2]) are then matched to its properties
 * in the order the schema lists them ("paramStructure": "either"): the
 * element at i against the i-th property, a missing required one named,
 * extra elements refused when additionalProperties is false.  Paths read
 * "params.b" or "params[1]".  0, or -1 with ERR. */
int rrpc__schema_validate_params(const json_t *schema, const json_t *params, char *err,
                                 size_t errlen);

#endif
