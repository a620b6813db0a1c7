/* dedup.h -- a server process's memory of the reliable requests it
 * answered over AMQP (dedup.c): without a shared store, the most rrpc can
 * do against redeliveries and callers' resends (docs/RELIABILITY.md,
 * "Over AMQP").  Internal to src/amqp/. */
#ifndef RRPC_AMQP_DEDUP_H
#define RRPC_AMQP_DEDUP_H

#include <pthread.h>
#include <stddef.h>

typedef struct rrpc__dedup_entry rrpc__dedup_entry;

typedef struct rrpc__dedup {
    pthread_mutex_t mu;
    rrpc__dedup_entry *ring; /* CAPACITY entries, the oldest overwritten first */
    int *buckets;            /* chain heads by hash of the id, -1: none */
    int next;                /* the ring slot the next request takes */
    size_t kept_bytes;       /* answers' text held */
    double window_s;
} rrpc__dedup;

enum {
    RRPC__DEDUP_NEW,     /* first seen: marked running, the caller runs it */
    RRPC__DEDUP_RUNNING, /* another worker of this process runs it now */
    RRPC__DEDUP_DONE     /* answered: *answer is its text (new; NULL: none kept) */
};

/* RRPC_OK or RRPC_ENOMEM. */
int rrpc__dedup_init(rrpc__dedup *d, double window_s);
void rrpc__dedup_free(rrpc__dedup *d);
/* Looks ID up (and marks it running if it is new). */
int rrpc__dedup_begin(rrpc__dedup *d, const char *id, size_t id_len, char **answer);
/* Remembers ANSWER (borrowed; NULL: nothing was sent) for ID, answered. */
void rrpc__dedup_done(rrpc__dedup *d, const char *id, size_t id_len, const char *answer);
/* Takes back the running mark of ID (begin said NEW, and it was not run). */
void rrpc__dedup_forget(rrpc__dedup *d, const char *id, size_t id_len);

#endif
