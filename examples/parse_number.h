/* parse_number.h -- the number parsing of the example programs' options,
 * shared by examples/calc-server.c and the chaos test's programs
 * (tests/chaos), which use rrpc's public API only, like any application.
 *
 * Header-only (static inline, so a program that uses one function is not
 * warned about the others) because it is a convenience of these programs,
 * not part of librrpc: an application parses its own command line.  The
 * rrpc CLI has its own, cli_parse_seconds and cli_parse_count in tools/.
 *
 * Each function returns 0 and stores the value, or -1 (storing nothing) if
 * TEXT is not a number of the kind asked for, nothing after it.
 */
#ifndef RRPC_EXAMPLES_PARSE_NUMBER_H
#define RRPC_EXAMPLES_PARSE_NUMBER_H

#include <errno.h>
#include <stdlib.h>

/* A decimal integer in [MIN, MAX]. */
static inline int parse_int(const char *text, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno != 0 || value < min || value > max)
        return -1;
    *out = (int)value;
    return 0;
}

/* A number in [MIN, MAX] (so never NaN, which strtod accepts as "nan"). */
static inline int parse_number(const char *text, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (end == text || *end != '\0' || errno != 0 || !(value >= min && value <= max))
        return -1;
    *out = value;
    return 0;
}

/* A positive number of seconds, at most 1e9 (some 31 years). */
static inline int parse_seconds(const char *text, double *out)
{
    double value;
    if (parse_number(text, 0, 1e9, &value) != 0 || value == 0)
        return -1;
    *out = value;
    return 0;
}

#endif /* RRPC_EXAMPLES_PARSE_NUMBER_H */
