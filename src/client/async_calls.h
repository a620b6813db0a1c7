/* async_calls.h -- the async client's call records and ids (async_calls.c).
 *
 * Records are pooled, so a call costs no allocation of ours in the steady
 * state beyond the JSON values.  Responses are matched to calls by a
 * compact integer id that doubles as an index into a slot table:
 * id = generation << 22 | slot, so a lookup is one array access and a late
 * response for a call that already ended (its slot since reused) is
 * recognised by the generation and dropped.
 */
#ifndef RRPC_ASYNC_CALLS_H
#define RRPC_ASYNC_CALLS_H

#include "client/async_state.h"

#include <jansson.h>

/* ---- records (any thread unless said) ---- */

/* A record from the pools, or a new one; NULL if out of memory. */
rrpc__acall *rrpc__acall_get(rrpc_async *a);
/* Returns C to a pool: the loop thread's own list (handed to the other
 * threads in bulk by rrpc__acall_give_back) or the shared one. */
void rrpc__acall_put(rrpc_async *a, rrpc__acall *c);
/* Moves the loop thread's recycled records where callers can take them;
 * the _locked form with a->lock held.  Loop thread. */
void rrpc__acall_give_back(rrpc_async *a);
void rrpc__acall_give_back_locked(rrpc_async *a);
/* Frees a list of records (linked by next), timers included. */
void rrpc__acall_free_list(rrpc__acall *c);

/* ---- ids (loop thread) ---- */

#define RRPC__ASYNC_NO_SLOT UINT32_MAX /* a->free_slot of an empty table */

/* Gives C a free slot and so its id; RRPC_ESTATE (too many in flight) or
 * RRPC_ENOMEM with the message set. */
int rrpc__acall_take_slot(rrpc_async *a, rrpc__acall *c);
void rrpc__acall_release_slot(rrpc_async *a, rrpc__acall *c);
/* The call that holds ID, or NULL (unknown, or a slot since reused). */
rrpc__acall *rrpc__acall_lookup(rrpc_async *a, json_int_t id);

/* The ids of one group handed to the transport's deliver(), so that a
 * refusal fails exactly those calls.  Allocated by async_send.c, freed when
 * the transport reports the group's end (async_receive.c). */
typedef struct rrpc__agroup {
    size_t n;
    uint64_t ids[];
} rrpc__agroup;

/* ---- ending calls (loop thread) ---- */

/* The one way a call ends: frees its slot and timer, then runs its
 * callback with STATUS, RESULT and ERROR (borrowed).  The caller has set
 * the error message. */
void rrpc__acall_finish(rrpc_async *a, rrpc__acall *c, int status, json_t *result, json_t *error);
/* Ends every call that holds a slot with STATUS and the current message. */
void rrpc__acall_fail_all(rrpc_async *a, int status);
/* A record that failed before it was submitted: a call's callback still
 * runs (rrpc_async_call already returned RRPC_OK); a notification is
 * recycled. */
void rrpc__acall_fail_unsubmitted(rrpc_async *a, rrpc__acall *c, int status);

#endif /* RRPC_ASYNC_CALLS_H */
