/* keys.c -- builds the Redis key names listed in keys.h; no I/O.  Every
 * builder fails with RRPC_EINVAL rather than truncating: a cut name would
 * be another key. */
#include "core/keys.h"

#include "core/random.h"

#include <stdio.h>

int rrpc__key_join(char *buf, size_t len, const char *prefix, const char *name, const char *suffix)
{
    int n =
        snprintf(buf, len, "%s%s%s", prefix ? prefix : "", name ? name : "", suffix ? suffix : "");
    return n < 0 || (size_t)n >= len ? RRPC_EINVAL : RRPC_OK;
}

int rrpc__tagged_key(char *buf, size_t len, const char *list_key, const char *suffix)
{
    int n = snprintf(buf, len, "{%s}%s", list_key, suffix);
    return n < 0 || (size_t)n >= len ? RRPC_EINVAL : RRPC_OK;
}

int rrpc__priority_key(char *buf, size_t len, const char *list_key, int priority)
{
    if (priority == RRPC_PRIORITY_NORMAL)
        return rrpc__key_join(buf, len, NULL, list_key, NULL);
    return rrpc__tagged_key(buf, len, list_key,
                            priority == RRPC_PRIORITY_HIGH ? RRPC__TAG_HIGH : RRPC__TAG_LOW);
}

int rrpc__services_key(char *buf, size_t len, const char *prefix)
{
    return rrpc__key_join(buf, len, prefix, RRPC__KEY_SERVICES, NULL);
}

int rrpc__new_reply_key(char *buf, size_t len, const char *prefix)
{
    char hex[33];
    int rc = rrpc__random_hex128(hex);
    if (rc != RRPC_OK)
        return rc;
    return rrpc__key_join(buf, len, prefix, RRPC__KEY_REPLY, hex);
}

int rrpc__service_keys_init(rrpc__service_keys *k, const char *prefix, const char *service)
{
    if (rrpc__key_join(k->list, sizeof k->list, prefix, service, NULL) ||
        rrpc__key_join(k->dead, sizeof k->dead, prefix, service, RRPC__SUFFIX_DEAD) ||
        rrpc__key_join(k->stats, sizeof k->stats, prefix, service, RRPC__SUFFIX_STATS) ||
        rrpc__tagged_key(k->workers, sizeof k->workers, k->list, RRPC__TAG_WORKERS) ||
        rrpc__tagged_key(k->info, sizeof k->info, k->list, RRPC__TAG_INFO) ||
        rrpc__tagged_key(k->config, sizeof k->config, k->list, RRPC__TAG_CONFIG) ||
        rrpc__tagged_key(k->mstats, sizeof k->mstats, k->list, RRPC__TAG_MSTATS) ||
        rrpc__services_key(k->services, sizeof k->services, prefix))
        return RRPC_EINVAL;
    return RRPC_OK;
}
