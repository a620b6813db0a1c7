/* caller.c -- opening and closing the link of a sync client or an admin
 * handle (caller.h): both take rrpc_client_options and talk to the
 * broker of their URL through the transport's client operations, so the
 * steps are written once here. */
#define _POSIX_C_SOURCE 200809L
#include "client/caller.h"

#include "core/internal.h"
#include "core/opts.h"

#include <stdlib.h>
#include <string.h>

int rrpc__caller_options(rrpc_client_options *own, const rrpc_client_options *opts, char *err,
                         size_t errlen)
{
    rrpc_client_options_init(own);
    if (opts && rrpc__opts_load(own, sizeof *own, opts, err, errlen) != RRPC_OK)
        return RRPC_EINVAL;
    return RRPC_OK;
}

int rrpc__caller_open(rrpc__caller *c, const rrpc_client_options *opts, rrpc__clock *clock,
                      char *err, size_t errlen)
{
    c->prefix = strdup(opts->key_prefix ? opts->key_prefix : "");
    if (c->prefix == NULL)
        return rrpc__fail(err, errlen, RRPC_ENOMEM, "out of memory");
    int rc = rrpc__url_parse(&c->url, opts->url, err, errlen);
    if (rc != RRPC_OK)
        return rc;
    c->transport = rrpc__transport_for(&c->url, err, errlen);
    if (c->transport == NULL || c->transport->client == NULL)
        return c->transport
                   ? rrpc__fail(err, errlen, RRPC_EINVAL,
                                "the sync client is not supported over %s yet", c->transport->name)
                   : RRPC_EINVAL;
    c->ops = c->transport->client;
    return c->ops->open(&c->link, &c->url, opts->connect_timeout_s, opts->fail_fast, clock, err,
                        errlen);
}

void rrpc__caller_close(rrpc__caller *c)
{
    if (c->ops != NULL)
        c->ops->close(c->link);
    rrpc__url_free(&c->url);
    free(c->prefix);
}
