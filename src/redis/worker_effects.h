/* worker_effects.h -- the at-most-once effects script (worker_effects.c),
 * named for tests/fuzz/fuzz_worker.c, which plays Redis and must know it. */
#ifndef RRPC_WORKER_EFFECTS_H
#define RRPC_WORKER_EFFECTS_H

/* KEYS[1] is a guard key {L}:applied:..., ARGV the guard's lifetime, the
 * number of effects and each effect as its argc and arguments. */
extern const char rrpc__effects_script[];

#endif
