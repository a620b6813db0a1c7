/* calc-client.c -- the post's calculator calls, made with rrpc's sync client.
 *
 * Start examples/calc-server first.  Every answer is checked, so this also
 * serves as a smoke test: the exit status is 1 if any answer is wrong.
 * Usage: calc-client [--redis URL] [--service NAME]
 */
#include <rrpc/rrpc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static int close_enough(double got, double want)
{
    return got - want < 1e-9 && want - got < 1e-9;
}

/* Calls METHOD and checks that it answers WANT.  PARAMS is stolen so that
 * each call below fits on one line; rrpc_call itself only borrows it. */
static void check(rrpc_client *client, const char *service, const char *label, const char *method,
                  json_t *params, double want)
{
    json_t *result = NULL, *error = NULL;
    int err = rrpc_call(client, service, method, params, 0, &result, &error);
    if (err == RRPC_OK && json_is_number(result) && close_enough(json_number_value(result), want)) {
        printf("%s=%g\n", label, json_number_value(result));
    } else {
        const char *why = err == RRPC_EREMOTE ? json_string_value(json_object_get(error, "message"))
                          : err != RRPC_OK    ? rrpc_client_errmsg(client)
                                              : "unexpected result";
        printf("%s: FAILED (%s)\n", label, why ? why : rrpc_strerror(err));
        failures++;
    }
    json_decref(params);
    json_decref(result);
    json_decref(error);
}

/* An application error is data: rrpc_call returns RRPC_EREMOTE and hands
 * over the error object, here {"code":1,"message":"division by zero"}. */
static void check_division_by_zero(rrpc_client *client, const char *service)
{
    json_t *params = json_pack("[i, i]", 1, 0);
    json_t *result = NULL, *error = NULL;
    int err = rrpc_call(client, service, "divide", params, 0, &result, &error);
    char *text = error ? json_dumps(error, JSON_COMPACT) : NULL;
    printf("1/0 -> %s\n", text ? text : rrpc_strerror(err));
    if (err != RRPC_EREMOTE || json_integer_value(json_object_get(error, "code")) != 1)
        failures++;
    free(text);
    json_decref(params);
    json_decref(result);
    json_decref(error);
}

int main(int argc, char **argv)
{
    rrpc_client_options opts;
    rrpc_client_options_init(&opts); /* url NULL: $REDIS_URL, else localhost */
    const char *service = "calc";
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 < argc && strcmp(argv[i], "--redis") == 0) {
            opts.url = argv[i + 1];
        } else if (i + 1 < argc && strcmp(argv[i], "--service") == 0) {
            service = argv[i + 1];
        } else {
            fprintf(stderr, "usage: calc-client [--redis URL] [--service NAME]\n");
            return 2;
        }
    }

    rrpc_client *client;
    char errmsg[256] = "";
    int err = rrpc_client_open(&client, &opts, errmsg, sizeof errmsg);
    if (err != RRPC_OK) {
        fprintf(stderr, "calc-client: %s\n", *errmsg ? errmsg : rrpc_strerror(err));
        return 1;
    }
    check(client, service, "1+5.1", "add", json_pack("[i, f]", 1, 5.1), 6.1);
    check(client, service, "7-2.5", "subtract", json_pack("[i, f]", 7, 2.5), 4.5);
    check(client, service, "6*7", "multiply", json_pack("[i, i]", 6, 7), 42);
    check(client, service, "1/4", "divide", json_pack("[i, i]", 1, 4), 0.25);
    /* Named params: the same method, its arguments by name. */
    check(client, service, "10-4 (named)", "subtract", json_pack("{s:i, s:i}", "a", 10, "b", 4), 6);
    check_division_by_zero(client, service);
    rrpc_client_close(client);
    return failures == 0 ? 0 : 1;
}
