/* deadletter.c -- the record kept for a message no one can be answered for.
 *
 * PROTOCOL.md section 6: rather than drop what it cannot answer, a worker
 * files the original text with the reason and time on <service>:dead.
 * The text may be anything, including invalid UTF-8, which JSON strings
 * cannot carry; such bytes are kept exactly as "message_base64" instead of
 * "message", so nothing is lost to a lossy conversion.
 */
#include "internal.h"

#include <stdlib.h>

static char *base64(const unsigned char *in, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[j++] = alphabet[(v >> 18) & 63];
        out[j++] = alphabet[(v >> 12) & 63];
        out[j++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        out[j++] = i + 2 < len ? alphabet[v & 63] : '=';
    }
    out[j] = '\0';
    return out;
}

static void set_message(json_t *rec, const char *message, size_t len)
{
    json_t *text = json_stringn(message, len); /* NULL if not UTF-8 */
    if (text != NULL) {
        json_object_set_new(rec, "message", text);
        return;
    }
    char *b64 = base64((const unsigned char *)message, len);
    json_object_set_new(rec, "message_base64", json_string(b64 ? b64 : ""));
    free(b64);
}

char *rrpc__dead_letter_text(const char *service, const char *reason, const char *message,
                             size_t message_len, const json_t *response)
{
    json_t *rec = json_object();
    if (rec == NULL)
        return NULL;
    json_object_set_new(rec, "reason", json_string(reason));
    json_object_set_new(rec, "time", json_real(rrpc__now()));
    json_object_set_new(rec, "service", json_string(service));
    set_message(rec, message, message_len);
    if (response != NULL)
        json_object_set(rec, "response", (json_t *)response);
    char *text = json_dumps(rec, RRPC__JSON_ENCODE_FLAGS);
    json_decref(rec);
    return text;
}
