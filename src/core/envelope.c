/* envelope.c -- a request object's members without decoding all of it
 * (envelope.h).  No I/O.
 *
 * The rule that keeps it safe: read directly only what is unambiguous
 * (member names and string values of plain ASCII without escapes, short
 * integers, true, false, null) and give every other value to jansson as a
 * slice of the text.  Anything that does not fit -- including every kind
 * of invalid JSON -- makes the scan give up, and the caller decodes the
 * whole text with jansson, whose verdicts and error texts stay the ones
 * the protocol promises.
 */
#include "core/envelope.h"

#include <stdlib.h>
#include <string.h>

/* Deeper values are left to a full decode, where jansson's own depth
 * limit (2048, counted from the top) applies; a slice alone would be
 * allowed one level more. */
#define SLICE_MAX_DEPTH 512
/* An integer of at most this many digits cannot overflow json_int_t. */
#define DIRECT_MAX_DIGITS 18

/* The members one kind of object is read for, in the order of its enum. */
typedef struct spec {
    const char *name;
    size_t len;
    int flags;
} spec;

#define RRPC__M_ROW(name, text, flags) {text, sizeof text - 1, flags},
static const spec request_members[RRPC__M_COUNT] = {RRPC__ENVELOPE_MEMBERS(RRPC__M_ROW)};
static const spec response_members[RRPC__R_COUNT] = {RRPC__RESPONSE_MEMBERS(RRPC__M_ROW)};
#undef RRPC__M_ROW

/* Which members are read, into which array. */
typedef struct target {
    const spec *specs;
    int count;
    rrpc__member *m;
} target;

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static char *skip_ws(char *p, const char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

/* A byte a string may hold as it is, with no question of encoding. */
static int plain(char c)
{
    return (unsigned char)c >= 0x20 && (unsigned char)c < 0x80 && c != '"' && c != '\\';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A byte that may continue a number or literal token. */
static int token_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' ||
           c == '-' || c == '.';
}

/* P at a string's opening quote: the byte after its closing one, or NULL.
 * Escapes are only stepped over; jansson judges them. */
static char *string_end(char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* The end of the value at P, for jansson to decode as a slice: a string,
 * an object or array (brackets matched outside strings), else a token.
 * NULL if it does not end in the text or nests too deep. */
static char *value_end(char *p, const char *end)
{
    if (*p == '"')
        return string_end(p, end);
    if (*p != '{' && *p != '[') {
        while (p < end && token_char(*p))
            p++;
        return p;
    }
    int depth = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p = string_end(p, end);
            if (p == NULL)
                return NULL;
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > SLICE_MAX_DEPTH)
                return NULL;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return p + 1;
        }
        p++;
    }
    return NULL;
}

rrpc__kind rrpc__kind_of(const json_t *v)
{
    switch (v ? json_typeof(v) : (json_type)-1) {
    case JSON_STRING: return RRPC__K_STRING;
    case JSON_INTEGER: return RRPC__K_INTEGER;
    case JSON_REAL: return RRPC__K_REAL;
    case JSON_TRUE: return RRPC__K_TRUE;
    case JSON_FALSE: return RRPC__K_FALSE;
    case JSON_NULL: return RRPC__K_NULL;
    case JSON_OBJECT: return RRPC__K_OBJECT;
    case JSON_ARRAY: return RRPC__K_ARRAY;
    default: return RRPC__K_ABSENT;
    }
}

/* Fills M from V (borrowed). */
static void member_from(rrpc__member *m, json_t *v)
{
    m->kind = rrpc__kind_of(v);
    m->json = v;
    if (m->kind == RRPC__K_STRING) {
        m->s = json_string_value(v);
        m->len = json_string_length(v);
    } else if (m->kind == RRPC__K_INTEGER) {
        m->i = json_integer_value(v);
    }
}

/* A literal at P (true, false, null): its kind, or ABSENT. */
static rrpc__kind literal(const char *p, const char *end, size_t *n)
{
    static const struct {
        const char *text;
        size_t len;
        rrpc__kind kind;
    } lits[] = {{"true", 4, RRPC__K_TRUE}, {"false", 5, RRPC__K_FALSE}, {"null", 4, RRPC__K_NULL}};
    for (size_t i = 0; i < sizeof lits / sizeof lits[0]; i++)
        if ((size_t)(end - p) >= lits[i].len && memcmp(p, lits[i].text, lits[i].len) == 0 &&
            (end - p == (ptrdiff_t)lits[i].len || !token_char(p[lits[i].len]))) {
            *n = lits[i].len;
            return lits[i].kind;
        }
    return RRPC__K_ABSENT;
}

/* Reads the value at P directly if it is a plain string, a short integer
 * or a literal.  Returns the byte after it, or NULL if it is none of those
 * (M untouched).  TERMINATE: a string's closing quote becomes a NUL (only
 * for a member's own value: an array's elements may yet go to jansson). */
static char *direct_value(char *p, const char *end, rrpc__member *m, int terminate)
{
    if (*p == '"') {
        char *q = p + 1;
        while (q < end && plain(*q))
            q++;
        if (q == end || *q != '"')
            return NULL;
        m->kind = RRPC__K_STRING;
        m->s = p + 1;
        m->len = (size_t)(q - p - 1);
        if (terminate)
            *q = '\0'; /* the copy's closing quote: the string is a C string too */
        return q + 1;
    }
    if (*p == '-' || is_digit(*p)) {
        char *q = p + (*p == '-');
        const char *digits = q;
        json_int_t v = 0;
        if (q < end && *q == '0')
            q++;
        else
            while (q < end && is_digit(*q) && q - digits < DIRECT_MAX_DIGITS)
                v = v * 10 + (*q++ - '0');
        if (q == digits || (q < end && token_char(*q)))
            return NULL; /* a fraction, an exponent, many digits, or not a number */
        m->kind = RRPC__K_INTEGER;
        m->i = *p == '-' ? -v : v;
        return q;
    }
    size_t n;
    rrpc__kind k = literal(p, end, &n);
    if (k == RRPC__K_ABSENT)
        return NULL;
    m->kind = k;
    return p + n;
}

/* The json_t of a member read directly (new), or NULL without memory. */
static json_t *direct_json(const rrpc__member *m)
{
    switch (m->kind) {
    case RRPC__K_STRING: return json_stringn_nocheck(m->s, m->len);
    case RRPC__K_INTEGER: return json_integer(m->i);
    case RRPC__K_TRUE: return json_true();
    case RRPC__K_FALSE: return json_false();
    default: return json_null();
    }
}

/* P at a member name's opening quote: the byte after its closing one, with
 * the name in *NAME and *LEN; NULL unless it is plain ASCII without escapes. */
static char *read_name(char *p, const char *end, const char **name, size_t *len)
{
    if (p == end || *p != '"')
        return NULL;
    char *q = p + 1;
    while (q < end && plain(*q))
        q++;
    if (q == end || *q != '"')
        return NULL;
    *name = p + 1;
    *len = (size_t)(q - p - 1);
    return q + 1;
}

/* Reads the array or object at P directly if all its values are plain
 * strings, short integers or literals (and an object's names plain):
 * params as most calls send them.  Members given twice are set twice, the
 * last one winning, as jansson's decoder does.  Returns the byte after it
 * with *OUT new, or NULL (nothing changed: jansson will read it). */
static char *direct_flat(char *p, const char *end, json_t **out)
{
    int is_object = *p == '{';
    char close = is_object ? '}' : ']';
    json_t *v = is_object ? json_object() : json_array();
    p = skip_ws(p + 1, end);
    if (v != NULL && p < end && *p == close) {
        *out = v;
        return p + 1;
    }
    while (v != NULL && p < end) {
        const char *name = NULL;
        size_t name_len = 0;
        if (is_object) {
            p = read_name(p, end, &name, &name_len);
            p = p ? skip_ws(p, end) : NULL;
            if (p == NULL || p == end || *p != ':')
                break;
            p = skip_ws(p + 1, end);
            if (p == end)
                break;
        }
        rrpc__member e = {RRPC__K_ABSENT, NULL, 0, 0, NULL};
        char *after = direct_value(p, end, &e, 0);
        json_t *item = after ? direct_json(&e) : NULL;
        if (item == NULL)
            break;
        if (is_object ? json_object_setn_new_nocheck(v, name, name_len, item)
                      : json_array_append_new(v, item))
            break;
        p = skip_ws(after, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
        } else if (p < end && *p == close) {
            *out = v;
            return p + 1;
        } else {
            break;
        }
    }
    json_decref(v);
    return NULL;
}

/* Reads the value at P into M: directly, or by jansson from a slice.
 * WANT_JSON: M->json must be set.  Returns the byte after it, or NULL. */
static char *read_value(char *p, const char *end, rrpc__member *m, int want_json)
{
    char *after = direct_value(p, end, m, 1);
    if (after != NULL) {
        if (want_json && (m->json = direct_json(m)) == NULL)
            return NULL;
        return after;
    }
    json_t *flat = NULL;
    if (want_json && (*p == '[' || *p == '{') && (after = direct_flat(p, end, &flat)) != NULL) {
        member_from(m, flat);
        return after;
    }
    after = value_end(p, end);
    json_t *v = after ? json_loadb(p, (size_t)(after - p), RRPC__JSON_DECODE_FLAGS, NULL) : NULL;
    if (v == NULL)
        return NULL;
    member_from(m, v);
    return after;
}

/* Which listed member NAME (LEN bytes) is, or -1. */
static int member_index(const target *t, const char *name, size_t len)
{
    for (int i = 0; i < t->count; i++)
        if (t->specs[i].len == len && memcmp(t->specs[i].name, name, len) == 0)
            return i;
    return -1;
}

/* Reads one "name": value into T; returns the byte after it, or NULL. */
static char *read_member(char *p, const char *end, const target *t)
{
    const char *name;
    size_t name_len;
    p = read_name(p, end, &name, &name_len);
    if (p == NULL)
        return NULL;
    p = skip_ws(p, end);
    if (p == end || *p != ':')
        return NULL;
    p = skip_ws(p + 1, end);
    if (p == end)
        return NULL;
    int which = member_index(t, name, name_len);
    if (which < 0) { /* not read, but it must be valid JSON */
        rrpc__member unused = {RRPC__K_ABSENT, NULL, 0, 0, NULL};
        p = read_value(p, end, &unused, 0);
        json_decref(unused.json);
        return p;
    }
    if (t->m[which].kind != RRPC__K_ABSENT)
        return NULL; /* given twice: jansson keeps the last, let it say which */
    return read_value(p, end, &t->m[which], t->specs[which].flags & RRPC__M_JSON);
}

static void clear_members(const target *t, int owns)
{
    for (int i = 0; owns && i < t->count; i++)
        json_decref(t->m[i].json);
    memset(t->m, 0, (size_t)t->count * sizeof *t->m);
}

/* Scans TEXT for T's members into a copy (*BUF, new); 0 or -1 (nothing
 * left to release). */
static int scan(const char *text, size_t len, const target *t, char **buf)
{
    memset(t->m, 0, (size_t)t->count * sizeof *t->m);
    *buf = malloc(len + 1);
    if (*buf == NULL)
        return -1;
    memcpy(*buf, text, len);
    (*buf)[len] = '\0';
    char *p = *buf;
    const char *end = *buf + len;
    p = skip_ws(p, end);
    if (p == end || *p != '{')
        goto fail;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            p = read_member(p, end, t);
            if (p == NULL)
                goto fail;
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
            } else if (p < end && *p == '}') {
                p++;
                break;
            } else {
                goto fail;
            }
        }
    }
    if (skip_ws(p, end) == end)
        return 0;
fail:
    clear_members(t, 1);
    free(*buf);
    *buf = NULL;
    return -1;
}

int rrpc__envelope_scan(const char *text, size_t len, rrpc__envelope *env)
{
    memset(env, 0, sizeof *env);
    target t = {request_members, RRPC__M_COUNT, env->m};
    if (scan(text, len, &t, &env->buf) != 0)
        return -1;
    env->object = env->owns = 1;
    return 0;
}

void rrpc__envelope_from_json(const json_t *obj, rrpc__envelope *env)
{
    memset(env, 0, sizeof *env);
    if (!json_is_object(obj))
        return;
    env->object = 1;
    for (int i = 0; i < RRPC__M_COUNT; i++)
        member_from(&env->m[i], json_object_get(obj, request_members[i].name));
}

void rrpc__envelope_clear(rrpc__envelope *env)
{
    target t = {request_members, RRPC__M_COUNT, env->m};
    clear_members(&t, env->owns);
    free(env->buf);
    memset(env, 0, sizeof *env);
}

int rrpc__response_scan(const char *text, size_t len, rrpc__response_view *r)
{
    memset(r, 0, sizeof *r);
    target t = {response_members, RRPC__R_COUNT, r->m};
    return scan(text, len, &t, &r->buf);
}

void rrpc__response_view_clear(rrpc__response_view *r)
{
    target t = {response_members, RRPC__R_COUNT, r->m};
    clear_members(&t, 1);
    free(r->buf);
    r->buf = NULL;
}
