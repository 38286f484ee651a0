/*
 * testutil.h - the few helpers every C test shares: counting checks and printing the
 * closing line "<test>: N passed, M failed" that CI reads. A test's main returns
 * qt_test_finish(), which is non-zero when any check failed.
 */
#ifndef QT_TESTUTIL_H
#define QT_TESTUTIL_H

#include <math.h>
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

static inline int qt_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, qt_test_pass, qt_test_fail);
    return qt_test_fail ? 1 : 0;
}

#endif
