/* caller.h -- what the sync client (client.c) and the admin handle
 * (admin.c) share (caller.c): their options, the URL, the key prefix, the
 * transport chosen by the URL and the link to its broker. */
#ifndef RRPC_CALLER_H
#define RRPC_CALLER_H

#include "core/clock.h"
#include "core/url.h"
#include "transport/client_ops.h"
#include "transport/transport.h"

#include <rrpc/rrpc.h>

#include <stddef.h>

typedef struct rrpc__caller {
    const rrpc__transport *transport; /* borrowed (a constant) */
    const rrpc__client_ops *ops;      /* transport->client */
    rrpc__client_link *link;
    rrpc__url url;
    char *prefix; /* the key prefix, "" if none */
} rrpc__caller;

/* Loads the caller's options OPTS (NULL: all defaults) over the library's
 * defaults into *OWN.  RRPC_EINVAL, with ERR saying why, if OPTS was not
 * filled by rrpc_client_options_init or sets an option this library does
 * not know. */
int rrpc__caller_options(rrpc_client_options *own, const rrpc_client_options *opts, char *err,
                         size_t errlen);
/* Fills *C (zeroed by the caller) from OPTS (loaded by
 * rrpc__caller_options): parses the URL, picks its transport and opens a
 * link, measuring the broker's clock onto CLOCK unless it is NULL.  On
 * failure ERR says why, and *C must still be closed. */
int rrpc__caller_open(rrpc__caller *c, const rrpc_client_options *opts, rrpc__clock *clock,
                      char *err, size_t errlen);
/* Closes the link and frees what *C holds; *C itself is the owner's. */
void rrpc__caller_close(rrpc__caller *c);

#endif /* RRPC_CALLER_H */
