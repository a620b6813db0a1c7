/* test_slot.c -- unit tests for src/slot.c, Redis Cluster hash slots.
 *
 * The cluster transport sends each command to the node that owns its key's
 * slot; a wrong slot means a MOVED round trip on every command, or worse a
 * wrong key position.  These pin the CRC16 against the reference value of
 * the Redis Cluster specification, slots of known keys (as CLUSTER KEYSLOT
 * reports them), the hash-tag rules, and the key position of every command
 * rrpc sends.
 */
#include "internal.h"

#include "check.h"

#include <string.h>

static unsigned slot(const char *key)
{
    return rrpc__key_slot(key, strlen(key));
}

static void test_reference_values(void)
{
    /* The specification's CRC16 check value: crc16("123456789") = 0x31C3. */
    CHECK_EQ_INT(slot("123456789"), 0x31C3 % 16384);
    /* CLUSTER KEYSLOT answers of Redis 7. */
    CHECK_EQ_INT(slot("foo"), 12182);
    CHECK_EQ_INT(slot("bar"), 5061);
    CHECK_EQ_INT(slot("calc"), 15575);
    CHECK_EQ_INT(slot(""), 0);
}

static void test_hash_tags(void)
{
    CHECK_EQ_INT(slot("{user1000}.following"), slot("{user1000}.followers"));
    CHECK_EQ_INT(slot("{user1000}.following"), slot("user1000"));
    CHECK_EQ_INT(slot("foo{}{bar}"), rrpc__key_slot("foo{}{bar}", 10)); /* "{}": the whole key */
    CHECK(slot("foo{}{bar}") != slot("bar"));
    CHECK_EQ_INT(slot("foo{{bar}}zap"), slot("{bar")); /* the first '{' opens the tag */
    CHECK_EQ_INT(slot("foo{bar}{zap}"), slot("bar"));
    CHECK_EQ_INT(slot("no{close"), rrpc__key_slot("no{close", 8));
    /* Binary keys: the length counts, not a NUL. */
    CHECK(rrpc__key_slot("a\0b", 3) != rrpc__key_slot("a", 1));
}

static void test_command_key_positions(void)
{
    const char *rpush[] = {"RPUSH", "calc", "x"};
    const char *blpop[] = {"blpop", "k", "0.5"};
    const char *blmpop[] = {"BLMPOP", "30", "1", "reply", "LEFT", "COUNT", "512"};
    const char *lmpop[] = {"LMPOP", "1", "reply", "LEFT", "COUNT", "1"};
    const char *ping[] = {"PING"};
    const char *role[] = {"ROLE"};
    const char *lone[] = {"LPOP"};
    CHECK_EQ_INT(rrpc__command_key_index(3, rpush), 1);
    CHECK_EQ_INT(rrpc__command_key_index(3, blpop), 1);
    CHECK_EQ_INT(rrpc__command_key_index(7, blmpop), 3);
    CHECK_EQ_INT(rrpc__command_key_index(6, lmpop), 2);
    CHECK_EQ_INT(rrpc__command_key_index(1, ping), -1);
    const char *time_cmd[] = {"TIME"};
    const char *eval[] = {"EVAL", "return 1", "2", "{k}:a", "{k}:b", "arg"};
    const char *eval0[] = {"eval", "return 1", "0"};
    CHECK_EQ_INT(rrpc__command_key_index(1, time_cmd), -1);
    CHECK_EQ_INT(rrpc__command_key_index(6, eval), 3);
    CHECK_EQ_INT(rrpc__command_key_index(3, eval0), -1);
    CHECK_EQ_INT(rrpc__command_key_index(1, role), -1);
    CHECK_EQ_INT(rrpc__command_key_index(1, lone), -1);
}

int main(void)
{
    test_reference_values();
    test_hash_tags();
    test_command_key_positions();
    return check_report();
}
