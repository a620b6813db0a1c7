/* safe_text.c -- text from Redis, made safe for a terminal (rrpc_safe_text).
 *
 * Much of what rrpc shows a person comes from Redis, i.e. from anyone who
 * can write there: a caller's message in a dead letter, a worker's host
 * name, a Redis error text in a log line.  Printed raw, an ESC sequence in
 * it would drive the operator's terminal (retitle it, rewrite the screen,
 * answer back).  The library's log (log.c) and the rrpc CLI both pass such
 * text through here, so the rule lives in one place.  Pure: no I/O.
 */
#include <rrpc/rrpc.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Decodes the UTF-8 sequence at S (N bytes left): its length, with the code
 * point in *cp, or 0 if it is not valid (truncated, overlong, a surrogate,
 * beyond U+10FFFF). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    if (len == 0 || s[0] > 0xF4 || n < len)
        return 0;
    uint32_t c = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* Code points beyond ASCII that a terminal acts on rather than shows: the
 * C1 controls (U+009B is CSI) and the bidirectional overrides and
 * isolates, which reorder what follows them ("Trojan Source"), plus the
 * line and paragraph separators. */
static int unsafe_code_point(uint32_t c)
{
    return (c >= 0x80 && c <= 0x9F) || c == 0x200E || c == 0x200F || (c >= 0x2028 && c <= 0x202E) ||
           (c >= 0x2066 && c <= 0x2069);
}

/* The escape for the character at P (STEP bytes, code point CP; STEP 0: a
 * byte that is not UTF-8) in ESC, or 0 if it is shown as it is. */
static size_t escape(char esc[16], const unsigned char *p, size_t step, uint32_t cp, unsigned flags)
{
    int json = (flags & RRPC_SAFE_JSON) != 0;
    if (step == 0) /* not UTF-8: the byte, in hex (cannot occur in an encoder's JSON) */
        return json ? 0 : (size_t)snprintf(esc, 16, "\\x%02x", p[0]);
    if (step == 1 && p[0] == 0x7F)
        return (size_t)snprintf(esc, 16, json ? "\\u007f" : "\\x7f");
    if (step == 1 && p[0] < 0x20) {
        /* In JSON, an encoder escaped those inside strings; the others are
         * whitespace between tokens and must stay. */
        if (json)
            return 0;
        const char *named = p[0] == '\n'   ? "\\n"
                            : p[0] == '\t' ? "\\t"
                            : p[0] == '\r' ? "\\r"
                                           : NULL;
        return named ? (size_t)snprintf(esc, 16, "%s", named)
                     : (size_t)snprintf(esc, 16, "\\x%02x", p[0]);
    }
    if (step > 1 && unsafe_code_point(cp))
        return (size_t)snprintf(esc, 16, "\\u%04x", (unsigned)cp);
    return 0;
}

const char *rrpc_safe_text(char *out, size_t len, const char *text, unsigned flags)
{
    if (out == NULL || len == 0)
        return out;
    size_t used = 0, n = text ? strlen(text) : 0;
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < n;) {
        char esc[16];
        uint32_t cp = p[i];
        size_t step = p[i] < 0x80 ? 1 : utf8_decode(p + i, n - i, &cp);
        size_t esc_len = escape(esc, p + i, step, cp, flags);
        const char *piece = esc_len ? esc : text + i;
        size_t piece_len = esc_len ? esc_len : step ? step : 1;
        if (used + piece_len >= len)
            break; /* truncated between characters, never inside one */
        memcpy(out + used, piece, piece_len);
        used += piece_len;
        i += step ? step : 1;
    }
    out[used] = '\0';
    return out;
}
