/* cmd_describe.c -- `rrpc describe`: what a service offers, from its own
 * answer to the built-in rpc.discover (docs/PROTOCOL.md section 11).
 *
 * --json prints the OpenRPC document unchanged, for tools that read
 * OpenRPC; without it each method is one signature line with its
 * description, parameters (type and limits from their JSON Schemas) and
 * documented errors.  Everything printed comes from the service, so the
 * readable form goes through cli_safe.
 */
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_TIMEOUT_S 5.0
#define SAFE(buf, text)   cli_safe(buf, sizeof buf, text)

static void usage(FILE *out)
{
    fputs("Usage: rrpc describe [OPTIONS] SERVICE\n"
          "\n"
          "Asks SERVICE what it offers (the built-in call rpc.discover) and prints\n"
          "its methods: parameters with their types and limits, result, description\n"
          "and the application errors they may answer.  --json prints the OpenRPC\n"
          "document as the service sent it.  A worker that does not know\n"
          "rpc.discover answers 'method not found' (exit status 1).\n",
          out);
    ops_print_options(out, OPS_TIMEOUT);
}

/* A schema in a few words: "integer 0..60000", "string|null", "any". */
static void schema_words(char *out, size_t len, const json_t *schema)
{
    const json_t *type = json_object_get(schema, "type");
    size_t used = 0;
    out[0] = '\0';
    if (json_is_string(type)) {
        used = (size_t)snprintf(out, len, "%s", json_string_value(type));
    } else if (json_is_array(type)) {
        size_t i;
        const json_t *t;
        json_array_foreach(type, i, t)
        {
            if (used < len)
                used += (size_t)snprintf(out + used, len - used, "%s%s", i ? "|" : "",
                                         json_string_value(t) ? json_string_value(t) : "?");
        }
    } else if (json_object_get(schema, "enum") == NULL) {
        used = (size_t)snprintf(out, len, "any");
    }
    const json_t *lo = json_object_get(schema, "minimum"), *hi = json_object_get(schema, "maximum");
    if ((lo || hi) && used < len)
        used += (size_t)snprintf(out + used, len - used, " %s%g..%s%g", lo ? "" : "(",
                                 lo ? json_number_value(lo) : 0, hi ? "" : "(",
                                 hi ? json_number_value(hi) : 0);
    const json_t *choices = json_object_get(schema, "enum");
    if (choices && used < len) {
        char *text = json_dumps(choices, JSON_COMPACT);
        used += (size_t)snprintf(out + used, len - used, "%sone of %s", used ? " " : "",
                                 text ? text : "?");
        free(text);
    }
}

static void print_signature(const json_t *m)
{
    char name[256], words[256], line[1024];
    size_t used = (size_t)snprintf(line, sizeof line, "%s(",
                                   SAFE(name, json_string_value(json_object_get(m, "name"))));
    size_t i;
    const json_t *p;
    json_array_foreach(json_object_get(m, "params"), i, p)
    {
        schema_words(words, sizeof words, json_object_get(p, "schema"));
        if (used < sizeof line)
            used +=
                (size_t)snprintf(line + used, sizeof line - used, "%s%s%s: %s", i ? ", " : "",
                                 SAFE(name, json_string_value(json_object_get(p, "name"))),
                                 json_is_true(json_object_get(p, "required")) ? "" : "?", words);
    }
    schema_words(words, sizeof words, json_object_get(json_object_get(m, "result"), "schema"));
    printf("%s) -> %s\n", line, words);
}

static void print_method(const json_t *m)
{
    char text[1024];
    print_signature(m);
    const char *description = json_string_value(json_object_get(m, "description"));
    if (description)
        printf("    %s\n", SAFE(text, description));
    size_t i;
    const json_t *p;
    json_array_foreach(json_object_get(m, "params"), i, p)
    {
        const char *about = json_string_value(json_object_get(p, "description"));
        char name[256];
        if (about)
            printf("    %s: %s\n", SAFE(name, json_string_value(json_object_get(p, "name"))),
                   SAFE(text, about));
    }
    json_array_foreach(json_object_get(m, "errors"), i, p)
    {
        printf("    error %lld: %s\n", ops_int(p, "code"),
               SAFE(text, json_string_value(json_object_get(p, "message"))));
    }
}

static void print_document(const char *service, const json_t *doc)
{
    char a[256], b[64], c[64];
    const json_t *info = json_object_get(doc, "info");
    const json_t *methods = json_object_get(doc, "methods");
    printf("service %s: %zu method%s (OpenRPC %s, version %s)\n", SAFE(a, service),
           json_array_size(methods), json_array_size(methods) == 1 ? "" : "s",
           SAFE(b, json_string_value(json_object_get(doc, "openrpc"))),
           SAFE(c, json_string_value(json_object_get(info, "version"))));
    size_t i;
    const json_t *m;
    json_array_foreach(methods, i, m)
    {
        putchar('\n');
        print_method(m);
    }
}

int cmd_describe(int argc, char **argv)
{
    const char *prog = argv[0];
    struct ops_args args;
    int status = ops_parse(argc, argv, OPS_TIMEOUT, 1, 1, &args);
    if (status != CLI_EXIT_OK || args.help) {
        if (args.help)
            usage(stdout);
        return status;
    }
    const char *service = args.operands[0];
    rrpc_client *client = NULL;
    if ((status = cli_open_client(prog, &args.conn, &client)) != CLI_EXIT_OK)
        return status;
    json_t *doc = NULL, *error = NULL;
    int err = rrpc_call(client, service, "rpc.discover", NULL,
                        args.timeout_s > 0 ? args.timeout_s : DEFAULT_TIMEOUT_S, &doc, &error);
    if (err == RRPC_EREMOTE) {
        char msg[512];
        fprintf(stderr, "%s: %s answered error %lld: %s\n", prog, SAFE(msg, service),
                ops_int(error, "code"),
                cli_safe(msg, sizeof msg, json_string_value(json_object_get(error, "message"))));
        status = CLI_EXIT_REMOTE;
    } else if (err != RRPC_OK) {
        status = cli_report_failure(prog, client, err);
    } else if (!json_is_object(doc) || !json_is_array(json_object_get(doc, "methods"))) {
        fprintf(stderr, "%s: the answer is not an OpenRPC document\n", prog);
        status = CLI_EXIT_INTERNAL;
    } else if (args.json) {
        status = ops_print_json(prog, doc);
    } else {
        print_document(service, doc);
    }
    json_decref(doc);
    json_decref(error);
    rrpc_client_close(client);
    return status;
}
