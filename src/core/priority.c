/* priority.c -- call priorities: the member's names and the push scripts
 * (priority.h); no I/O. */
#include "core/priority.h"

#include "core/internal.h"

#include <string.h>

const char *rrpc__priority_name(int priority)
{
    switch (priority) {
    case RRPC_PRIORITY_HIGH: return "high";
    case RRPC_PRIORITY_NORMAL: return "normal";
    case RRPC_PRIORITY_LOW: return "low";
    default: return NULL;
    }
}

int rrpc__priority_known(const char *s, size_t len)
{
    return (len == 4 && memcmp(s, "high", 4) == 0) || (len == 6 && memcmp(s, "normal", 6) == 0) ||
           (len == 3 && memcmp(s, "low", 3) == 0);
}

/* Where a high or low request goes: its own list only behind a backlog
 * (high: L not empty; low: any of the three not empty), else L. */
#define PLACE_LUA                                                                                  \
    "local function place(p, n, h, l)\n"                                                           \
    "  if p == 'high' then if n > 0 then return KEYS[2] end\n"                                     \
    "  elseif p == 'low' then if n + h + l > 0 then return KEYS[3] end end\n"                      \
    "  return KEYS[1]\n"                                                                           \
    "end\n"

const char rrpc__priority_push_script[] =
    "local p = ARGV[#ARGV]\n"
    "local q = KEYS[1]\n"
    "if p == 'high' then\n"
    "  if redis.call('LLEN', KEYS[1]) > 0 then q = KEYS[2] end\n"
    "else\n"
    "  if redis.call('LLEN', KEYS[1]) > 0 or redis.call('LLEN', KEYS[2]) > 0\n"
    "     or redis.call('LLEN', KEYS[3]) > 0 then q = KEYS[3] end\n"
    "end\n"
    "return redis.call('RPUSH', q, unpack(ARGV, 1, #ARGV - 1))\n";

const char rrpc__max_queue_push_script[] =
    PLACE_LUA "local n = redis.call('LLEN', KEYS[1])\n"
              "local h = redis.call('LLEN', KEYS[2])\n"
              "local l = redis.call('LLEN', KEYS[3])\n"
              "if n + h + l >= tonumber(ARGV[2]) then return -1 end\n"
              "return redis.call('RPUSH', place(ARGV[3], n, h, l), ARGV[1])\n";
