/* slot.c -- Redis Cluster hash slots, computed without any I/O.
 *
 * A Redis Cluster splits the keyspace into 16384 slots; a key's slot is the
 * CRC16 (XMODEM) of the key modulo 16384, or of its hash tag -- the text
 * between the first '{' and the next '}' -- when that is non-empty, so that
 * keys sharing a tag live on one node.  The cluster transport routes every
 * command by the slot of its key, so this file also knows where the key is
 * in each command rrpc sends.  Kept pure so both are unit-tested.
 */
#include "core/slot.h"

#include <ctype.h>
#include <string.h>

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), bit by bit:
 * keys are short and a table would be 512 bytes of constants to review. */
static unsigned crc16(const char *buf, size_t len)
{
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)buf[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
        crc &= 0xffff;
    }
    return crc;
}

unsigned rrpc__key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        if (close != NULL && close > open + 1) /* "{}" is no tag: hash it all */
            return crc16(open + 1, (size_t)(close - open - 1)) % RRPC__CLUSTER_SLOTS;
    }
    return crc16(key, len) % RRPC__CLUSTER_SLOTS;
}

static int is_command(const char *arg, const char *name)
{
    size_t i = 0;
    for (; arg[i] != '\0' && name[i] != '\0'; i++)
        if (toupper((unsigned char)arg[i]) != name[i])
            return 0;
    return arg[i] == name[i];
}

int rrpc__command_key_index(int argc, const char **argv)
{
    /* BLMPOP timeout numkeys key...; LMPOP numkeys key...: rrpc sends one
     * key.  Every other command rrpc sends (RPUSH, BLPOP, LPOP, LREM,
     * EXPIRE, LTRIM, HINCRBY) names its key first. */
    int at = 1;
    if (is_command(argv[0], "BLMPOP"))
        at = 3;
    else if (is_command(argv[0], "LMPOP"))
        at = 2;
    else if (is_command(argv[0], "EVAL") || is_command(argv[0], "EVALSHA"))
        at = argc > 2 && strcmp(argv[2], "0") != 0 ? 3 : -1; /* script numkeys key... */
    else if (is_command(argv[0], "PING") || is_command(argv[0], "ROLE") ||
             is_command(argv[0], "INFO") || is_command(argv[0], "CLUSTER") ||
             is_command(argv[0], "TIME"))
        return -1;
    if (at < 0)
        return -1;
    return at < argc ? at : -1;
}
