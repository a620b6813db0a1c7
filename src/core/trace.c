/* trace.c -- W3C Trace Context for requests (trace.h).
 *
 * Every call carries a traceparent, so making one must cost next to
 * nothing: ids come from a per-thread xoshiro256** generator seeded once
 * from getrandom, never from a syscall per call.  Trace ids are not
 * secrets (reply keys are, and keep using random.c).  A forked child
 * would repeat its parent's sequence, so a fork bumps a generation that
 * makes every thread of the child seed again.
 */
#define _GNU_SOURCE
#include "core/trace.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const char hexdigits[] = "0123456789abcdef";

/* ---- the generator ---------------------------------------------------- */

static atomic_uint fork_generation = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static _Thread_local uint64_t rng[4];
static _Thread_local unsigned rng_generation; /* 0: not seeded */

static void after_fork(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork);
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void seed(unsigned generation)
{
    pthread_once(&atfork_once, register_atfork);
    uint64_t s[4] = {0};
    if (getrandom(s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        /* No entropy yet (early boot): ids need only be unlikely to
         * collide, so the clock and this thread's address will do. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)(uintptr_t)&rng;
        for (int i = 0; i < 4; i++)
            s[i] ^= splitmix(&x);
    }
    if ((s[0] | s[1] | s[2] | s[3]) == 0)
        s[0] = 1; /* the one state xoshiro cannot leave */
    memcpy(rng, s, sizeof rng);
    rng_generation = generation;
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

unsigned long long rrpc__fast_random(void)
{
    unsigned generation = atomic_load_explicit(&fork_generation, memory_order_relaxed);
    if (rng_generation != generation)
        seed(generation);
    uint64_t *s = rng;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* ---- reading and writing traceparents --------------------------------- */

static int lowhex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Nonzero if TEXT[0..n) is lowercase hex and not all zeros. */
static int hex_id(const char *text, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!lowhex(text[i]))
            return 0;
        nonzero |= text[i] != '0';
    }
    return nonzero;
}

int rrpc__traceparent_parse(const char *text, size_t len, char out[RRPC__TRACEPARENT_LEN + 1])
{
    if (text == NULL || len < RRPC__TRACEPARENT_LEN)
        return 0;
    if (!lowhex(text[0]) || !lowhex(text[1]) || (text[0] == 'f' && text[1] == 'f'))
        return 0; /* version ff is forbidden */
    int v00 = text[0] == '0' && text[1] == '0';
    /* Version 00 is exactly 55 characters; a later version may append
     * fields after a '-', which a 00 reader skips. */
    if (v00 ? len != RRPC__TRACEPARENT_LEN
            : len > RRPC__TRACEPARENT_LEN && text[RRPC__TRACEPARENT_LEN] != '-')
        return 0;
    if (text[2] != '-' || text[35] != '-' || text[52] != '-')
        return 0;
    if (!hex_id(text + 3, 32) || !hex_id(text + 36, 16) || !lowhex(text[53]) || !lowhex(text[54]))
        return 0;
    memcpy(out, text, RRPC__TRACEPARENT_LEN);
    out[0] = out[1] = '0'; /* carried on as the version this reader knows */
    out[RRPC__TRACEPARENT_LEN] = '\0';
    return 1;
}

int rrpc__tracestate_ok(const char *text, size_t len)
{
    if (text == NULL || len > RRPC__TRACESTATE_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (text[i] < 0x20 || text[i] > 0x7e)
            return 0;
    return 1;
}

static void put_hex(char *out, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        out[i] = hexdigits[v & 15];
}

/* A random id that is not zero, as 16 hex digits. */
static void put_random_id(char *out)
{
    uint64_t v;
    do
        v = rrpc__fast_random();
    while (v == 0);
    put_hex(out, v, 16);
}

void rrpc__traceparent_new(char out[RRPC__TRACEPARENT_LEN + 1])
{
    memcpy(out, "00-", 3);
    put_random_id(out + 3); /* the trace id's first half is never 0: nor is it */
    put_hex(out + 19, rrpc__fast_random(), 16);
    out[35] = '-';
    put_random_id(out + 36);
    memcpy(out + 52, "-00", 4);
}

void rrpc__traceparent_child(const char *parent, char out[RRPC__TRACEPARENT_LEN + 1])
{
    memcpy(out, parent, RRPC__TRACEPARENT_LEN + 1);
    put_random_id(out + 36);
}

/* ---- the request the thread is handling ------------------------------- */

static _Thread_local const char *handled_parent;
static _Thread_local const char *handled_state;

void rrpc__trace_enter(const char *traceparent, const char *tracestate)
{
    handled_parent = traceparent;
    handled_state = traceparent ? tracestate : NULL;
}

void rrpc__trace_leave(void)
{
    handled_parent = handled_state = NULL;
}

void rrpc__trace_outgoing(char out[RRPC__TRACEPARENT_LEN + 1], const char **state)
{
    if (handled_parent != NULL) {
        rrpc__traceparent_child(handled_parent, out);
        *state = handled_state;
    } else {
        rrpc__traceparent_new(out);
        *state = NULL;
    }
}
