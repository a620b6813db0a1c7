/* dedup.c -- the recent answers of one server process (dedup.h).
 *
 * A fixed ring of entries (the oldest is forgotten first, as is one older
 * than the window), chained by the hash of the request's identity (its
 * correlation_id), under one mutex shared by the process's workers.  An
 * answer's text is kept only up to ANSWER_MAX bytes and KEPT_MAX in all:
 * memory stays bounded whatever the traffic; a request whose answer was
 * not kept is known as answered, and a copy of it is run again (said in
 * RELIABILITY.md: at least once).
 */
#define _POSIX_C_SOURCE 200809L
#include "amqp/dedup.h"
#include "core/clock.h"
#include "core/internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CAPACITY   8192
#define BUCKETS    8192
#define ANSWER_MAX (64 * 1024)
#define KEPT_MAX   ((size_t)32 * 1024 * 1024)

struct rrpc__dedup_entry {
    char *id; /* NULL: free */
    size_t id_len;
    char *answer;
    int running;
    double expires; /* monotonic */
    int next;       /* the chain, -1: end */
    unsigned bucket;
};

static unsigned hash(const char *id, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)id[i]) * 16777619u;
    return h % BUCKETS;
}

int rrpc__dedup_init(rrpc__dedup *d, double window_s)
{
    memset(d, 0, sizeof *d);
    d->ring = calloc(CAPACITY, sizeof *d->ring);
    d->buckets = malloc(BUCKETS * sizeof *d->buckets);
    if (d->ring == NULL || d->buckets == NULL) {
        free(d->ring);
        free(d->buckets);
        return RRPC_ENOMEM;
    }
    for (int i = 0; i < BUCKETS; i++)
        d->buckets[i] = -1;
    d->window_s = window_s > 0 ? window_s : 600;
    pthread_mutex_init(&d->mu, NULL);
    return RRPC_OK;
}

static void forget_answer(rrpc__dedup *d, rrpc__dedup_entry *e)
{
    if (e->answer != NULL)
        d->kept_bytes -= strlen(e->answer) + 1;
    free(e->answer);
    e->answer = NULL;
}

void rrpc__dedup_free(rrpc__dedup *d)
{
    if (d->ring == NULL)
        return;
    for (int i = 0; i < CAPACITY; i++) {
        free(d->ring[i].id);
        free(d->ring[i].answer);
    }
    free(d->ring);
    free(d->buckets);
    d->ring = NULL;
    pthread_mutex_destroy(&d->mu);
}

static rrpc__dedup_entry *find(rrpc__dedup *d, const char *id, size_t len)
{
    for (int i = d->buckets[hash(id, len)]; i >= 0; i = d->ring[i].next) {
        rrpc__dedup_entry *e = &d->ring[i];
        if (e->id_len == len && memcmp(e->id, id, len) == 0)
            return e->running || e->expires > rrpc__monotonic() ? e : NULL;
    }
    return NULL;
}

/* Takes the ring's next slot (unlinking what it held) for ID, running. */
static rrpc__dedup_entry *take_slot(rrpc__dedup *d, const char *id, size_t len)
{
    int slot = d->next;
    d->next = (d->next + 1) % CAPACITY;
    rrpc__dedup_entry *e = &d->ring[slot];
    if (e->id != NULL) {
        int *link = &d->buckets[e->bucket];
        while (*link != slot)
            link = &d->ring[*link].next;
        *link = e->next;
        free(e->id);
        forget_answer(d, e);
    }
    e->id = malloc(len + 1);
    if (e->id == NULL)
        return NULL;
    memcpy(e->id, id, len);
    e->id[len] = '\0';
    e->id_len = len;
    e->running = 1;
    e->bucket = hash(id, len);
    e->next = d->buckets[e->bucket];
    d->buckets[e->bucket] = slot;
    return e;
}

int rrpc__dedup_begin(rrpc__dedup *d, const char *id, size_t id_len, char **answer)
{
    *answer = NULL;
    pthread_mutex_lock(&d->mu);
    int st = RRPC__DEDUP_NEW;
    rrpc__dedup_entry *e = find(d, id, id_len);
    if (e != NULL && e->running)
        st = RRPC__DEDUP_RUNNING;
    else if (e != NULL && e->answer != NULL && (*answer = strdup(e->answer)) != NULL)
        st = RRPC__DEDUP_DONE;
    else if (e != NULL)
        e->running = 1; /* answered, but its text was not kept: run again */
    else
        take_slot(d, id, id_len); /* out of memory: not remembered, runs */
    pthread_mutex_unlock(&d->mu);
    return st;
}

void rrpc__dedup_done(rrpc__dedup *d, const char *id, size_t id_len, const char *answer)
{
    pthread_mutex_lock(&d->mu);
    rrpc__dedup_entry *e = find(d, id, id_len);
    if (e == NULL)
        e = take_slot(d, id, id_len); /* forgotten while it ran */
    if (e != NULL) {
        e->running = 0;
        e->expires = rrpc__monotonic() + d->window_s;
        forget_answer(d, e);
        /* "": answered with nothing to send (a notification) */
        const char *text = answer != NULL ? answer : "";
        size_t n = strlen(text) + 1;
        if (n <= ANSWER_MAX && d->kept_bytes + n <= KEPT_MAX && (e->answer = strdup(text)))
            d->kept_bytes += n;
    }
    pthread_mutex_unlock(&d->mu);
}

void rrpc__dedup_forget(rrpc__dedup *d, const char *id, size_t id_len)
{
    pthread_mutex_lock(&d->mu);
    rrpc__dedup_entry *e = find(d, id, id_len);
    if (e != NULL && e->running) {
        e->running = 0;
        if (e->answer == NULL)
            e->expires = 0; /* never answered: forgotten */
    }
    pthread_mutex_unlock(&d->mu);
}
