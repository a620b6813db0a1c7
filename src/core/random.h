/* random.h -- unguessable identifiers and valid names (random.c). */
#ifndef RRPC_RANDOM_H
#define RRPC_RANDOM_H

#include <stddef.h>

/* Writes 32 lowercase hex digits (128 random bits) and a NUL into hex. */
int rrpc__random_hex128(char hex[33]);

/* Nonzero if NAME may name a service: non-empty, no whitespace or control
 * characters (PROTOCOL.md section 1). */
int rrpc__valid_name(const char *name);

#endif
