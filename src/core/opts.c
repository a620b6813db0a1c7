/* opts.c -- public options structs that can grow (see opts.h). */
#include "core/opts.h"

#include <rrpc/rrpc.h>

#include <stdio.h>
#include <string.h>

void rrpc__opts_init(void *opts, size_t size, const void *defaults, size_t defaults_size)
{
    if (opts == NULL || size < sizeof(size_t))
        return;
    /* Zeroed first, padding included: a field a newer library adds may
     * lie in what is padding in this caller's struct, and reads 0 there. */
    memset(opts, 0, size);
    memcpy(opts, defaults, size < defaults_size ? size : defaults_size);
    memcpy(opts, &size, sizeof size);
}

static int fail(char *errmsg, size_t errmsg_len, const char *fmt, size_t a, size_t b)
{
    if (errmsg && errmsg_len)
        snprintf(errmsg, errmsg_len, fmt, a, b);
    return RRPC_EINVAL;
}

int rrpc__opts_load(void *dst, size_t dst_size, const void *src, char *errmsg, size_t errmsg_len)
{
    size_t size;
    memcpy(&size, src, sizeof size);
    if (size < sizeof size)
        return fail(errmsg, errmsg_len,
                    "options size %zu (at least %zu): fill the options with their _init "
                    "function first",
                    size, sizeof size);
    const unsigned char *extra = (const unsigned char *)src + dst_size;
    for (size_t i = 0; size > dst_size && i < size - dst_size; i++)
        if (extra[i] != 0)
            return fail(errmsg, errmsg_len,
                        "options of %zu bytes set a field beyond the %zu this librrpc knows: "
                        "built against a newer rrpc.h?",
                        size, dst_size);
    memcpy(dst, src, size < dst_size ? size : dst_size);
    memcpy(dst, &dst_size, sizeof dst_size);
    return RRPC_OK;
}
