/* shard.h -- the request lists of a sharded service (shard.c), no I/O. */
#ifndef RRPC_SHARD_H
#define RRPC_SHARD_H

#include <stddef.h>

/* Most shards a service may have (rrpc_server_options.shards). */
#define RRPC__MAX_SHARDS 1024

/* Builds the request list of shard SHARD of the service whose list key
 * (shard 0) is LIST_KEY: LIST_KEY itself for shard 0, else
 * "<LIST_KEY>#<shard>".  RRPC_EINVAL if it does not fit. */
int rrpc__shard_key(char *buf, size_t len, const char *list_key, int shard);
/* Nonzero if KEY[0..len) is the list of a shard k with 1 <= k < SHARDS. */
int rrpc__shard_is_key(const char *list_key, int shards, const char *key, size_t len);
/* N clamped to 1..RRPC__MAX_SHARDS (a count read from the registry). */
int rrpc__shard_count(long n);

#endif
