/* deadletter.h -- dead-letter records (deadletter.c), no I/O. */
#ifndef RRPC_DEADLETTER_H
#define RRPC_DEADLETTER_H

#include <rrpc/rrpc.h>

#include <stddef.h>

/* Dead letters keep a bounded copy of what they describe (PROTOCOL.md
 * section 6): the first bytes of an oversized message or response. */
#define RRPC__DEAD_PREFIX_BYTES 4096

/* The dead-letter record for MESSAGE (PROTOCOL.md section 6), as new text.
 * A message or response of at most KEEP bytes is kept whole; a longer one
 * as its first RRPC__DEAD_PREFIX_BYTES bytes, its length and SHA-1.  The
 * response is RESPONSE (a value) or RESPONSE_TEXT (JSON text), or neither. */
char *rrpc__dead_letter_text(const char *service, const char *reason, const char *message,
                             size_t message_len, size_t keep, const json_t *response,
                             const char *response_text);

/* The SHA-1 of DATA[0..len) as 40 lowercase hex digits and a NUL. */
void rrpc__sha1_hex(const void *data, size_t len, char hex[41]);

#endif
