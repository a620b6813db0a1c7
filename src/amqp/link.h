/* link.h -- one AMQP 0-9-1 connection with one channel (link.c): what the
 * AMQP transport's client and server share.  Internal to src/amqp/: the
 * librabbitmq types stay in this folder. */
#ifndef RRPC_AMQP_LINK_H
#define RRPC_AMQP_LINK_H

#include "core/internal.h"
#include "core/url.h"

#include <amqp.h>

#include <stddef.h>
#include <sys/time.h>

/* The one channel every link uses. */
#define RRPC__AMQP_CHANNEL 1
#define RRPC__AMQP_JSON    "application/json"

typedef struct rrpc__amqp_link {
    amqp_connection_state_t conn; /* NULL: not connected */
    int broken;                   /* the connection failed: close and connect again */
    char errmsg[RRPC__ERRMSG_LEN];
} rrpc__amqp_link;

/* Refuses what the transport cannot do with URL (an amqps:// client
 * certificate without its key).  RRPC_OK or RRPC_EINVAL with a message in
 * ERR.  amqps:// connects with TLS: link.c's tls_socket, SECURITY.md 7. */
int rrpc__amqp_url_check(const rrpc__url *url, char *err, size_t errlen);
/* Connects L to the broker of URL within TIMEOUT_S (0: 5 s), logs in and
 * opens the channel.  RRPC_OK; else RRPC_ECONNECT, RRPC_EAUTH (login or
 * vhost refused), RRPC_EINVAL or RRPC_ENOMEM with L->errmsg set (the URL's
 * password masked) and nothing left open. */
int rrpc__amqp_connect(rrpc__amqp_link *l, const rrpc__url *url, double timeout_s);
/* Closes L's connection (politely unless it broke).  L may be reused. */
void rrpc__amqp_disconnect(rrpc__amqp_link *l);
/* Judges the reply R of the synchronous method WHAT: RRPC_OK, or an error
 * with L->errmsg set ("WHAT: reason") and L->broken if the connection or
 * the channel is gone (a channel closed by the broker is not reopened: the
 * link is mended whole). */
int rrpc__amqp_judge(rrpc__amqp_link *l, amqp_rpc_reply_t r, const char *what);
/* Publishes BODY (LEN bytes) to QUEUE through the default exchange with
 * PROPS.  RRPC_OK, or RRPC_ECONNECT (L broken, errmsg set). */
int rrpc__amqp_publish(rrpc__amqp_link *l, const char *queue, const char *body, size_t len,
                       const amqp_basic_properties_t *props, int mandatory);
/* Reads the frame that made amqp_consume_message stop with
 * AMQP_STATUS_UNEXPECTED_STATE.  A basic.return is read whole: its
 * correlation_id is copied into RETURNED (LEN bytes; "" if none) and 1 is
 * returned.  A closed channel or connection breaks L (RRPC_ECONNECT).
 * Anything else is skipped (0). */
int rrpc__amqp_other_frame(rrpc__amqp_link *l, char *returned, size_t len);
/* The timeval of S seconds (>= 0). */
struct timeval rrpc__amqp_tv(double s);

#endif
