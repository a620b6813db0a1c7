/* shard.c -- the names of a sharded service's request lists, without I/O.
 *
 * One list lives on one Redis Cluster master, so a hot service would be
 * bounded by one machine.  A service may therefore be spread over several
 * request lists ("shards"): shard 0 is the service's usual list
 * `<prefix><service>`, so that peers which know nothing of shards still
 * reach it, and shard k >= 1 is `<prefix><service>#<k>`.  The shard keys
 * carry no hash tag on purpose: their slots are then unrelated, and with
 * enough shards they spread over the cluster's masters (PROTOCOL.md
 * section 1).  Kept pure so the naming rules are unit-tested.
 */
#include "core/shard.h"

#include <rrpc/rrpc.h>

#include <stdio.h>
#include <string.h>

int rrpc__shard_key(char *buf, size_t len, const char *list_key, int shard)
{
    int n = shard <= 0 ? snprintf(buf, len, "%s", list_key)
                       : snprintf(buf, len, "%s#%d", list_key, shard);
    return n < 0 || (size_t)n >= len ? RRPC_EINVAL : RRPC_OK;
}

int rrpc__shard_is_key(const char *list_key, int shards, const char *key, size_t len)
{
    size_t list_len = strlen(list_key);
    if (len < list_len + 2 || memcmp(key, list_key, list_len) != 0 || key[list_len] != '#')
        return 0;
    long k = 0;
    for (size_t i = list_len + 1; i < len; i++) {
        if (key[i] < '0' || key[i] > '9' || (i == list_len + 1 && key[i] == '0'))
            return 0; /* only the canonical decimal text names a shard */
        k = k * 10 + (key[i] - '0');
        if (k >= shards)
            return 0;
    }
    return k >= 1;
}

int rrpc__shard_count(long n)
{
    return n < 1 ? 1 : n > RRPC__MAX_SHARDS ? RRPC__MAX_SHARDS : (int)n;
}
