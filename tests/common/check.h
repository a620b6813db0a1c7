/* check.h -- the one check harness of every C test program (unit and
 * integration).
 *
 * The tests must build with nothing but a C compiler and the library's own
 * dependencies, so instead of pulling in a test framework they use these
 * few macros.  One behaviour everywhere: every check is counted; a failed
 * one prints file:line and the expression (and both values, for the _EQ
 * forms) on stderr and the program goes on, so one run shows every
 * failure; main() ends with `return check_report();`, which prints the
 * closing line "N passed, N failed" on stdout and returns non-zero if any
 * check failed -- the exit status ctest looks at.
 *
 *   CHECK(cond)                  any condition
 *   CHECK_EQ_INT(actual, expect) integers (compared as long long)
 *   CHECK_EQ_STR(actual, expect) C strings; NULL is allowed on both sides
 *   CHECK_JSON_EQ(json, "text")  a json_t against a JSON text (json_equal)
 *
 * Each macro evaluates its arguments once and yields 1 if the check passed,
 * 0 if not, so a test can stop early: `if (!CHECK(p != NULL)) return;`.
 * The counters are atomic: integration tests check from handler and
 * callback threads too, and ThreadSanitizer runs them.
 */
#ifndef RRPC_TESTS_CHECK_H
#define RRPC_TESTS_CHECK_H

#include <jansson.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int check_count;
static atomic_int check_failures;

static inline int check_fail_header(const char *file, int line)
{
    check_failures++;
    fprintf(stderr, "%s:%d: FAILED: ", file, line);
    return 0;
}

static inline int check_true(int ok, const char *expr, const char *file, int line)
{
    check_count++;
    if (ok)
        return 1;
    check_fail_header(file, line);
    fprintf(stderr, "CHECK(%s)\n", expr);
    return 0;
}

static inline int check_eq_int(long long actual, long long expected, const char *actual_expr,
                               const char *expected_expr, const char *file, int line)
{
    check_count++;
    if (actual == expected)
        return 1;
    check_fail_header(file, line);
    fprintf(stderr, "%s == %s\n    actual:   %lld\n    expected: %lld\n", actual_expr,
            expected_expr, actual, expected);
    return 0;
}

static inline int check_eq_str(const char *actual, const char *expected, const char *actual_expr,
                               const char *expected_expr, const char *file, int line)
{
    check_count++;
    if (actual == expected || (actual != NULL && expected != NULL && strcmp(actual, expected) == 0))
        return 1;
    check_fail_header(file, line);
    fprintf(stderr, "%s == %s\n    actual:   %s%s%s\n    expected: %s%s%s\n", actual_expr,
            expected_expr, actual ? "\"" : "", actual ? actual : "NULL", actual ? "\"" : "",
            expected ? "\"" : "", expected ? expected : "NULL", expected ? "\"" : "");
    return 0;
}

static inline int check_json_eq(const json_t *actual, const char *expected_text,
                                const char *actual_expr, const char *file, int line)
{
    check_count++;
    json_error_t jerr;
    json_t *expected = json_loads(expected_text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (expected == NULL) {
        check_fail_header(file, line);
        fprintf(stderr, "expected text for %s is not JSON (%s): %s\n", actual_expr, jerr.text,
                expected_text);
        return 0;
    }
    int ok = actual != NULL && json_equal(actual, expected);
    if (!ok) {
        char *dump =
            actual ? json_dumps(actual, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
        char *want = json_dumps(expected, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
        check_fail_header(file, line);
        fprintf(stderr, "%s equals JSON\n    actual:   %s\n    expected: %s\n", actual_expr,
                dump ? dump : "NULL", want ? want : expected_text);
        free(dump);
        free(want);
    }
    json_decref(expected);
    return ok;
}

#define CHECK(cond) check_true((cond) ? 1 : 0, #cond, __FILE__, __LINE__)
#define CHECK_EQ_INT(actual, expected)                                                             \
    check_eq_int((long long)(actual), (long long)(expected), #actual, #expected, __FILE__, __LINE__)
#define CHECK_EQ_STR(actual, expected)                                                             \
    check_eq_str((actual), (expected), #actual, #expected, __FILE__, __LINE__)
#define CHECK_JSON_EQ(json, text) check_json_eq((json), (text), #json, __FILE__, __LINE__)

/* Prints the closing line "N passed, N failed"; main's exit status. */
static inline int check_report(void)
{
    int failed = check_failures, passed = check_count - failed;
    fflush(stderr);
    printf("%d passed, %d failed\n", passed < 0 ? 0 : passed, failed);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif /* RRPC_TESTS_CHECK_H */
