/* envelope.h -- a request object's members read in one pass over its text
 * (envelope.c), without building a JSON object for the envelope.  No I/O.
 *
 * jansson decoding the whole request was 60 % of a worker's instructions
 * (docs/PERFORMANCE.md); most of its members are short strings and
 * integers the worker only looks at.  The scanner reads those itself and
 * hands jansson only the values it must build (params, an id) or cannot
 * read cheaply (escapes, non-ASCII, real numbers, nested values).  It
 * accepts a strict subset of JSON and gives up (-1) on anything else, so
 * every error, limit and oddity keeps jansson's meaning: the caller then
 * decodes the text with jansson and reads the same struct from the object
 * (rrpc__envelope_from_json).  tests/fuzz/fuzz_envelope.c checks that
 * both ways agree on every input.
 */
#ifndef RRPC_ENVELOPE_H
#define RRPC_ENVELOPE_H

#include <jansson.h>

#include <stddef.h>

/* Parse flags shared by every decoder: top-level scalars are decoded (and
 * rejected as invalid requests later), NUL inside strings is allowed. */
#define RRPC__JSON_DECODE_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)

/* ---- the members a worker reads ----------------------------------------
 *
 * To read one more member: add a line X(NAME, "name", FLAGS) below, then
 * use env->m[RRPC__M_NAME] (its kind, string, integer or json).  Both
 * ways of reading an envelope pick it up; nothing else changes.  FLAGS:
 * RRPC__M_JSON if the code needs the value as a json_t (->json); without
 * it a string, integer, boolean or null is read without jansson.  A
 * member not listed is still checked (the message must be valid JSON) and
 * remains reachable with rrpc_request_member. */
#define RRPC__M_JSON 1
#define RRPC__ENVELOPE_MEMBERS(X)                                                                  \
    X(JSONRPC, "jsonrpc", 0)                                                                       \
    X(METHOD, "method", 0)                                                                         \
    X(PARAMS, "params", RRPC__M_JSON)                                                              \
    X(ID, "id", RRPC__M_JSON)                                                                      \
    X(REPLY_TO, "reply_to", 0)                                                                     \
    X(DEADLINE, "deadline", 0)                                                                     \
    X(SENT, "sent", 0)                                                                             \
    X(TRACEPARENT, "traceparent", 0)                                                               \
    X(TRACESTATE, "tracestate", 0)                                                                 \
    X(PROGRESS, "progress", 0)                                                                     \
    X(CANCEL_KEY, "cancel_key", 0)                                                                 \
    X(PRIORITY, "priority", 0)                                                                     \
    X(TENANT, "tenant", 0)

enum {
#define RRPC__M_ENUM(name, text, flags) RRPC__M_##name,
    RRPC__ENVELOPE_MEMBERS(RRPC__M_ENUM)
#undef RRPC__M_ENUM
        RRPC__M_COUNT
};

/* What a member's value is; ABSENT when the request has no such member. */
typedef enum rrpc__kind {
    RRPC__K_ABSENT = 0,
    RRPC__K_STRING,
    RRPC__K_INTEGER,
    RRPC__K_REAL,
    RRPC__K_TRUE,
    RRPC__K_FALSE,
    RRPC__K_NULL,
    RRPC__K_OBJECT,
    RRPC__K_ARRAY
} rrpc__kind;

typedef struct rrpc__member {
    rrpc__kind kind;
    const char *s; /* STRING: its bytes, NUL-terminated (and may hold NULs) */
    size_t len;    /* STRING: their number */
    json_int_t i;  /* INTEGER: its value */
    json_t *json;  /* the value: always for RRPC__M_JSON members and in an
                      envelope read from an object, else maybe NULL */
} rrpc__member;

typedef struct rrpc__envelope {
    rrpc__member m[RRPC__M_COUNT];
    int object; /* the request is a JSON object (else every member is ABSENT) */
    char *buf;  /* scanned: a copy of the text the strings point into */
    int owns;   /* scanned: the members' json values are owned */
} rrpc__envelope;

/* Reads the members of the request object TEXT (LEN bytes).  Returns 0 if
 * TEXT is one JSON object that json_loadb with RRPC__JSON_DECODE_FLAGS
 * decodes, and ENV then holds its members' values exactly as jansson
 * would (release with rrpc__envelope_clear).  Returns -1, with nothing to
 * release, for anything else it does not read itself: not an object (a
 * batch, a scalar), invalid JSON, a member name with an escape or beyond
 * ASCII, a member listed above given twice, nesting deeper than a few
 * hundred levels, no memory.  Decode such text with jansson. */
int rrpc__envelope_scan(const char *text, size_t len, rrpc__envelope *env);

/* Reads the members of OBJ, a decoded request (borrowed: ENV points into
 * it; anything but an object leaves every member ABSENT). */
void rrpc__envelope_from_json(const json_t *obj, rrpc__envelope *env);

/* Releases what rrpc__envelope_scan allocated; harmless on either kind. */
void rrpc__envelope_clear(rrpc__envelope *env);

/* ---- responses, as clients read them --------------------------------- */

/* The members of a response (and of a progress message, which has a
 * method) that clients read; X(NAME, "name", FLAGS) as above. */
#define RRPC__RESPONSE_MEMBERS(X)                                                                  \
    X(JSONRPC, "jsonrpc", 0)                                                                       \
    X(RESULT, "result", RRPC__M_JSON)                                                              \
    X(ERROR, "error", RRPC__M_JSON)                                                                \
    X(ID, "id", RRPC__M_JSON)                                                                      \
    X(METHOD, "method", 0)

enum {
#define RRPC__R_ENUM(name, text, flags) RRPC__R_##name,
    RRPC__RESPONSE_MEMBERS(RRPC__R_ENUM)
#undef RRPC__R_ENUM
        RRPC__R_COUNT
};

typedef struct rrpc__response_view {
    rrpc__member m[RRPC__R_COUNT];
    char *buf;
} rrpc__response_view;

/* rrpc__envelope_scan for a response: 0 with R's members (owned: release
 * with rrpc__response_view_clear), or -1 (nothing to release) for anything
 * it does not read itself -- decode that with jansson. */
int rrpc__response_scan(const char *text, size_t len, rrpc__response_view *r);
void rrpc__response_view_clear(rrpc__response_view *r);

/* The kind of a decoded value (NULL: ABSENT). */
rrpc__kind rrpc__kind_of(const json_t *v);

#endif
