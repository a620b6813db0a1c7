/* protocol.h -- JSON-RPC envelopes and reply-key rules (protocol.c), no I/O. */
#ifndef RRPC_PROTOCOL_H
#define RRPC_PROTOCOL_H

#include "core/envelope.h"

#include <rrpc/rrpc.h>

#include <stddef.h>

/* A new request object.  params may be NULL (omitted), id NULL makes a
 * notification, reply_to NULL omits the member.  Arguments borrowed. */
json_t *rrpc__request_build(const char *method, const json_t *params, const char *id,
                            const char *reply_to);

/* Sets REQ's "traceparent" (and "tracestate" unless TRACESTATE is NULL),
 * PROTOCOL.md section 7.  Arguments borrowed, already valid. */
void rrpc__request_set_trace(json_t *req, const char *traceparent, const char *tracestate);

/* Appends the same members to TEXT, an encoded request object (owned,
 * realloc'ed; NULL if out of memory, TEXT then freed): spliced in before
 * its closing brace, since encoding them with jansson was a seventh of a
 * sync call's instructions. */
char *rrpc__request_text_add_trace(char *text, const char *traceparent, const char *tracestate);

/* New response objects.  id borrowed (NULL means JSON null); data stolen. */
json_t *rrpc__response_result(const json_t *id, json_t *result_stolen);
json_t *rrpc__response_error(const json_t *id, int code, const char *message, json_t *data_stolen);
/* A response carrying ERROR (stolen), and a new error object. */
json_t *rrpc__response_error_object(const json_t *id, json_t *error_stolen);
json_t *rrpc__error_object(int code, const char *message, json_t *data_stolen);

/* The text of a response envelope built by the functions above (new,
 * free()): the same bytes as json_dumps with RRPC__JSON_ENCODE_FLAGS,
 * written directly because encoding the envelope object was a fifth of
 * a worker's instructions per call.  NULL if out of memory. */
char *rrpc__response_text(const json_t *response);
/* The same text for the response to ID (NULL: null) carrying RESULT or,
 * if RESULT is NULL, ERROR, without building the envelope object. */
char *rrpc__response_text_of(const json_t *id, const json_t *result, const json_t *error);
/* Writes V into OUT (ROOM bytes, not NUL-terminated) as json_dumpb with
 * RRPC__JSON_ENCODE_FLAGS would, if it is an array of integers, plain
 * ASCII strings and literals (params as most calls send them): returns
 * the length, or 0 for anything else or too little room (use jansson). */
size_t rrpc__flat_array_text(const json_t *v, char *out, size_t room);

/* Checks a decoded request object against JSON-RPC 2.0.  Returns 0 when
 * valid, else RRPC_JSONRPC_INVALID_REQUEST with *why set to a static text. */
int rrpc__request_validate(const json_t *req, const char **why);
/* The same for a request already read into ENV (an object's members). */
int rrpc__envelope_validate(const rrpc__envelope *env, const char **why);
/* The WHY of a request whose member "priority" is not one of the three
 * names: answered with data {"member": "priority"} (PROTOCOL.md section 7). */
extern const char rrpc__why_priority[];

/* The key a response to REQ goes to (PROTOCOL.md section 3): reply_to, else
 * a string id, else a number id's text.  Fills buf (NUL-terminated, but the
 * key itself may hold NUL bytes: Redis keys are binary) and returns the
 * key's length, or 0 if the request names no usable key. */
size_t rrpc__reply_key(const json_t *req, char *buf, size_t len);
/* The same for a request object read into ENV. */
size_t rrpc__envelope_reply_key(const rrpc__envelope *env, char *buf, size_t len);

/* The largest magnitude of an integer every peer reads exactly: 2^53. */
#define RRPC__MAX_EXACT_INT 9007199254740992LL

/* A byte string that is not NUL-terminated (a service name read from
 * <prefix>rrpc:services). */
typedef struct rrpc__name {
    const char *s;
    size_t len;
} rrpc__name;

/* What a worker knows to judge a reply key by (PROTOCOL.md section 3,
 * "Which reply keys a worker accepts", rules 1 to 4).  Strings borrowed. */
typedef struct rrpc__key_rules {
    const char *prefix;
    const char *list_key, *dead_key, *stats_key; /* the service's own keys */
    int shards;
    const char *const *allowed_prefixes; /* NULL-terminated; NULL = any key */
    const rrpc__name *services;          /* registered names, rrpc__names_sort-ed */
    size_t nservices;
} rrpc__key_rules;

/* Sorts NAMES for rrpc__key_rules.services. */
void rrpc__names_sort(rrpc__name *names, size_t n);
/* NULL if a worker may reply on KEY[0..len), else the dead letter's reason
 * ("reply key refused: ...", a static text).  Rule 5 (the key's type, in
 * Redis) is the reply script's. */
const char *rrpc__reply_key_refusal(const rrpc__key_rules *r, const char *key, size_t len);

/* The reply script of PROTOCOL.md section 3, byte for byte as published. */
extern const char rrpc__reply_script[];

/* Decodes a response text for the call with id EXPECTED_ID.  On RRPC_OK
 * *result is new; on RRPC_EREMOTE *error is new; else both stay NULL and
 * err describes the problem. */
int rrpc__response_parse(const char *text, size_t len, const char *expected_id, json_t **result,
                         json_t **error, char *err, size_t errlen);

/* RRPC__JSON_DECODE_FLAGS, the parse flags of every decoder: envelope.h. */
/* Compact output that keeps NUL-bearing strings intact. */
#define RRPC__JSON_ENCODE_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)

#endif
