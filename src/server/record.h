/* record.h -- what a server says about itself (record.c): its identity,
 * its registry record and the built-in rpc.ping. */
#ifndef RRPC_RECORD_H
#define RRPC_RECORD_H

#include "core/dispatch.h"
#include "core/stats.h"

#include <rrpc/rrpc.h>

/* One server's presence (PROTOCOL.md section 9), without the broker. */
typedef struct rrpc__record {
    char *service;
    char id[128]; /* host:pid:random, this process among the service's servers */
    char host[64];
    long pid;
    int enabled; /* rrpc_server_options.heartbeat */
    double interval_s, ttl_s;
    long max_queue;
    int shards;
    rrpc__methods *methods; /* the server's table; frozen while running */
    json_t *params;         /* method name -> params shape */
    double started;
    char *text;        /* the JSON record, built at start */
    rrpc__stats stats; /* per-method counters while it runs */
} rrpc__record;

/* Fills R for a server with OPTS (borrowed, read now) and registers the
 * built-in rpc.ping (which answers with R's identity) into METHODS, which
 * R borrows.  RRPC_OK or RRPC_ENOMEM (then rrpc__record_clear is enough). */
int rrpc__record_init(rrpc__record *r, const rrpc_server_options *opts, rrpc__methods *methods);
void rrpc__record_clear(rrpc__record *r);
/* Records the informal params shape of METHOD (borrowed, copied). */
int rrpc__record_set_params(rrpc__record *r, const char *method, const json_t *shape);
/* At start: builds the record text for THREADS workers and turns the
 * per-method stats on (r->methods->stats).  RRPC_ENOMEM, nothing kept. */
int rrpc__record_start(rrpc__record *r, int threads);
/* After the broker was told (withdraw): stats off, text freed. */
void rrpc__record_stop(rrpc__record *r);

#endif
