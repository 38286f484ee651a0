/*
 * status.c - status codes (generated from QT_STATUS_LIST) and the thread-local error
 * message that library code leaves for the caller: "file.c:LINE: what, expected vs got";
 * and the process-wide log callback through which libraries report without printing.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "qt_autograd.h"

static const char *const status_text[] = {
#define QT_STATUS_TEXT(name, msg) msg,
    QT_STATUS_LIST(QT_STATUS_TEXT)
#undef QT_STATUS_TEXT
};
_Static_assert(sizeof status_text / sizeof status_text[0] == QT_STATUS_COUNT,
               "status table out of sync");

static _Thread_local char last_error[1024];

const char *qt_status_str(qt_status s) {
    return (unsigned)s < QT_STATUS_COUNT ? status_text[s] : "unknown status";
}

const char *qt_error_message(void) { return last_error; }

void qt_error_clear(void) { last_error[0] = 0; }

qt_status qt_error_set(qt_status s, const char *file, int line, const char *fmt, ...) {
    /* format into a local buffer first: the arguments may point into last_error itself
     * (a caller wrapping the previous message) */
    char buf[sizeof last_error];
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int n = snprintf(buf, sizeof buf, "%s:%d: ", base, line);
    if (n < 0 || (size_t)n >= sizeof buf) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    memcpy(last_error, buf, sizeof buf);
    return s;
}

static qt_log_fn log_fn;
static void *log_user;

void qt_log_set(qt_log_fn fn, void *user) {
    log_fn = fn;
    log_user = user;
}

void qt_log(qt_log_level level, const char *fmt, ...) {
    if (!log_fn) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_fn(log_user, level, buf);
}

static qt_progress_fn progress_fn;
static void *progress_user;

void qt_progress_set(qt_progress_fn fn, void *user) {
    progress_fn = fn;
    progress_user = user;
}

void qt_progress(const char *task, int64_t done, int64_t total, const char *unit) {
    if (progress_fn) progress_fn(progress_user, task, done, total, unit);
}
