/* link.h -- one AMQP 0-9-1 connection with one channel (link.c): what the
 * AMQP transport's client and server share.  Internal to src/amqp/: the
 * librabbitmq types stay in this folder. */
#ifndef RRPC_AMQP_LINK_H
#define RRPC_AMQP_LINK_H

#include "core/internal.h"
#include "core/url.h"

#include <amqp.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

/* The one channel every link uses. */
#define RRPC__AMQP_CHANNEL 1
#define RRPC__AMQP_JSON    "application/json"

/* The heartbeat asked for at login when the URL gives none (?heartbeat=S):
 * a broker that stops reading or sending (a paused node, a network
 * stall) is found out within two of them (librabbitmq's rule). */
#define RRPC__AMQP_HEARTBEAT_S 20

typedef struct rrpc__amqp_link {
    amqp_connection_state_t conn; /* NULL: not connected */
    int broken;                   /* the connection failed: close and connect again */
    int heartbeat;                /* the heartbeat the login settled on, s; 0: none */
    /* How long rrpc__amqp_publish waits for room in the socket's send
     * buffer (10 s after connect; the sync caller sets its call's time). */
    double write_wait_s;
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
/* Whether LEN bytes fit in L's socket send buffer now, so that writing
 * them cannot block: what waits there and LEN fill at most half of it --
 * or, for ONE message (ONE nonzero), the buffer is empty (a message larger
 * than half of it could never go out otherwise; if the broker stops
 * reading in its middle, the write waits until the heartbeat gives up).
 * A broker that stopped reading (paused, flow control, a stalled network)
 * fills the buffer; a write then blocks in librabbitmq until two
 * heartbeats have passed. */
int rrpc__amqp_room(const rrpc__amqp_link *l, size_t len, int one);
/* What a publish adds to its body on the wire, roughly (frames' bytes, the
 * method and header frames): for rrpc__amqp_room of several messages. */
#define RRPC__AMQP_PUBLISH_OVERHEAD 512
/* Publishes BODY (LEN bytes) to QUEUE through the default exchange with
 * PROPS, once there is room for it (rrpc__amqp_room), waiting
 * L->write_wait_s at most.  RRPC_OK; RRPC_ETIMEDOUT if no room came
 * (nothing was written: L is not broken, errmsg set); RRPC_ECONNECT (L
 * broken, errmsg set). */
int rrpc__amqp_publish(rrpc__amqp_link *l, const char *queue, const char *body, size_t len,
                       const amqp_basic_properties_t *props, int mandatory);
/* rrpc__amqp_publish without the wait for room: for a caller that made
 * sure of it (the async client, which never waits). */
int rrpc__amqp_publish_now(rrpc__amqp_link *l, const char *queue, const char *body, size_t len,
                           const amqp_basic_properties_t *props, int mandatory);
/* Reads the frame that made amqp_consume_message stop with
 * AMQP_STATUS_UNEXPECTED_STATE.  A basic.return is read whole: its
 * correlation_id is copied into RETURNED (LEN bytes; "" if none) and 1 is
 * returned.  A closed channel or connection breaks L (RRPC_ECONNECT).
 * Anything else is skipped (0). */
int rrpc__amqp_other_frame(rrpc__amqp_link *l, char *returned, size_t len);
/* The timeval of S seconds (>= 0). */
struct timeval rrpc__amqp_tv(double s);

/* Publisher confirms (amqrel).  After rrpc__amqp_confirm_select the
 * broker numbers the channel's publishes 1, 2, ... (the caller counts them:
 * the count starts again on every new connection) and answers each with a
 * basic.ack, or a basic.nack when it refused it (a queue full with
 * x-overflow reject-publish). */
int rrpc__amqp_confirm_select(rrpc__amqp_link *l);

enum {
    RRPC__AMQP_EV_NONE,   /* nothing arrived in time, or a frame skipped */
    RRPC__AMQP_EV_RETURN, /* basic.return: returned holds its correlation_id */
    RRPC__AMQP_EV_ACK,    /* basic.ack of tag (and before it, if multiple) */
    RRPC__AMQP_EV_NACK    /* basic.nack of tag (and before it, if multiple) */
};
typedef struct rrpc__amqp_event {
    int kind;
    uint64_t tag;
    int multiple;
    char returned[256];
} rrpc__amqp_event;
/* Reads the next frame that is not a delivery, waiting TIMEOUT_S at most:
 * what made amqp_consume_message stop with AMQP_STATUS_UNEXPECTED_STATE, or
 * a confirm awaited after a publish.  RRPC_OK with EV filled (EV_NONE on a
 * timeout); a closed channel or connection, or a basic.deliver (which only
 * amqp_consume_message may read: the link is mended so that the broker
 * hands the message out again), break L (RRPC_ECONNECT). */
int rrpc__amqp_next_event(rrpc__amqp_link *l, double timeout_s, rrpc__amqp_event *ev);
/* Waits up to TIMEOUT_S for the confirm of publish number SEQ, skipping
 * other confirms and returns.  RRPC_OK (acked), RRPC_EOVERLOADED (nacked),
 * RRPC_ETIMEDOUT, or RRPC_ECONNECT (L broken); errmsg set on errors. */
int rrpc__amqp_wait_confirm(rrpc__amqp_link *l, uint64_t seq, double timeout_s);
/* Whether a confirm EV settles publish number SEQ. */
int rrpc__amqp_confirms(const rrpc__amqp_event *ev, uint64_t seq);

#endif
