/* test_dead_requeue_one.c -- rrpc_admin_dead_requeue_one against a real
 * Redis: one dead letter, named by the ref rrpc_admin_dead_list gives it, is
 * requeued and no other; an unknown ref, a malformed one and a record whose
 * message was kept truncated are refused and change nothing.
 *
 * The records are made by the library's own dead-letter writer
 * (core/deadletter.h) and stored where workers store them.
 */
#include "harness.h"

#include "core/deadletter.h"
#include "core/keys.h"

#define SERVICE "requeue_one"

static rrpc_admin *admin;
static rrpc__service_keys keys;

static void push_dead(const char *message, size_t keep)
{
    char *text = rrpc__dead_letter_text(SERVICE, "handler crashed", message, strlen(message), keep,
                                        NULL, NULL);
    rrpc__reply *r = cmd(3, "RPUSH", keys.dead, text);
    CHECK(r != NULL && rrpc__reply_type(r) == RRPC__REPLY_INTEGER);
    rrpc__reply_free(r);
    free(text);
}

/* The ref of the dead letter at INDEX of the current list (static). */
static const char *ref_at(size_t index)
{
    static char ref[64];
    json_t *list = NULL;
    ref[0] = '\0';
    if (CHECK_EQ_INT(rrpc_admin_dead_list(admin, SERVICE, 0, &list), RRPC_OK)) {
        const char *v = json_string_value(json_object_get(json_array_get(list, index), "ref"));
        snprintf(ref, sizeof ref, "%s", v ? v : "");
    }
    json_decref(list);
    return ref;
}

/* The element at INDEX of KEY as a new string, or NULL. */
static char *element(const char *key, long index)
{
    char at[32];
    snprintf(at, sizeof at, "%ld", index);
    rrpc__reply *r = cmd(3, "LINDEX", key, at);
    char *s =
        r && rrpc__reply_type(r) == RRPC__REPLY_STRING ? strdup(rrpc__reply_str(r, NULL)) : NULL;
    rrpc__reply_free(r);
    return s;
}

static const char *A = "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":1}";
static const char *B = "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[3,4],\"id\":2}";

static void test_requeue_one_of_two(void)
{
    cmd_int(2, "DEL", keys.dead, NULL);
    cmd_int(2, "DEL", keys.list, NULL);
    push_dead(A, 1 << 20);
    push_dead(B, 1 << 20);
    char ref_b[64];
    snprintf(ref_b, sizeof ref_b, "%s", ref_at(1));
    CHECK_EQ_INT(strlen(ref_b), 40);
    char *stored_a = element(keys.dead, 0);

    CHECK_EQ_INT(rrpc_admin_dead_requeue_one(admin, SERVICE, ref_b), RRPC_OK);
    /* B (the second, so not what a pop from the head would take) is queued;
     * A stays, byte for byte. */
    CHECK_EQ_INT(cmd_int(2, "LLEN", keys.list, NULL), 1);
    char *queued = element(keys.list, 0);
    CHECK_EQ_STR(queued, B);
    CHECK_EQ_INT(cmd_int(2, "LLEN", keys.dead, NULL), 1);
    char *left = element(keys.dead, 0);
    CHECK_EQ_STR(left, stored_a);
    free(queued);
    free(left);
    free(stored_a);

    /* The same ref again: gone, refused, nothing moves. */
    CHECK_EQ_INT(rrpc_admin_dead_requeue_one(admin, SERVICE, ref_b), RRPC_EINVAL);
    CHECK(strstr(rrpc_admin_errmsg(admin), "no dead letter with ref") != NULL);
    CHECK_EQ_INT(cmd_int(2, "LLEN", keys.list, NULL), 1);
    CHECK_EQ_INT(cmd_int(2, "LLEN", keys.dead, NULL), 1);
}

static void test_refused(void)
{
    cmd_int(2, "DEL", keys.dead, NULL);
    cmd_int(2, "DEL", keys.list, NULL);
    push_dead(A, 1 << 20);
    push_dead(B, 16); /* longer than 16 bytes: kept as message_prefix */
    const char *unknown = "0123456789abcdef0123456789abcdef01234567";
    CHECK_EQ_INT(rrpc_admin_dead_requeue_one(admin, SERVICE, unknown), RRPC_EINVAL);
    CHECK(strstr(rrpc_admin_errmsg(admin), unknown) != NULL);
    CHECK_EQ_INT(rrpc_admin_dead_requeue_one(admin, SERVICE, "not-a-ref"), RRPC_EINVAL);
    CHECK_EQ_INT(rrpc_admin_dead_requeue_one(admin, SERVICE, NULL), RRPC_EINVAL);

    char ref_trunc[64];
    snprintf(ref_trunc, sizeof ref_trunc, "%s", ref_at(1));
    CHECK_EQ_INT(rrpc_admin_dead_requeue_one(admin, SERVICE, ref_trunc), RRPC_EINVAL);
    CHECK(strstr(rrpc_admin_errmsg(admin), "truncated") != NULL);
    CHECK_EQ_INT(cmd_int(2, "LLEN", keys.dead, NULL), 2);
    CHECK_EQ_INT(cmd_int(2, "LLEN", keys.list, NULL), 0);
    CHECK_EQ_STR(ref_at(1), ref_trunc); /* the record is kept, unchanged */
}

/* A record that carries a "ref" of its own (the text is hostile) is listed
 * with its real ref, which requeues it. */
static void test_stored_ref_overwritten(void)
{
    cmd_int(2, "DEL", keys.dead, NULL);
    cmd_int(2, "DEL", keys.list, NULL);
    const char *fake = "{\"reason\":\"x\",\"message\":\"{}\",\"ref\":\"0000\"}";
    cmd_int(3, "RPUSH", keys.dead, fake);
    char hex[41];
    rrpc__sha1_hex(fake, strlen(fake), hex);
    CHECK_EQ_STR(ref_at(0), hex);
    CHECK_EQ_INT(rrpc_admin_dead_requeue_one(admin, SERVICE, hex), RRPC_OK);
    CHECK_EQ_INT(cmd_int(2, "LLEN", keys.dead, NULL), 0);
    CHECK_EQ_INT(cmd_int(2, "LLEN", keys.list, NULL), 1);
}

int main(void)
{
    char err[256];
    if (raw_open() != 0)
        return 1;
    if (rrpc_admin_open(&admin, NULL, err, sizeof err) != RRPC_OK) {
        fprintf(stderr, "cannot reach the test Redis: %s\n", err);
        return 1;
    }
    rrpc_client_options o;
    rrpc_client_options_init(&o);
    if (rrpc__service_keys_init(&keys, o.key_prefix, SERVICE) != RRPC_OK)
        return 1;
    test_requeue_one_of_two();
    test_refused();
    test_stored_ref_overwritten();
    rrpc_admin_close(admin);
    raw_close();
    return check_report();
}
