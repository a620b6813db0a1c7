/* random.c -- unguessable identifiers and key names.
 *
 * Reply keys double as capabilities: whoever knows one can read or forge a
 * response, so they come from the kernel's CSPRNG (getrandom), never from
 * rand() or a counter.
 */
#define _GNU_SOURCE
#include "core/random.h"

#include <rrpc/rrpc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

int rrpc__random_hex128(char hex[33])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char bytes[16];
    size_t got = 0;
    while (got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return RRPC_ESYS;
        }
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof bytes; i++) {
        hex[2 * i] = digits[bytes[i] >> 4];
        hex[2 * i + 1] = digits[bytes[i] & 15];
    }
    hex[32] = '\0';
    return RRPC_OK;
}

int rrpc__valid_name(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return 0; /* whitespace and control characters (PROTOCOL.md 1) */
    return 1;
}
