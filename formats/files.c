/*
 * files.c - the small file-system helpers every module shares, so each is written
 * once: reading a whole file (qt_read_file; qt_read_text_file for config-sized ones),
 * joining a directory and a name, and mkdir -p of a directory or of a file's parent.
 */
#include "qt_formats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

qt_status qt_read_file(const char *path, size_t max_bytes, char **out, size_t *len_out) {
    *out = NULL;
    if (len_out) *len_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return QT_ERROR(QT_EIO, "%s: cannot open: %s", path, strerror(errno));
    /* read in doubling chunks rather than trusting a size from stat: a pipe or a file
     * that grows has none */
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 65536 + 1;
            if (max_bytes && ncap > max_bytes + 65536 + 1) ncap = max_bytes + 65536 + 1;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return QT_ERROR(QT_ENOMEM, "%s: out of memory reading %zu bytes", path, len);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, 65536, f);
        len += got;
        if (max_bytes && len > max_bytes) {
            free(buf);
            fclose(f);
            return QT_ERROR(QT_EFORMAT, "%s: larger than %zu bytes, the most read here", path,
                            max_bytes);
        }
        if (got < 65536) break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return QT_ERROR(QT_EIO, "%s: read error", path);
    }
    buf[len] = 0;
    *out = buf;
    if (len_out) *len_out = len;
    return QT_OK;
}

qt_status qt_read_text_file(const char *path, char **out) {
    return qt_read_file(path, (size_t)64 << 20, out, NULL);
}

char *qt_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

qt_status qt_make_dirs(const char *path) {
    size_t n = strlen(path);
    char *buf = malloc(n + 1);
    if (!buf) return QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
    memcpy(buf, path, n + 1);
    qt_status st = QT_OK;
    for (char *p = buf + 1;; p++) { /* each prefix ending at a '/', then the whole path */
        if (*p != '/' && *p != 0) continue;
        char c = *p;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            st = QT_ERROR(QT_EIO, "%s: cannot create directory: %s", buf, strerror(errno));
            break;
        }
        *p = c;
        if (!c) break;
    }
    free(buf);
    return st;
}

qt_status qt_make_parent_dirs(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return QT_OK;
    char *dir = strndup(path, (size_t)(slash - path));
    if (!dir) return QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
    qt_status st = qt_make_dirs(dir);
    free(dir);
    return st;
}
