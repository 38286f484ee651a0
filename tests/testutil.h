/*
 * testutil.h - the few helpers every C test shares: counting checks and printing the
 * closing line "<test>: N passed, M failed" that CI reads. A test's main returns
 * qt_test_finish(), which is non-zero when any check failed.
 */
#ifndef QT_TESTUTIL_H
#define QT_TESTUTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static int qt_test_pass, qt_test_fail;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            qt_test_pass++;                                                \
        } else {                                                           \
            qt_test_fail++;                                                \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)

/* CHECK for data-driven tests: names the case ("rmsnorm: g1") instead of file:line.
 * Same counters, same closing line. */
static inline void qt_check_case(bool ok, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void qt_check_case(bool ok, const char *what, const char *fmt, ...) {
    if (ok) {
        qt_test_pass++;
        return;
    }
    qt_test_fail++;
    printf("FAIL %s: ", what);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static inline int qt_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, qt_test_pass, qt_test_fail);
    return qt_test_fail ? 1 : 0;
}

#endif
