/* defaults.h -- the defaults of the public options, in one place.
 *
 * rrpc.h documents them for users; the _init functions of client.c,
 * async.c and server.c fill the options structs from these, and the parts
 * that treat a zero option as "the default" (registry.c) read them here
 * too.  The internal tunables of the worker are worker.h's.
 */
#ifndef RRPC_DEFAULTS_H
#define RRPC_DEFAULTS_H

/* Callers (rrpc_client_options, rrpc_async_options). */
#define RRPC__DEFAULT_CALL_TIMEOUT_S    30.0
#define RRPC__DEFAULT_CONNECT_TIMEOUT_S 5.0

/* Servers (rrpc_server_options). */
#define RRPC__DEFAULT_REPLY_TTL_S          60
#define RRPC__DEFAULT_MAX_REQUEST_BYTES    (1024 * 1024)
#define RRPC__DEFAULT_DEAD_LETTER_MAX      1000
#define RRPC__DEFAULT_BATCH_MAX            128
#define RRPC__DEFAULT_MAX_DELIVERIES       3
#define RRPC__DEFAULT_DEDUP_WINDOW_S       600
#define RRPC__DEFAULT_HEARTBEAT_INTERVAL_S 1.0
#define RRPC__DEFAULT_HEARTBEAT_TTL_S      5.0
#define RRPC__DEFAULT_BATCH_TIME_LIMIT_S   5.0

#endif
