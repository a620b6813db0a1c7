/* server_worker.h -- one worker of a server, run on the calling thread.
 *
 * For tests/fuzz/fuzz_worker.c only: it runs the real worker loop of the
 * transport (Redis: pop, dispatch, reply-key rules, reply script calls,
 * dead letters, give-back, reliable commits) on one link of its own to
 * S's URL, so that a harness that plays Redis on a unix socket sees every
 * byte the worker sends.  No registry, heartbeat or reaper: those have
 * links of their own.
 */
#ifndef RRPC_SERVER_WORKER_H
#define RRPC_SERVER_WORKER_H

#include <rrpc/rrpc.h>

/* Opens a link to S's URL and runs worker ID of S until rrpc_server_stop(S)
 * and it has nothing left to send (the stop flag is cleared again), with
 * the transport's run_alone (server_ops.h).  In reliable mode it first
 * loads the worker scripts on that link (SCRIPT LOAD, learning their
 * SHA-1s).  RRPC_OK, or the error of the link. */
int rrpc__server_run_worker(rrpc_server *s, int id);

#endif
