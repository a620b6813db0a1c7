/* calc-server.c -- the calculator service of the post "RPC using Redis",
 * written as an rrpc server.
 *
 * It is both an example of the server API (register handlers, read typed
 * params, answer application errors, run until a signal) and the service
 * the tests and benchmarks call, so its answers are exact: integer
 * arithmetic stays integer, division is always real, and bad params are
 * refused rather than guessed at.
 *
 * Methods (params positional [a, b] or named {"a": .., "b": ..}):
 *   add, subtract, multiply  a op b; an integer if both are integers and
 *                            the result fits, else a real
 *   divide                   a / b as a real; error 1 "division by zero"
 *   echo                     its params, unchanged (null if none)
 *   sleep [ms] / {"ms": ..}  sleeps ms milliseconds (0..60000), returns ms;
 *                            stops early with error -32002 if cancelled
 *   count [n, ms] / {"n", "ms"}  sends 1..n as progress, one every ms
 *                            milliseconds (n 0..100000, ms 0..60000), and
 *                            returns n; stops with -32002 if cancelled
 *   forward [service, method, params] / {"service", "method", "params"}
 *                            calls service.method(params) from inside the
 *                            handler and answers what it answered (an error
 *                            as it came; error 3 if the call failed): a
 *                            nested call, which inherits the deadline and
 *                            continues the trace of the request it serves
 * A result too large for a double answers error 2 "result out of range".
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <rrpc/rrpc.h>

#include "parse_number.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Application error codes: outside JSON-RPC's reserved -32768..-32000. */
enum { CALC_DIVISION_BY_ZERO = 1, CALC_OUT_OF_RANGE = 2, CALC_FORWARD_FAILED = 3 };

enum { MAX_SLEEP_MS = 60000 };

enum arithmetic_op { OP_ADD, OP_SUBTRACT, OP_MULTIPLY };

struct operands {
    json_t *a, *b;         /* as sent: tell integers from reals */
    double a_real, b_real; /* as numbers, whatever their JSON type */
};

/* Reads [a, b] or {"a": .., "b": ..}.  On failure the library has already
 * set a -32602 error naming the culprit, so the handler returns NULL. */
static int read_operands(rrpc_request *req, struct operands *ops)
{
    if (rrpc_param_count_max(req, 2) != RRPC_OK ||
        rrpc_param_number(req, 0, "a", &ops->a_real) != RRPC_OK ||
        rrpc_param_number(req, 1, "b", &ops->b_real) != RRPC_OK)
        return -1;
    /* Both exist and are numbers now, so these cannot fail. */
    rrpc_param_json(req, 0, "a", &ops->a);
    rrpc_param_json(req, 1, "b", &ops->b);
    return 0;
}

/* Returns nonzero and stores the exact result if it fits a json_int_t.
 * The GCC/Clang builtins detect overflow exactly, which portable C11
 * cannot do without a page of range checks (C23 calls them ckd_add...). */
static int exact_integer(enum arithmetic_op op, json_int_t a, json_int_t b, json_int_t *out)
{
    switch (op) {
    case OP_ADD: return !__builtin_add_overflow(a, b, out);
    case OP_SUBTRACT: return !__builtin_sub_overflow(a, b, out);
    case OP_MULTIPLY: return !__builtin_mul_overflow(a, b, out);
    }
    return 0;
}

static double real_arithmetic(enum arithmetic_op op, double a, double b)
{
    switch (op) {
    case OP_ADD: return a + b;
    case OP_SUBTRACT: return a - b;
    case OP_MULTIPLY: return a * b;
    }
    return NAN;
}

/* JSON has no infinity (json_real() refuses it), so say why instead. */
static json_t *real_result(rrpc_request *req, double value)
{
    if (!isfinite(value))
        return rrpc_request_error(req, CALC_OUT_OF_RANGE, "result out of range", NULL);
    return json_real(value);
}

static json_t *arithmetic(rrpc_request *req, enum arithmetic_op op)
{
    struct operands ops;
    json_int_t exact;
    if (read_operands(req, &ops) != 0)
        return NULL;
    if (json_is_integer(ops.a) && json_is_integer(ops.b) &&
        exact_integer(op, json_integer_value(ops.a), json_integer_value(ops.b), &exact))
        return json_integer(exact);
    return real_result(req, real_arithmetic(op, ops.a_real, ops.b_real));
}

static json_t *calc_add(rrpc_request *req, void *udata)
{
    (void)udata;
    return arithmetic(req, OP_ADD);
}

static json_t *calc_subtract(rrpc_request *req, void *udata)
{
    (void)udata;
    return arithmetic(req, OP_SUBTRACT);
}

static json_t *calc_multiply(rrpc_request *req, void *udata)
{
    (void)udata;
    return arithmetic(req, OP_MULTIPLY);
}

static json_t *calc_divide(rrpc_request *req, void *udata)
{
    struct operands ops;
    (void)udata;
    if (read_operands(req, &ops) != 0)
        return NULL;
    if (ops.b_real == 0)
        return rrpc_request_error(req, CALC_DIVISION_BY_ZERO, "division by zero", NULL);
    return real_result(req, ops.a_real / ops.b_real);
}

static json_t *calc_echo(rrpc_request *req, void *udata)
{
    json_t *params = rrpc_request_params(req);
    (void)udata;
    /* params is borrowed; the result must be a reference of our own. */
    return params ? json_incref(params) : json_null();
}

static void sleep_ms(json_int_t ms)
{
    struct timespec left = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    /* The signal that stops the server may land on this thread; finish the
     * sleep anyway, since stopping is graceful and the caller asked for ms. */
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

/* Sleeps MS milliseconds in short steps, looking for a cancel between
 * them (rrpc_request_cancelled: a flag read for requests that cannot be
 * cancelled).  Returns nonzero if the caller cancelled. */
#define CANCEL_STEP_MS 20
static int sleep_unless_cancelled(rrpc_request *req, json_int_t ms)
{
    for (;;) {
        if (rrpc_request_cancelled(req))
            return 1;
        if (ms <= 0)
            return 0;
        json_int_t step = ms < CANCEL_STEP_MS ? ms : CANCEL_STEP_MS;
        sleep_ms(step);
        ms -= step;
    }
}

static json_t *cancelled(rrpc_request *req)
{
    return rrpc_request_error(req, RRPC_JSONRPC_CANCELLED, "Cancelled", NULL);
}

static json_t *calc_sleep(rrpc_request *req, void *udata)
{
    json_int_t ms;
    (void)udata;
    if (rrpc_param_count_max(req, 1) != RRPC_OK || rrpc_param_int(req, 0, "ms", &ms) != RRPC_OK)
        return NULL;
    if (ms < 0 || ms > MAX_SLEEP_MS)
        return rrpc_request_error(req, RRPC_JSONRPC_INVALID_PARAMS,
                                  "ms must be between 0 and 60000", NULL);
    if (sleep_unless_cancelled(req, ms))
        return cancelled(req);
    return json_integer(ms);
}

#define MAX_COUNT 100000
static json_t *calc_count(rrpc_request *req, void *udata)
{
    json_int_t n, ms;
    (void)udata;
    if (rrpc_param_count_max(req, 2) != RRPC_OK || rrpc_param_int(req, 0, "n", &n) != RRPC_OK ||
        rrpc_param_int(req, 1, "ms", &ms) != RRPC_OK)
        return NULL;
    if (n < 0 || n > MAX_COUNT || ms < 0 || ms > MAX_SLEEP_MS)
        return rrpc_request_error(req, RRPC_JSONRPC_INVALID_PARAMS,
                                  "n must be between 0 and 100000, ms between 0 and 60000", NULL);
    for (json_int_t i = 1; i <= n; i++) {
        if (sleep_unless_cancelled(req, ms))
            return cancelled(req);
        json_t *v = json_integer(i);
        int err = rrpc_request_progress(req, v); /* sends nothing unless the caller asked */
        json_decref(v);
        if (err != RRPC_OK)
            return rrpc_request_error(req, RRPC_JSONRPC_INTERNAL_ERROR, "progress not sent",
                                      json_string(rrpc_strerror(err)));
    }
    return json_integer(n);
}

/* --- forward: a call made from inside a handler ----------------------- */

/* A sync client is one thread's: each worker opens its own on its first
 * forward, and the key's destructor closes it when the worker ends. */
static pthread_key_t forward_client_key;
static pthread_once_t forward_key_once = PTHREAD_ONCE_INIT;

static void close_forward_client(void *client)
{
    rrpc_client_close(client);
}

static void make_forward_key(void)
{
    pthread_key_create(&forward_client_key, close_forward_client);
}

/* This worker's client, on the server's Redis and key prefix. */
static rrpc_client *forward_client(const rrpc_server_options *opts, char *err, size_t errlen)
{
    pthread_once(&forward_key_once, make_forward_key);
    rrpc_client *client = pthread_getspecific(forward_client_key);
    if (client != NULL)
        return client;
    rrpc_client_options copts;
    rrpc_client_options_init(&copts);
    copts.url = opts->url;
    copts.key_prefix = opts->key_prefix;
    if (rrpc_client_open(&client, &copts, err, errlen) != RRPC_OK)
        return NULL;
    pthread_setspecific(forward_client_key, client);
    return client;
}

static json_t *calc_forward(rrpc_request *req, void *udata)
{
    const char *service, *method;
    json_t *params = NULL, *result = NULL, *error = NULL;
    if (rrpc_param_count_max(req, 3) != RRPC_OK ||
        rrpc_param_string(req, 0, "service", &service) != RRPC_OK ||
        rrpc_param_string(req, 1, "method", &method) != RRPC_OK)
        return NULL;
    json_t *all = rrpc_request_params(req);
    params = json_is_array(all) ? json_array_get(all, 2) : json_object_get(all, "params");
    if (params != NULL && !json_is_array(params) && !json_is_object(params) &&
        !json_is_null(params))
        return rrpc_request_error(req, RRPC_JSONRPC_INVALID_PARAMS,
                                  "params must be an array, an object or null", NULL);
    char why[256] = "";
    rrpc_client *client = forward_client(udata, why, sizeof why);
    if (client == NULL)
        return rrpc_request_error(req, CALC_FORWARD_FAILED, "forward failed",
                                  json_string(why[0] ? why : "cannot connect"));
    /* No timeout and no trace given: the call gets what is left of this
     * request's deadline, and continues its trace with a new parent id. */
    int err = rrpc_call(client, service, method, json_is_null(params) ? NULL : params, 0, &result,
                        &error);
    if (err == RRPC_OK)
        return result;
    if (err == RRPC_EREMOTE) {
        json_int_t code = json_integer_value(json_object_get(error, "code"));
        const char *message = json_string_value(json_object_get(error, "message"));
        json_t *data = json_incref(json_object_get(error, "data"));
        rrpc_request_error(req, (int)code, message ? message : "", data);
        json_decref(error);
        return NULL;
    }
    return rrpc_request_error(
        req, CALC_FORWARD_FAILED, "forward failed",
        json_pack("{ssss}", "error", rrpc_strerror(err), "detail", rrpc_client_errmsg(client)));
}

/* Each method's params shape (JSON) is published in the registry for
 * `rrpc info`; its JSON Schemas are checked by the library before the
 * handler runs (-32602 naming the path) and, with the errors it may
 * answer, described by rpc.discover (`rrpc describe calc`).  The handlers
 * still check what a schema cannot say (a result out of range). */
#define AB_SHAPE "{\"a\": \"number\", \"b\": \"number\"}"
#define AB_SCHEMA                                                                                  \
    "{\"type\": \"object\", \"properties\": {"                                                     \
    "\"a\": {\"type\": \"number\", \"description\": \"left operand\"}, "                           \
    "\"b\": {\"type\": \"number\", \"description\": \"right operand\"}}, "                         \
    "\"required\": [\"a\", \"b\"], \"additionalProperties\": false}"
#define NUMBER_SCHEMA "{\"type\": \"number\"}"
static const struct method {
    const char *name;
    rrpc_method_fn fn;
    const char *description;
    const char *params;
    const char *params_schema;
    const char *result_schema;
} methods[] = {
    {"add", calc_add, "add(a, b): a + b, an integer if both are and it fits", AB_SHAPE, AB_SCHEMA,
     NUMBER_SCHEMA},
    {"subtract", calc_subtract, "subtract(a, b): a - b, an integer if both are and it fits",
     AB_SHAPE, AB_SCHEMA, NUMBER_SCHEMA},
    {"multiply", calc_multiply, "multiply(a, b): a * b, an integer if both are and it fits",
     AB_SHAPE, AB_SCHEMA, NUMBER_SCHEMA},
    {"divide", calc_divide, "divide(a, b): a / b as a real; error 1 if b is 0", AB_SHAPE, AB_SCHEMA,
     NUMBER_SCHEMA},
    {"echo", calc_echo, "echo(...): returns its params unchanged", "\"any\"",
     "{\"type\": \"object\", \"description\": \"any params, by name or by position\"}", "true"},
    {"sleep", calc_sleep, "sleep(ms): waits ms milliseconds (0..60000), returns ms",
     "{\"ms\": \"integer\"}",
     "{\"type\": \"object\", \"properties\": {\"ms\": {\"type\": \"integer\", \"minimum\": 0, "
     "\"maximum\": 60000, \"description\": \"milliseconds\"}}, \"required\": [\"ms\"], "
     "\"additionalProperties\": false}",
     "{\"type\": \"integer\"}"},
    {"count", calc_count,
     "count(n, ms): sends 1..n as progress, one every ms milliseconds, returns n",
     "{\"n\": \"integer\", \"ms\": \"integer\"}",
     "{\"type\": \"object\", \"properties\": {"
     "\"n\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 100000}, "
     "\"ms\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 60000}}, "
     "\"required\": [\"n\", \"ms\"], \"additionalProperties\": false}",
     "{\"type\": \"integer\"}"},
    {"forward", calc_forward,
     "forward(service, method, params): calls service.method(params) and returns its answer, "
     "within this call's deadline and trace",
     "{\"service\": \"string\", \"method\": \"string\", \"params\": \"array|object\"}",
     "{\"type\": \"object\", \"properties\": {"
     "\"service\": {\"type\": \"string\", \"minLength\": 1}, "
     "\"method\": {\"type\": \"string\", \"minLength\": 1}, "
     "\"params\": {\"type\": [\"array\", \"object\", \"null\"]}}, "
     "\"required\": [\"service\", \"method\"], \"additionalProperties\": false}",
     "true"},
};

/* The application errors each method may answer, for rpc.discover. */
static const struct method_error {
    const char *method;
    int code;
    const char *message;
} method_errors[] = {
    {"add", CALC_OUT_OF_RANGE, "result out of range"},
    {"subtract", CALC_OUT_OF_RANGE, "result out of range"},
    {"multiply", CALC_OUT_OF_RANGE, "result out of range"},
    {"divide", CALC_DIVISION_BY_ZERO, "division by zero"},
    {"divide", CALC_OUT_OF_RANGE, "result out of range"},
    {"forward", CALC_FORWARD_FAILED, "forward failed"},
};

static int describe_method(rrpc_server *server, const struct method *m)
{
    json_t *shape = json_loads(m->params, JSON_DECODE_ANY, NULL);
    json_t *params = json_loads(m->params_schema, JSON_DECODE_ANY, NULL);
    json_t *result = json_loads(m->result_schema, JSON_DECODE_ANY, NULL);
    int err = rrpc_server_set_params(server, m->name, shape);
    if (err == RRPC_OK)
        err = rrpc_server_set_schema(server, m->name, params, result);
    json_decref(shape);
    json_decref(params);
    json_decref(result);
    return err;
}

/* OPTS (the server's) is every handler's udata: forward connects with it. */
static int register_methods(rrpc_server *server, const rrpc_server_options *opts)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        int err = rrpc_server_register(server, methods[i].name, methods[i].fn, (void *)opts,
                                       methods[i].description);
        if (err == RRPC_OK)
            err = describe_method(server, &methods[i]);
        if (err != RRPC_OK)
            return err;
    }
    for (size_t i = 0; i < sizeof method_errors / sizeof method_errors[0]; i++) {
        int err = rrpc_server_add_error(server, method_errors[i].method, method_errors[i].code,
                                        method_errors[i].message);
        if (err != RRPC_OK)
            return err;
    }
    return RRPC_OK;
}

/* --- command line ---------------------------------------------------- */

enum {
    OPT_REDIS = 0x100,
    OPT_SERVICE,
    OPT_PREFIX,
    OPT_WORKERS,
    OPT_REPLY_TTL,
    OPT_RELIABLE,
    OPT_MAX_DELIVERIES,
    OPT_DEDUP_WINDOW,
    OPT_NO_HEARTBEAT,
    OPT_HEARTBEAT_INTERVAL,
    OPT_HEARTBEAT_TTL,
    OPT_MAX_QUEUE,
    OPT_BATCH_MAX,
    OPT_SHARDS,
    OPT_START_TIMEOUT,
    OPT_REPLY_PREFIX,
    OPT_BATCH_TIME,
    OPT_RATE,
    OPT_BURST,
    OPT_CONCURRENCY,
    OPT_OVER,
    OPT_PER_TENANT
};

static const struct option long_options[] = {
    {"redis", required_argument, NULL, OPT_REDIS},
    {"url", required_argument, NULL, OPT_REDIS},
    {"service", required_argument, NULL, OPT_SERVICE},
    {"prefix", required_argument, NULL, OPT_PREFIX},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"reply-ttl", required_argument, NULL, OPT_REPLY_TTL},
    {"reliable", no_argument, NULL, OPT_RELIABLE},
    {"max-deliveries", required_argument, NULL, OPT_MAX_DELIVERIES},
    {"dedup-window", required_argument, NULL, OPT_DEDUP_WINDOW},
    {"no-heartbeat", no_argument, NULL, OPT_NO_HEARTBEAT},
    {"heartbeat-interval", required_argument, NULL, OPT_HEARTBEAT_INTERVAL},
    {"heartbeat-ttl", required_argument, NULL, OPT_HEARTBEAT_TTL},
    {"max-queue", required_argument, NULL, OPT_MAX_QUEUE},
    {"batch-max", required_argument, NULL, OPT_BATCH_MAX},
    {"shards", required_argument, NULL, OPT_SHARDS},
    {"start-timeout", required_argument, NULL, OPT_START_TIMEOUT},
    {"reply-prefix", required_argument, NULL, OPT_REPLY_PREFIX},
    {"batch-time", required_argument, NULL, OPT_BATCH_TIME},
    {"rate", required_argument, NULL, OPT_RATE},
    {"burst", required_argument, NULL, OPT_BURST},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"over", required_argument, NULL, OPT_OVER},
    {"per-tenant", required_argument, NULL, OPT_PER_TENANT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *out)
{
    fputs("Usage: calc-server [OPTIONS]\n"
          "\n"
          "Serves add, subtract, multiply, divide, echo, sleep, count and forward over rrpc until\n"
          "SIGINT or SIGTERM, then finishes the calls in hand and exits.\n"
          "\n"
          "Options:\n"
          "  --url URL       the broker: a Redis URL, or amqp://user:password@host[:port]/vhost\n"
          "                  (RabbitMQ: no registry) (default: $RRPC_URL,\n"
          "                  else $REDIS_URL, else redis://127.0.0.1:6379)\n"
          "  --redis URL     the same as --url\n"
          "  --service NAME  service name, i.e. the request list (default: calc)\n"
          "  --prefix P      key prefix of the deployment (default: none)\n"
          "  --workers N     worker threads (default: 0 = one per CPU core)\n"
          "  --reply-ttl S   seconds an uncollected reply is kept (default: 60)\n"
          "  --reliable      at-least-once delivery: requests of a worker that dies\n"
          "                  are redelivered, answers are remembered so that none\n"
          "                  runs twice (docs/RELIABILITY.md)\n"
          "  --max-deliveries N  with --reliable: a request taken by N workers that\n"
          "                  died becomes a dead letter (default: 3)\n"
          "  --dedup-window S    with --reliable: seconds answers are remembered\n"
          "                  (default: 600)\n"
          "  --no-heartbeat  do not register in the registry (no heartbeat, no stats,\n"
          "                  no fail fast for callers, no max-queue)\n"
          "  --heartbeat-interval S\n"
          "                  seconds between heartbeats (default: 1)\n"
          "  --heartbeat-ttl S\n"
          "                  seconds a heartbeat stays valid (default: 5); with\n"
          "                  --reliable, a worker silent this long counts as dead\n"
          "  --batch-max N   requests a worker takes at once (default: 128)\n"
          "  --max-queue N   callers get 'overloaded' when N requests are queued\n"
          "                  (default: 0 = no limit; with --shards, per shard)\n"
          "  --shards N      spread the service over N request lists, so that it\n"
          "                  uses several Redis Cluster masters; rrpc sync clients\n"
          "                  pick them in turn (default: 1; raises --workers to N)\n"
          "  --start-timeout S\n"
          "                  while Redis is not there at start (refusing, loading,\n"
          "                  a Cluster forming), wait for it at most S seconds, then\n"
          "                  exit 1 (default: 0 = wait as long as it takes)\n"
          "  --reply-prefix P  answer only on reply keys that start with P; may be\n"
          "                  given several times (default: any reply list;\n"
          "                  docs/PROTOCOL.md section 3)\n"
          "  --batch-time S  a JSON-RPC batch runs at most S seconds; its calls not\n"
          "                  started by then are answered -32001 (default: 5;\n"
          "                  0 = no limit)\n"
          "\n"
          "Limits (written to the service's configuration in Redis at start, for every\n"
          "worker of the service; METHOD is a method name, or * for the whole service;\n"
          "a METHOD the server does not serve is refused):\n"
          "  --rate METHOD=N[/s]     at most N calls per second (N > 0)\n"
          "  --burst METHOD=B        with --rate: B calls at once above it (default: 1)\n"
          "  --concurrency METHOD=M  at most M calls running at once, over all workers\n"
          "  --over METHOD=wait|refuse\n"
          "                  over a limit: the call waits in Redis, or is answered\n"
          "                  -32003 with retry_after_ms (default: refuse)\n"
          "  --per-tenant METHOD     count METHOD's limits per 'tenant' member\n"
          "  -h, --help      show this help\n",
          out);
}

static int usage_error(const char *option, const char *wanted, const char *got)
{
    fprintf(stderr, "calc-server: --%s wants %s, not '%s'\nTry 'calc-server --help'.\n", option,
            wanted, got);
    return 2;
}

/* The limits the flags build (--rate, --concurrency...), or NULL. */
static json_t *limits;

/* The rule of the method named in SPEC ("METHOD=VALUE", or just "METHOD"
 * when VALUE is NULL); *VALUE gets what follows '='.  NULL if malformed. */
static json_t *limit_rule(const char *spec, const char **value)
{
    const char *eq = strchr(spec, '=');
    if ((value != NULL) != (eq != NULL) || eq == spec || (eq == NULL && *spec == '\0'))
        return NULL;
    size_t n = eq ? (size_t)(eq - spec) : strlen(spec);
    char name[256];
    if (n >= sizeof name)
        return NULL;
    memcpy(name, spec, n);
    name[n] = '\0';
    if (value != NULL)
        *value = eq + 1;
    if (limits == NULL)
        limits = json_object();
    json_t *rule = json_object_get(limits, name);
    if (rule == NULL)
        json_object_set_new(limits, name, rule = json_object());
    return rule;
}

/* One limits flag OPT with its argument; 0, or the usage error's status. */
static int limit_option(int opt, const char *arg)
{
    const char *v = NULL;
    json_t *rule = limit_rule(arg, opt == OPT_PER_TENANT ? NULL : &v);
    double d;
    int m;
    char number[64];
    switch (opt) {
    case OPT_RATE:
        /* "N" or "N/s": calls per second. */
        snprintf(number, sizeof number, "%s", v ? v : "");
        if (strlen(number) > 2 && strcmp(number + strlen(number) - 2, "/s") == 0)
            number[strlen(number) - 2] = '\0';
        if (rule == NULL || parse_number(number, 1e-9, 1e9, &d) != 0)
            return usage_error("rate", "METHOD=N/s with N > 0", arg);
        json_object_set_new(rule, "rate", json_real(d));
        return 0;
    case OPT_BURST:
        if (rule == NULL || parse_number(v, 1, 1e9, &d) != 0)
            return usage_error("burst", "METHOD=B with B >= 1", arg);
        json_object_set_new(rule, "burst", json_real(d));
        return 0;
    case OPT_CONCURRENCY:
        if (rule == NULL || parse_int(v, 1, 1000000, &m) != 0)
            return usage_error("concurrency", "METHOD=M with M a count >= 1", arg);
        json_object_set_new(rule, "concurrency", json_integer(m));
        return 0;
    case OPT_OVER:
        if (rule == NULL || (strcmp(v, "wait") != 0 && strcmp(v, "refuse") != 0))
            return usage_error("over", "METHOD=wait or METHOD=refuse", arg);
        json_object_set_new(rule, "over", json_string(v));
        return 0;
    default:
        if (rule == NULL)
            return usage_error("per-tenant", "a METHOD (or *)", arg);
        json_object_set_new(rule, "per_tenant", json_true());
        return 0;
    }
}

/* The limits as the server option wants them (JSON text), or NULL. */
static const char *limits_text(void)
{
    static char *text;
    if (limits != NULL && text == NULL)
        text = json_dumps(limits, JSON_COMPACT | JSON_SORT_KEYS);
    return text;
}

/* Returns 0 to serve, or the exit status of a usage error.  --help prints
 * and exits at once, as there is nothing to clean up yet. */
static int parse_options(int argc, char **argv, rrpc_server_options *opts)
{
    /* At most one --reply-prefix per argument; NULL-terminated. */
    static const char **prefixes;
    size_t nprefixes = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (opt) {
        case OPT_REDIS: opts->url = optarg; break;
        case OPT_SERVICE: opts->service = optarg; break;
        case OPT_PREFIX: opts->key_prefix = optarg; break;
        case OPT_WORKERS:
            if (parse_int(optarg, 0, 1024, &opts->workers) != 0)
                return usage_error("workers", "a count from 0 to 1024", optarg);
            break;
        case OPT_REPLY_TTL:
            if (parse_int(optarg, 1, INT_MAX, &opts->reply_ttl_s) != 0)
                return usage_error("reply-ttl", "a positive number of seconds", optarg);
            break;
        case OPT_RELIABLE: opts->reliable = 1; break;
        case OPT_MAX_DELIVERIES:
            if (parse_int(optarg, 1, 1000000, &opts->max_deliveries) != 0)
                return usage_error("max-deliveries", "a positive count", optarg);
            break;
        case OPT_DEDUP_WINDOW:
            if (parse_seconds(optarg, &opts->dedup_window_s) != 0)
                return usage_error("dedup-window", "a positive number of seconds", optarg);
            break;
        case OPT_NO_HEARTBEAT: opts->heartbeat = 0; break;
        case OPT_HEARTBEAT_INTERVAL:
        case OPT_HEARTBEAT_TTL:
            if (parse_seconds(optarg, opt == OPT_HEARTBEAT_TTL ? &opts->heartbeat_ttl_s
                                                               : &opts->heartbeat_interval_s))
                return usage_error(opt == OPT_HEARTBEAT_TTL ? "heartbeat-ttl"
                                                            : "heartbeat-interval",
                                   "a positive number of seconds", optarg);
            break;
        case OPT_BATCH_MAX:
            if (parse_int(optarg, 1, 100000, &opts->batch_max) != 0)
                return usage_error("batch-max", "a count from 1 to 100000", optarg);
            break;
        case OPT_MAX_QUEUE: {
            int max_queue = 0;
            if (parse_int(optarg, 0, INT_MAX, &max_queue) != 0)
                return usage_error("max-queue", "a count (0 = no limit)", optarg);
            opts->max_queue = max_queue;
            break;
        }
        case OPT_START_TIMEOUT: {
            char *end;
            errno = 0;
            opts->start_timeout_s = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || errno != 0 || !(opts->start_timeout_s >= 0) ||
                opts->start_timeout_s > 1e9)
                return usage_error("start-timeout", "a number of seconds (0 = no limit)", optarg);
            break;
        }
        case OPT_SHARDS:
            if (parse_int(optarg, 1, 1024, &opts->shards) != 0)
                return usage_error("shards", "a count from 1 to 1024", optarg);
            break;
        case OPT_REPLY_PREFIX:
            if (prefixes == NULL && (prefixes = calloc((size_t)argc + 1, sizeof *prefixes)) == NULL)
                return usage_error("reply-prefix", "memory", optarg);
            prefixes[nprefixes++] = optarg;
            opts->reply_prefixes = prefixes;
            break;
        case OPT_BATCH_TIME:
            if (strcmp(optarg, "0") == 0)
                opts->batch_time_limit_s = -1; /* no limit */
            else if (parse_seconds(optarg, &opts->batch_time_limit_s) != 0)
                return usage_error("batch-time", "a number of seconds (0 = no limit)", optarg);
            break;
        case OPT_RATE:
        case OPT_BURST:
        case OPT_CONCURRENCY:
        case OPT_OVER:
        case OPT_PER_TENANT: {
            int status = limit_option(opt, optarg);
            if (status != 0)
                return status;
            break;
        }
        case 'h': usage(stdout); exit(0);
        default: fputs("Try 'calc-server --help'.\n", stderr); return 2;
        }
    }
    opts->limits = limits_text(); /* the library checks the rules */
    if (optind < argc) {
        fprintf(stderr, "calc-server: unexpected argument '%s'\nTry 'calc-server --help'.\n",
                argv[optind]);
        return 2;
    }
    return 0;
}

/* --- serving --------------------------------------------------------- */

/* The start-up line ends up in logs; keep a password in the URL out,
 * redis-cli style: the userinfo up to the last '@' (but the user name) and
 * the values of password= and sentinel_password= become "****". */
static void print_url_without_password(FILE *out, const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    fwrite(url, 1, (size_t)(p - url), out);
    const char *at = strrchr(p, '@');
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL && colon > p)
            fwrite(p, 1, (size_t)(colon - p) + 1, out);
        fputs("****", out);
        p = at;
    }
    while (*p != '\0') {
        size_t n = strcspn(p + 1, "?&") + 1; /* one item and its separator */
        int secret = (*p == '?' || *p == '&') && (strncmp(p + 1, "password=", 9) == 0 ||
                                                  strncmp(p + 1, "sentinel_password=", 18) == 0);
        if (secret) {
            size_t key = (size_t)(strchr(p, '=') - p) + 1;
            fwrite(p, 1, key, out);
            fputs("****", out);
        } else {
            fwrite(p, 1, n, out);
        }
        p += n;
    }
}

/* The URL the library will use: it applies the same defaults. */
static const char *effective_url(const rrpc_server_options *opts)
{
    const char *env = getenv("REDIS_URL");
    if (opts->url)
        return opts->url;
    return env && *env ? env : "redis://127.0.0.1:6379";
}

static long effective_workers(const rrpc_server_options *opts)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long workers = opts->workers > 0 ? opts->workers : cores > 0 ? cores : 1;
    return workers < opts->shards ? opts->shards : workers; /* one per shard at least */
}

static void announce(const rrpc_server_options *opts)
{
    long workers = effective_workers(opts);
    fprintf(stderr, "calc-server: serving '%s' on ", opts->service);
    print_url_without_password(stderr, effective_url(opts));
    fprintf(stderr, " with %ld worker%s", workers, workers == 1 ? "" : "s");
    if (opts->shards > 1)
        fprintf(stderr, " over %d shards", opts->shards);
    fprintf(stderr, "%s\n", opts->reliable ? ", reliable (at-least-once)" : "");
}

static int fail(const rrpc_server *server, int err)
{
    const char *detail = server ? rrpc_server_errmsg(server) : NULL;
    fprintf(stderr, "calc-server: %s\n", detail && *detail ? detail : rrpc_strerror(err));
    return 1;
}

static int serve(const rrpc_server_options *opts)
{
    rrpc_server *server = NULL;
    int err = rrpc_server_new(&server, opts);
    if (err != RRPC_OK)
        return fail(NULL, err);
    err = register_methods(server, opts);
    if (err == RRPC_OK) {
        announce(opts);
        err = rrpc_server_run(server); /* returns after SIGINT/SIGTERM */
    }
    int status = err == RRPC_OK ? 0 : fail(server, err);
    rrpc_server_free(server);
    return status;
}

int main(int argc, char **argv)
{
    rrpc_server_options opts;
    rrpc_server_options_init(&opts);
    opts.service = "calc";
    int status = parse_options(argc, argv, &opts);
    return status != 0 ? status : serve(&opts);
}
