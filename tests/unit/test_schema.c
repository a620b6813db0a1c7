/* test_schema.c -- unit tests for src/core/schema.c, the JSON Schema
 * subset that servers check params against (rrpc_server_set_schema).
 *
 * Three parts: which schemas are refused at registration and what the
 * refusal says (a keyword outside the subset, a malformed value), which
 * values pass or fail each keyword and the path the failure names, and
 * params by position matched to an object schema's properties.
 */
#include "core/schema.h"

#include "check.h"

#include <rrpc/rrpc.h>

#include <string.h>

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (v == NULL)
        fprintf(stderr, "bad test JSON %s: %s\n", text, e.text);
    return v;
}

/* The schema SCHEMA compiles (WHY NULL) or is refused with WHY. */
static void expect_check(const char *schema, const char *why)
{
    json_t *s = J(schema);
    char err[256] = "";
    int rc = rrpc__schema_check(s, "schema", err, sizeof err);
    if (why == NULL) {
        if (!CHECK_EQ_INT(rc, RRPC_OK))
            fprintf(stderr, "  schema %s: %s\n", schema, err);
    } else {
        CHECK_EQ_INT(rc, RRPC_EINVAL);
        CHECK_EQ_STR(err, why);
    }
    json_decref(s);
}

/* VALUE against SCHEMA at root "params": valid (WHY NULL) or WHY. */
static void expect_value(const char *schema, const char *value, const char *why)
{
    json_t *s = J(schema), *v = J(value);
    char err[256] = "";
    CHECK_EQ_INT(rrpc__schema_check(s, "schema", err, sizeof err), RRPC_OK);
    int rc = rrpc__schema_validate(s, v, "params", err, sizeof err);
    if (why == NULL) {
        if (!CHECK_EQ_INT(rc, 0))
            fprintf(stderr, "  %s against %s: %s\n", value, schema, err);
    } else {
        if (!CHECK_EQ_INT(rc, -1))
            fprintf(stderr, "  %s against %s passed\n", value, schema);
        else
            CHECK_EQ_STR(err, why);
    }
    json_decref(s);
    json_decref(v);
}

/* PARAMS (NULL: absent) against a method's params SCHEMA. */
static void expect_params(const char *schema, const char *params, const char *why)
{
    json_t *s = J(schema), *p = params ? J(params) : NULL;
    char err[256] = "";
    int rc = rrpc__schema_validate_params(s, p, err, sizeof err);
    if (why == NULL) {
        if (!CHECK_EQ_INT(rc, 0))
            fprintf(stderr, "  params %s: %s\n", params ? params : "(absent)", err);
    } else if (CHECK_EQ_INT(rc, -1)) {
        CHECK_EQ_STR(err, why);
    }
    json_decref(s);
    json_decref(p);
}

static void test_refused_schemas(void)
{
    expect_check("{}", NULL);
    expect_check("true", NULL);
    expect_check("false", NULL);
    expect_check("{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\", "
                 "\"minimum\": 0, \"maximum\": 9, \"description\": \"a digit\"}}, "
                 "\"required\": [\"a\"], \"additionalProperties\": false}",
                 NULL);
    expect_check("{\"type\": [\"string\", \"null\"], \"minLength\": 1, \"maxLength\": 3}", NULL);
    expect_check("{\"items\": {\"enum\": [1, \"x\", null]}, \"minItems\": 0, \"maxItems\": 4}",
                 NULL);
    /* Outside the subset: refused, not ignored. */
    expect_check("{\"type\": \"string\", \"pattern\": \"^a\"}",
                 "schema: unsupported keyword 'pattern'");
    expect_check("{\"properties\": {\"a\": {\"$ref\": \"#/x\"}}}",
                 "schema.properties.a: unsupported keyword '$ref'");
    expect_check("{\"oneOf\": []}", "schema: unsupported keyword 'oneOf'");
    /* Malformed. */
    expect_check("42", "schema: a schema must be an object or a boolean");
    expect_check("{\"type\": \"int\"}", "schema: unknown type 'int'");
    expect_check("{\"type\": []}", "schema: type must be a type name or a non-empty array of them");
    expect_check("{\"type\": [\"string\", 3]}", "schema: type: unknown type at 1");
    expect_check("{\"properties\": []}", "schema: properties must be an object");
    expect_check("{\"required\": [\"a\", 1]}", "schema: required must be an array of member names");
    expect_check("{\"items\": [{}, {}]}",
                 "schema: items must be one schema (the tuple form is not supported)");
    expect_check("{\"items\": 3}", "schema.items: a schema must be an object or a boolean");
    expect_check("{\"enum\": []}", "schema: enum must be a non-empty array");
    expect_check("{\"minimum\": \"0\"}", "schema: minimum must be a number");
    expect_check("{\"maxLength\": -1}", "schema: maxLength must be a non-negative integer");
    expect_check("{\"minItems\": 1.5}", "schema: minItems must be a non-negative integer");
    expect_check("{\"minimum\": 5, \"maximum\": 1}", "schema: minimum is above maximum");
    expect_check("{\"additionalProperties\": \"no\"}",
                 "schema.additionalProperties: a schema must be an object or a boolean");
    /* Nested without end: refused, with a bounded stack. */
    char deep[2000] = "";
    for (int i = 0; i < 70; i++)
        strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 70; i++)
        strcat(deep, "}");
    json_t *s = J(deep);
    char err[256];
    CHECK_EQ_INT(rrpc__schema_check(s, "schema", err, sizeof err), RRPC_EINVAL);
    CHECK(strstr(err, "nested more than 64 deep") != NULL);
    json_decref(s);
    CHECK_EQ_INT(rrpc__schema_check(NULL, "schema", err, sizeof err), RRPC_EINVAL);
}

static void test_keywords(void)
{
    expect_value("{\"type\": \"integer\"}", "3", NULL);
    expect_value("{\"type\": \"integer\"}", "3.0", NULL); /* the value, not its spelling */
    expect_value("{\"type\": \"integer\"}", "3.5", "params: expected integer");
    expect_value("{\"type\": \"number\"}", "3", NULL);
    expect_value("{\"type\": \"number\"}", "\"3\"", "params: expected number");
    expect_value("{\"type\": \"null\"}", "null", NULL);
    expect_value("{\"type\": \"boolean\"}", "0", "params: expected boolean");
    expect_value("{\"type\": [\"string\", \"null\"]}", "1", "params: expected string or null");
    expect_value("{\"enum\": [1, \"x\"]}", "\"x\"", NULL);
    expect_value("{\"enum\": [1, \"x\"]}", "2", "params: not one of the allowed values");
    expect_value("{\"minimum\": 0, \"maximum\": 60000}", "60000", NULL);
    expect_value("{\"minimum\": 0}", "-1", "params: below the minimum 0");
    expect_value("{\"maximum\": 1.5}", "2", "params: above the maximum 1.5");
    expect_value("{\"minimum\": 0}", "\"-1\"", NULL); /* applies to numbers only */
    expect_value("{\"minLength\": 2, \"maxLength\": 2}", "\"\u00e9\u00e9\"", NULL); /* chars */
    expect_value("{\"minLength\": 2}", "\"a\"", "params: shorter than 2 characters");
    expect_value("{\"maxLength\": 1}", "\"ab\"", "params: longer than 1 characters");
    expect_value("{\"minItems\": 1}", "[]", "params: fewer than 1 items");
    expect_value("{\"maxItems\": 1}", "[1, 2]", "params: more than 1 items");
    expect_value("{\"items\": {\"type\": \"string\"}}", "[\"a\", 2]", "params[1]: expected string");
    expect_value("{\"required\": [\"a\"]}", "{}", "params.a: missing");
    expect_value("{\"properties\": {\"a\": {\"type\": \"object\", \"properties\": {\"b\": "
                 "{\"type\": \"integer\"}}}}}",
                 "{\"a\": {\"b\": \"x\"}}", "params.a.b: expected integer");
    expect_value("{\"properties\": {\"a\": {}}, \"additionalProperties\": false}",
                 "{\"a\": 1, \"c\": 2}", "params.c: not allowed (no such member)");
    expect_value("{\"additionalProperties\": {\"type\": \"integer\"}}", "{\"c\": \"x\"}",
                 "params.c: expected integer");
    expect_value("{\"properties\": {\"a\": false}}", "{\"a\": 1}", "params.a: not allowed");
    expect_value("true", "{\"anything\": [1]}", NULL);
    /* A value nested deeper than any schema: walked only as far as the schema. */
    expect_value("{\"type\": \"array\"}", "[[[[[[[[[[1]]]]]]]]]]", NULL);
}

#define AB                                                                                         \
    "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"number\"}, \"b\": {\"type\": "    \
    "\"integer\"}}, \"required\": [\"a\", \"b\"], \"additionalProperties\": false}"

static void test_params(void)
{
    expect_params(AB, "{\"a\": 1.5, \"b\": 2}", NULL);
    expect_params(AB, "[1.5, 2]", NULL);
    expect_params(AB, "{\"a\": 1, \"b\": \"2\"}", "params.b: expected integer");
    expect_params(AB, "[1, \"2\"]", "params[1]: expected integer");
    expect_params(AB, "[1]", "params: missing parameter 1 (b)");
    expect_params(AB, "{\"a\": 1}", "params.b: missing");
    expect_params(AB, "[1, 2, 3]", "params[2]: not allowed (at most 2 parameters)");
    expect_params(AB, NULL, "params.a: missing");
    expect_params("{\"type\": \"object\"}", NULL, NULL);
    expect_params("{\"type\": \"object\"}", "[1, \"x\"]", NULL); /* extras allowed */
    expect_params("{\"type\": \"object\", \"properties\": {\"a\": {}}, \"additionalProperties\": "
                  "{\"type\": \"string\"}}",
                  "[1, 2]", "params[1]: expected string");
    /* Not described by name: the params themselves. */
    expect_params("{\"type\": \"array\", \"maxItems\": 1}", "[1, 2]", "params: more than 1 items");
    expect_params("{\"type\": \"array\"}", "{}", "params: expected array");
}

int main(void)
{
    test_refused_schemas();
    test_keywords();
    test_params();
    return check_report();
}
