/* opts.h -- public options structs that can grow (opts.c).
 *
 * Every public options struct starts with a size_t size: the sizeof the
 * caller compiled against, set by the _init functions (inline in rrpc.h,
 * so the sizeof is the caller's, not the library's).  The library never
 * reads a caller's struct field by field: the entry point fills a struct
 * of its own with the defaults and copies the bytes the caller's struct
 * has over it (rrpc__opts_load).  So a program built against an older,
 * shorter struct gets the defaults for the fields it lacks, and nothing
 * past its struct is read.  docs/DESIGN.md says why this scheme.
 */
#ifndef RRPC_OPTS_H
#define RRPC_OPTS_H

#include <stddef.h>

/* Fills the caller's SIZE bytes at OPTS for an _init function: zeroes,
 * then the library's DEFAULTS (DEFAULTS_SIZE bytes) as far as they fit,
 * and the leading size_t set to SIZE.  Nothing if SIZE cannot hold it. */
void rrpc__opts_init(void *opts, size_t size, const void *defaults, size_t defaults_size);

/* Loads the caller's options SRC into DST (DST_SIZE bytes, the library's
 * struct, already holding the defaults): the bytes SRC's leading size says
 * it has, at most DST_SIZE; then DST's size is DST_SIZE.  RRPC_EINVAL
 * (with a message in errmsg) if SRC's size cannot be the sizeof a struct
 * that _init filled, or is larger than DST_SIZE with a nonzero byte in the
 * excess: a newer program set an option this library does not know. */
int rrpc__opts_load(void *dst, size_t dst_size, const void *src, char *errmsg, size_t errmsg_len);

#endif /* RRPC_OPTS_H */
