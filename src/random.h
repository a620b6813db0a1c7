/* random.h -- unguessable identifiers and key names (random.c). */
#ifndef RRPC_RANDOM_H
#define RRPC_RANDOM_H

#include <stddef.h>

/* Writes 32 lowercase hex digits (128 random bits) and a NUL into hex. */
int rrpc__random_hex128(char hex[33]);

/* Builds "<prefix>rrpc:reply:<32 hex>" into buf. */
int rrpc__new_reply_key(char *buf, size_t len, const char *prefix);

/* Nonzero if NAME may name a service: non-empty, no whitespace or control
 * characters (PROTOCOL.md section 1). */
int rrpc__valid_name(const char *name);

/* Joins prefix and name into buf; RRPC_EINVAL if it does not fit. */
int rrpc__key_join(char *buf, size_t len, const char *prefix, const char *name, const char *suffix);

#endif
