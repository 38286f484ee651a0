/*
 * atomic_file.c - the write-then-rename sequence every qtrain file writer shares, so
 * a reader (or a crash) never sees a half-written file:
 *
 *   open <path>.tmp.<pid> (O_CREAT | O_TRUNC, 0644), write every byte (retrying EINTR
 *   and short writes), fsync, close, rename over <path>, fsync the directory;
 *   on any failure close and unlink the temporary, leaving <path> untouched.
 *
 * Surprising, and deliberate:
 *   - the temporary sits next to path (same directory, so same filesystem: rename is
 *     atomic there) and is named by pid, so two processes writing one path do not
 *     clobber each other's temporary; two threads of one process must not;
 *   - close is checked: on NFS and some FUSE filesystems it is where a write error
 *     surfaces;
 *   - the directory fsync is best effort and its failure is not reported: the file is
 *     complete and in place by then, and some filesystems refuse fsync on a directory.
 */
#include "qt_formats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* write(2) may refuse counts above SSIZE_MAX and Linux caps one call near 2 GiB */
#define QT_AF_CHUNK (1u << 30)

static void qt_af_release(qt_atomic_file *f) {
    free(f->tmp);
    free(f->path);
    f->tmp = NULL;
    f->path = NULL;
    f->fd = -1;
}

qt_status qt_atomic_file_open(qt_atomic_file *f, const char *path) {
    if (!f)
        return QT_ERROR(QT_EINVAL, "atomic_file_open: file is NULL");
    f->fd = -1;
    f->tmp = NULL;
    f->path = NULL;
    f->status = QT_OK;
    if (!path)
        return f->status = QT_ERROR(QT_EINVAL, "atomic_file_open: path is NULL");
    size_t len = strlen(path);
    size_t tmp_len = len + 32; /* ".tmp." + the digits of a pid */
    f->path = malloc(len + 1);
    f->tmp = malloc(tmp_len);
    if (!f->path || !f->tmp) {
        qt_af_release(f);
        return f->status = QT_ERROR(QT_ENOMEM, "%s: cannot allocate a temporary path", path);
    }
    memcpy(f->path, path, len + 1);
    snprintf(f->tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        qt_status s = QT_ERROR(QT_EIO, "%s: cannot create %s: %s", path, f->tmp,
                               strerror(errno));
        qt_af_release(f);
        return f->status = s;
    }
    return QT_OK;
}

qt_status qt_atomic_file_write(qt_atomic_file *f, const void *buf, size_t n) {
    if (!f)
        return QT_ERROR(QT_EINVAL, "atomic_file_write: file is NULL");
    if (f->status != QT_OK)
        return f->status;
    if (!f->tmp || f->fd < 0)
        return f->status = QT_ERROR(QT_ESTATE, "atomic_file_write: the file is not open "
                                    "(already committed or aborted)");
    if (n > 0 && !buf)
        return f->status = QT_ERROR(QT_EINVAL, "%s: write of %zu bytes from NULL", f->tmp, n);
    const unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n < QT_AF_CHUNK ? n : QT_AF_CHUNK;
        ssize_t k = write(f->fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return f->status = QT_ERROR(QT_EIO, "%s: write failed: %s", f->tmp,
                                        strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
    return QT_OK;
}

/* Best effort (see the top of the file). */
static void qt_af_sync_dir(char *path) {
    char *slash = strrchr(path, '/');
    const char *d = ".";
    char keep = 0;
    if (slash) {
        slash += slash == path; /* "/x" lives in "/" */
        keep = *slash;
        *slash = '\0';
        d = path;
    }
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    if (slash)
        *slash = keep;
}

qt_status qt_atomic_file_commit(qt_atomic_file *f) {
    if (!f)
        return QT_ERROR(QT_EINVAL, "atomic_file_commit: file is NULL");
    if (f->status != QT_OK) {
        qt_atomic_file_abort(f);
        return f->status;
    }
    if (!f->tmp || f->fd < 0)
        return f->status = QT_ERROR(QT_ESTATE, "atomic_file_commit: the file is not open "
                                    "(already committed or aborted)");
    qt_status s = QT_OK;
    if (fsync(f->fd) != 0) {
        s = QT_ERROR(QT_EIO, "%s: fsync failed: %s", f->tmp, strerror(errno));
        goto fail;
    }
    int rc = close(f->fd);
    f->fd = -1;
    if (rc != 0) {
        s = QT_ERROR(QT_EIO, "%s: close failed: %s", f->tmp, strerror(errno));
        goto fail;
    }
    if (rename(f->tmp, f->path) != 0) {
        s = QT_ERROR(QT_EIO, "%s: cannot rename %s over it: %s", f->path, f->tmp,
                     strerror(errno));
        goto fail;
    }
    qt_af_sync_dir(f->path);
    qt_af_release(f);
    return QT_OK;

fail:
    f->status = s;
    qt_atomic_file_abort(f);
    return s;
}

void qt_atomic_file_abort(qt_atomic_file *f) {
    if (!f)
        return;
    /* tmp is set only between a successful open and the end: then the temporary exists
     * and is ours, and fd is open unless commit closed it already. A zeroed struct owns
     * nothing (its fd 0 is not ours to close). */
    if (f->tmp) {
        if (f->fd >= 0)
            close(f->fd);
        unlink(f->tmp);
    }
    qt_af_release(f);
}
