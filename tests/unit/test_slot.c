/* test_slot.c -- unit tests for src/slot.c, Redis Cluster hash slots.
 *
 * The cluster transport sends each command to the node that owns its key's
 * slot; a wrong slot means a MOVED round trip on every command, or worse a
 * wrong key position.  These pin the CRC16 against the reference value of
 * the Redis Cluster specification, slots of known keys (as CLUSTER KEYSLOT
 * reports them), the hash-tag rules, the key position of every command
 * rrpc sends, and the names of a sharded service's lists (src/shard.c),
 * which must land in different slots.
 */
#include "core/internal.h"

#include "check.h"
#include "core/shard.h"
#include "core/slot.h"

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

static void test_shard_keys(void)
{
    char k[RRPC__KEY_MAX];
    CHECK_EQ_INT(rrpc__shard_key(k, sizeof k, "app:calc", 0), RRPC_OK);
    CHECK_EQ_STR(k, "app:calc"); /* shard 0 is the usual list */
    CHECK_EQ_INT(rrpc__shard_key(k, sizeof k, "app:calc", 7), RRPC_OK);
    CHECK_EQ_STR(k, "app:calc#7");
    CHECK_EQ_INT(rrpc__shard_key(k, 10, "app:calc", 12), RRPC_EINVAL); /* "app:calc#12" */
    CHECK_EQ_INT(rrpc__shard_key(k, 12, "app:calc", 12), RRPC_OK);
    /* No hash tag: the shards of "calc" spread over the slots. */
    unsigned s0 = slot("calc"), s1 = slot("calc#1"), s2 = slot("calc#2");
    CHECK(s0 != s1 && s1 != s2 && s0 != s2);
    /* Which keys name a shard of 3: #1 and #2 only, in canonical form. */
    CHECK(rrpc__shard_is_key("calc", 3, "calc#1", 6));
    CHECK(rrpc__shard_is_key("calc", 3, "calc#2", 6));
    CHECK(!rrpc__shard_is_key("calc", 3, "calc#3", 6));
    CHECK(!rrpc__shard_is_key("calc", 3, "calc#0", 6));
    CHECK(!rrpc__shard_is_key("calc", 3, "calc#01", 7));
    CHECK(!rrpc__shard_is_key("calc", 3, "calc#", 5));
    CHECK(!rrpc__shard_is_key("calc", 3, "calc", 4));
    CHECK(!rrpc__shard_is_key("calc", 3, "calc#1x", 7));
    CHECK(!rrpc__shard_is_key("calc", 1, "calc#1", 6));
    CHECK(!rrpc__shard_is_key("calc", 3, "calx#1", 6));
    CHECK(rrpc__shard_is_key("calc", 1024, "calc#1023", 9));
    CHECK(!rrpc__shard_is_key("calc", 1024, "calc#99999999999999999999", 25));
    CHECK_EQ_INT(rrpc__shard_count(0), 1);
    CHECK_EQ_INT(rrpc__shard_count(-5), 1);
    CHECK_EQ_INT(rrpc__shard_count(4), 4);
    CHECK_EQ_INT(rrpc__shard_count(1L << 40), RRPC__MAX_SHARDS);
}

int main(void)
{
    test_reference_values();
    test_hash_tags();
    test_command_key_positions();
    test_shard_keys();
    return check_report();
}
