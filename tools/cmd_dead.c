/* cmd_dead.c -- `rrpc dead SERVICE [list|requeue|purge]`: the dead letters
 * of a service (docs/PROTOCOL.md section 6).
 *
 * list shows them, oldest first; requeue pushes every one that carries its
 * original message back onto the service's list (after fixing whatever
 * made it fail), or with --ref only the one of that ref; purge deletes them.
 */
#include "ops.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void usage(FILE *out)
{
    fputs("Usage: rrpc dead [OPTIONS] SERVICE [list|requeue|purge]\n"
          "\n"
          "  list     show SERVICE's dead letters, oldest first (the default)\n"
          "  requeue  push each dead letter's original message back onto SERVICE's\n"
          "           list and remove it; records without a message (e.g. bytes that\n"
          "           were not UTF-8, kept as message_base64) stay; with --ref REF\n"
          "           only the dead letter whose ref (`list --json`) is REF\n"
          "  purge    delete all of SERVICE's dead letters\n",
          out);
    ops_print_options(out, OPS_LIMIT | OPS_REF);
}

/* The reason and message are a caller's and a parser's text: escaped
 * (cli_safe), so a dead letter cannot drive the operator's terminal. */
static void list_table(const json_t *letters)
{
    size_t i;
    json_t *d;
    char reason_text[37], message_text[81];
    printf("%-19s %-36s %s\n", "TIME", "REASON", "MESSAGE");
    json_array_foreach(letters, i, d)
    {
        if (!json_is_object(d)) {
            printf("%-19s %-36s %s\n", "?", "(not a dead-letter record)",
                   cli_safe(message_text, sizeof message_text,
                            json_string_value(d) ? json_string_value(d) : ""));
            continue;
        }
        time_t t = (time_t)json_number_value(json_object_get(d, "time"));
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
        const char *reason = json_string_value(json_object_get(d, "reason"));
        const char *message = json_string_value(json_object_get(d, "message"));
        printf("%-19s %-36s %s\n", when,
               cli_safe(reason_text, sizeof reason_text, reason ? reason : "?"),
               cli_safe(message_text, sizeof message_text,
                        message ? message : "(binary: message_base64)"));
    }
    if (json_array_size(letters) == 0)
        puts("(no dead letters)");
}

static int act(const char *prog, rrpc_admin *admin, const char *service, const char *action,
               const struct ops_args *args)
{
    json_t *doc = NULL;
    long n = 0;
    int err;
    if (strcmp(action, "list") == 0) {
        err = rrpc_admin_dead_list(admin, service, args->limit, &doc);
    } else if (strcmp(action, "requeue") == 0 && args->ref != NULL) {
        err = rrpc_admin_dead_requeue_one(admin, service, args->ref);
        n = err == RRPC_OK;
        doc = json_pack("{s:s, s:s, s:I}", "service", service, "ref", args->ref, "requeued",
                        (json_int_t)n);
    } else if (strcmp(action, "requeue") == 0) {
        err = rrpc_admin_dead_requeue(admin, service, &n);
        doc = json_pack("{s:s, s:I}", "service", service, "requeued", (json_int_t)n);
    } else {
        err = rrpc_admin_dead_purge(admin, service, &n);
        doc = json_pack("{s:s, s:I}", "service", service, "purged", (json_int_t)n);
    }
    int status = CLI_EXIT_OK;
    if (err != RRPC_OK)
        status = cli_report_admin_failure(prog, admin, err);
    else if (args->json)
        status = ops_print_json(prog, doc);
    else if (strcmp(action, "list") == 0)
        list_table(doc);
    else {
        char safe[256];
        printf("%s %ld dead letter%s of %s\n",
               strcmp(action, "requeue") == 0 ? "requeued" : "purged", n, n == 1 ? "" : "s",
               cli_safe(safe, sizeof safe, service));
    }
    json_decref(doc);
    return status;
}

int cmd_dead(int argc, char **argv)
{
    const char *prog = argv[0];
    struct ops_args args;
    int status = ops_parse(argc, argv, OPS_LIMIT | OPS_REF, 1, 2, &args);
    if (status != CLI_EXIT_OK || args.help) {
        if (args.help)
            usage(stdout);
        return status;
    }
    const char *action = args.noperands == 2 ? args.operands[1] : "list";
    if (strcmp(action, "list") != 0 && strcmp(action, "requeue") != 0 &&
        strcmp(action, "purge") != 0)
        return cli_usage_error(prog, "unknown action '%s' (list, requeue or purge)", action);
    if (args.ref != NULL && strcmp(action, "requeue") != 0)
        return cli_usage_error(prog, "--ref goes with requeue");
    rrpc_admin *admin = NULL;
    if ((status = cli_open_admin(prog, &args.conn, &admin)) != CLI_EXIT_OK)
        return status;
    status = act(prog, admin, args.operands[0], action, &args);
    rrpc_admin_close(admin);
    return status;
}
