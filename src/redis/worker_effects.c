/* worker_effects.c -- at-most-once effects (rrpc_request_add_effect).
 *
 * A request's effects go as one guarded script call before its answer, so
 * that a caller never sees an answer whose effects are not applied yet,
 * and a copy sent again after a broken link is not applied twice.
 */
#define _POSIX_C_SOURCE 200809L
#include "core/keys.h"
#include "core/internal.h"
#include "core/random.h"
#include "redis/worker_effects.h"
#include "redis/conn.h"
#include "core/url.h"
#include "redis/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* At-most-once effects: KEYS[1] is a guard key unique to this request's
 * effects, ARGV[1] its lifetime (ms), ARGV[2] the effect count, then per
 * effect its argc and arguments.  Applies them unless the guard exists --
 * they are sent again after a broken link, and the first copy may have
 * been applied although its confirmation was lost -- and returns the
 * effects Redis refused (the rest stand), or 0 when they had been applied.
 * The guard is its first write, so a script refused for memory changed
 * nothing and can be sent again. */
const char rrpc__effects_script[] =
    "-- rrpc effects v1\n"
    "if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end\n"
    "local i, refused = 3, {}\n"
    "for _ = 1, tonumber(ARGV[2]) do\n"
    "  local argc = tonumber(ARGV[i])\n"
    "  local r = redis.pcall(unpack(ARGV, i + 1, i + argc))\n"
    "  if type(r) == 'table' and r.err then\n"
    "    refused[#refused + 1] = ARGV[i + 1] .. ': ' .. r.err\n"
    "  end\n"
    "  i = i + argc + 1\n"
    "end\n"
    "return refused\n";

static int cmd_add_num(rrpc__cmd *c, size_t n)
{
    char text[24];
    snprintf(text, sizeof text, "%zu", n);
    return rrpc__cmd_add(c, text, strlen(text));
}

/* The effects script call for EFFECTS into *C (owned); its guard key is
 * {L}:applied:<this thread's token>:<counter>. */
static int effects_cmd(worker *w, const json_t *effects, rrpc__cmd *c)
{
    char suffix[80], guard[RRPC__KEY_MAX];
    if (w->token[0] == '\0' && rrpc__random_hex128(w->token) != RRPC_OK)
        return RRPC_ENOMEM;
    snprintf(suffix, sizeof suffix, RRPC__TAG_APPLIED "%s:%llx", w->token, w->effects_sent++);
    if (rrpc__tagged_key(guard, sizeof guard, w->srv->list_key, suffix) != RRPC_OK)
        return RRPC_EINVAL;
    int rc = rrpc__cmd_add(c, "EVAL", 4);
    rc = rc ? rc : rrpc__cmd_add(c, rrpc__effects_script, strlen(rrpc__effects_script));
    rc = rc ? rc : rrpc__cmd_add(c, "1", 1);
    rc = rc ? rc : rrpc__cmd_add(c, guard, strlen(guard));
    rc = rc ? rc : rrpc__cmd_add(c, EFFECTS_GUARD_MS, strlen(EFFECTS_GUARD_MS));
    rc = rc ? rc : cmd_add_num(c, json_array_size(effects));
    size_t i;
    const json_t *one;
    json_array_foreach(effects, i, one)
    {
        rc = rc ? rc : cmd_add_num(c, json_array_size(one));
        for (size_t k = 0; rc == RRPC_OK && k < json_array_size(one); k++)
            rc = rrpc__cmd_add(c, json_string_value(json_array_get(one, k)),
                               json_string_length(json_array_get(one, k)));
    }
    return rc;
}

/* Queues the commands handlers added with rrpc_request_add_effect for the
 * request MSG (borrowed): one effects script call, kept and sent again
 * with its answer after a broken link or a refusal for memory.  On a
 * Cluster, whose scripts cannot reach keys of other slots, they go as
 * plain commands and are not sent again (lost with a link that breaks). */
void rrpc__queue_effects(worker *w, const char *msg, size_t len, const json_t *effects)
{
    op o = {.kind = OP_EFFECTS, .msg = msg, .msg_len = len};
    if (w->srv->url.kind != RRPC__URL_CLUSTER) {
        int rc = effects_cmd(w, effects, &o.cmd);
        if (rc == RRPC_OK) {
            rrpc__send_cmd(w, o, (int)o.cmd.argc, (const char **)o.cmd.argv, o.cmd.lens);
            return;
        }
        rrpc__free_op(&o);
        if (rc == RRPC_ENOMEM) {
            rrpc__lose_op(w, &(op){.kind = OP_EFFECTS, .msg = msg, .msg_len = len},
                          "out of memory");
            return;
        } /* a guard key too long for the service name: plain commands */
    }
    size_t i;
    const json_t *cmd;
    json_array_foreach(effects, i, cmd)
    {
        size_t argc = json_array_size(cmd);
        const char **argv = malloc(argc * sizeof *argv);
        size_t *lens = malloc(argc * sizeof *lens);
        if (argv == NULL || lens == NULL) {
            rrpc__log_worker_at(w, RRPC_LOG_ERROR, "out of memory: an effect was not applied",
                                NULL);
        } else {
            for (size_t k = 0; k < argc; k++) {
                argv[k] = json_string_value(json_array_get(cmd, k));
                lens[k] = json_string_length(json_array_get(cmd, k));
            }
            rrpc__send_cmd(w, rrpc__plain_op, (int)argc, argv, lens);
        }
        free(argv);
        free(lens);
    }
}

/* At-most-once: acts on the answer of the effects script.  Once they are
 * applied, their guard is no longer needed (nothing sends them again). */
void rrpc__judge_effects(worker *w, const op *o, const rrpc__reply *r)
{
    if (rrpc__reply_type(r) == RRPC__REPLY_ERROR) {
        rrpc__lose_op(w, o, rrpc__reply_str(r, NULL));
        return;
    }
    if (rrpc__reply_type(r) == RRPC__REPLY_ARRAY && rrpc__reply_count(r) > 0)
        rrpc__log_worker(w, "Redis refused an effect",
                         rrpc__reply_str(rrpc__reply_element(r, 0), NULL));
    const char *del[] = {"DEL", o->cmd.argv[3]};
    const size_t lens[] = {3, o->cmd.lens[3]};
    rrpc__send_cmd(w, rrpc__plain_op, 2, del, lens);
}
