/* registry_amqp.h -- the AMQP transport's registry (PROTOCOL.md section 12,
 * "Operations over AMQP"): the names it uses, the server's side that
 * answers "who is there" (registry_amqp.c) and what the operators' side
 * (admin_amqp.c) needs from the sync caller's link.  Internal to
 * src/amqp/. */
#ifndef RRPC_AMQP_REGISTRY_H
#define RRPC_AMQP_REGISTRY_H

#include "amqp/link.h"
#include "transport/client_ops.h"
#include "transport/server_ops.h"

#include <stddef.h>

/* The one place the registry's AMQP names are spelled.  The exchange
 * "<prefix>rrpc:registry" (direct) routes a query with routing key
 * SERVICE to that service's servers and one with routing key "" to every
 * server; each server binds its own queue "<prefix>rrpc:registry:<id>"
 * (exclusive, auto-delete: it goes with the server's connection) with
 * both keys.  A service's dead letters are the queue named like its Redis
 * dead-letter list, "<prefix><service>:dead" (core/keys.c). */
#define RRPC__AMQP_REGISTRY       "rrpc:registry"
#define RRPC__AMQP_REGISTRY_TYPE  "direct"
#define RRPC__AMQP_REGISTRY_ALL   ""        /* the routing key of a query to everyone */
#define RRPC__AMQP_REGISTRY_QUERY "workers" /* the query's "query" member */
#define RRPC__AMQP_DIRECT_REPLY   "amq.rabbitmq.reply-to"

/* "<prefix>rrpc:registry" into BUF; RRPC_EINVAL if it does not fit. */
int rrpc__amqp_registry_exchange(char *buf, size_t len, const char *prefix);
/* "<prefix>rrpc:registry:<id>" into BUF; RRPC_EINVAL if it does not fit. */
int rrpc__amqp_registry_queue(char *buf, size_t len, const char *prefix, const char *id);

/* ---- the server's side (registry_amqp.c) ---- */

typedef struct rrpc__amqp_registry rrpc__amqp_registry;

/* Starts answering registry queries for S as A describes it (both
 * borrowed until rrpc__amqp_registry_stop), on a connection and thread of
 * its own.  A NULL (no heartbeat): nothing starts, *OUT is NULL.  A broker
 * that refuses the registry's names (permissions) is logged and the
 * server runs unregistered (*OUT NULL, RRPC_OK); a connection lost later
 * is mended with backoff.  RRPC_ENOMEM or a failed thread: an error with
 * S->errmsg set. */
int rrpc__amqp_registry_start(rrpc__amqp_registry **out, rrpc__serving *s,
                              const rrpc__announcement *a);
/* Stops answering and closes its connection (its queue goes with it).
 * NULL ok. */
void rrpc__amqp_registry_stop(rrpc__amqp_registry *r);

/* ---- what admin_amqp.c needs from client_amqp.c ---- */

/* The AMQP link of the sync caller's link L (which consumes direct
 * replies on RRPC__AMQP_CHANNEL). */
rrpc__amqp_link *rrpc__amqp_client_amqp(rrpc__client_link *l);

#endif
