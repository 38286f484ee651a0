/*
 * checkpoint.c - training checkpoints in HDF5. Every HDF5 call is checked; the
 * library's own error printing is switched off so that failures come back as statuses
 * naming the file and the object.
 *
 * Layout of a checkpoint file:
 *   /params/<name>      f32, the parameter's shape (HF names: model.layers.0...)
 *   /optimizer/m, /v    f32 (n), AdamW moments in the paramset's grad layout (a LoRA
 *                       run's frozen model: n = 0)
 *   /buffers/<name>     f32, a second paramset: QAT's own parameters (static activation
 *                       observers, learned scales) or LoRA's adapters; optional
 *   /buffers_optimizer/m, /v   AdamW moments of the trained ones; optional
 *   root attributes     format ("qtrain-checkpoint"), version, step, adam_step,
 *                       data_epoch, data_pos, seed, recipe (the resolved YAML)
 * The random state needs no field: every draw is a function of (seed, counter) and the
 * counters derive from the step and the data position.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "train_internal.h"

#define QT_CKPT_FORMAT "qtrain-checkpoint"
#define QT_CKPT_VERSION 1

#define QT_H5_CHECK(call, ...)                                              \
    do {                                                                \
        if ((call) < 0) {                                               \
            st = QT_ERROR(QT_EIO, __VA_ARGS__);                         \
            goto done;                                                  \
        }                                                               \
    } while (0)

static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static herr_t put_long(hid_t loc, const char *name, long v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    hid_t a = H5Acreate2(loc, name, H5T_NATIVE_LONG, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_LONG, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return r;
}

static herr_t get_long(hid_t loc, const char *name, long *v) {
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    herr_t r = H5Aread(a, H5T_NATIVE_LONG, v);
    H5Aclose(a);
    return r;
}

static herr_t put_string(hid_t loc, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    H5Tset_size(t, strlen(s) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, t, s);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return r;
}

static herr_t write_f32(hid_t loc, const char *name, int ndim, const int64_t *shape,
                        const float *data) {
    hsize_t dims[QT_MAX_DIMS];
    for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)shape[i];
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    if (sp < 0) return -1;
    hid_t d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return r;
}

/* Reads a float dataset whose shape must equal `shape`. */
static qt_status read_f32(const char *path, hid_t loc, const char *name, int ndim,
                          const int64_t *shape, float *out) {
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return QT_ERROR(QT_EFORMAT, "%s: checkpoint has no dataset '%s'", path, name);
    qt_status st = QT_OK;
    hid_t sp = H5Dget_space(d);
    hsize_t dims[8];
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    bool ok = nd == ndim && nd <= 8;
    if (ok) {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        for (int i = 0; i < nd; i++) ok &= dims[i] == (hsize_t)shape[i];
    }
    if (!ok) st = QT_ERROR(QT_EFORMAT, "%s: dataset '%s' has a different shape than the model's",
                           path, name);
    else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        st = QT_ERROR(QT_EFORMAT, "%s: cannot read dataset '%s'", path, name);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    return st;
}

qt_status qt_checkpoint_save(const char *path, const qt_paramset *ps, const qt_adamw *opt,
                             const qt_ckpt_state *s, const char *recipe_yaml,
                             const qt_paramset *buffers, const qt_adamw *bopt) {
    quiet_hdf5();
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    qt_status st = QT_OK;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t gp = -1, go = -1, gb = -1, gbo = -1;
    if (f < 0) return QT_ERROR(QT_EIO, "%s: cannot create checkpoint", tmp);
    QT_H5_CHECK(put_string(f, "format", QT_CKPT_FORMAT), "%s: write failed", tmp);
    QT_H5_CHECK(put_long(f, "version", QT_CKPT_VERSION), "%s: write failed", tmp);
    QT_H5_CHECK(put_long(f, "step", s->step), "%s: write failed", tmp);
    QT_H5_CHECK(put_long(f, "adam_step", (long)opt->step), "%s: write failed", tmp);
    QT_H5_CHECK(put_long(f, "data_epoch", s->data_epoch), "%s: write failed", tmp);
    QT_H5_CHECK(put_long(f, "data_pos", s->data_pos), "%s: write failed", tmp);
    QT_H5_CHECK(put_long(f, "seed", s->seed), "%s: write failed", tmp);
    QT_H5_CHECK(put_string(f, "recipe", recipe_yaml ? recipe_yaml : ""), "%s: write failed", tmp);
    QT_H5_CHECK(gp = H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "%s: write failed",
            tmp);
    for (int i = 0; i < ps->n; i++) {
        const qt_tensor *t = ps->params[i];
        /* the host copy: on a GPU run the caller has pulled it (qt_paramset_pull) */
        QT_H5_CHECK(write_f32(gp, t->name, t->ndim, t->shape, ps->data + ps->offset[i]),
                    "%s: cannot write %s", tmp,
                t->name);
    }
    QT_H5_CHECK(go = H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
            "%s: write failed", tmp);
    int64_t n = (int64_t)opt->n;
    QT_H5_CHECK(write_f32(go, "m", 1, &n, opt->m), "%s: cannot write optimizer state", tmp);
    QT_H5_CHECK(write_f32(go, "v", 1, &n, opt->v), "%s: cannot write optimizer state", tmp);
    if (buffers && buffers->n > 0) {
        QT_H5_CHECK(gb = H5Gcreate2(f, "buffers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                    "%s: write failed", tmp);
        for (int i = 0; i < buffers->n; i++) {
            const qt_tensor *t = buffers->params[i];
            QT_H5_CHECK(write_f32(gb, t->name, t->ndim, t->shape, buffers->data + buffers->offset[i]),
                        "%s: cannot write %s", tmp, t->name);
        }
    }
    if (bopt && bopt->n > 0) {
        QT_H5_CHECK(gbo = H5Gcreate2(f, "buffers_optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                    "%s: write failed", tmp);
        int64_t nb = (int64_t)bopt->n;
        QT_H5_CHECK(write_f32(gbo, "m", 1, &nb, bopt->m), "%s: cannot write optimizer state", tmp);
        QT_H5_CHECK(write_f32(gbo, "v", 1, &nb, bopt->v), "%s: cannot write optimizer state", tmp);
        QT_H5_CHECK(put_long(gbo, "adam_step", (long)bopt->step), "%s: write failed", tmp);
    }
done:
    if (gbo >= 0) H5Gclose(gbo);
    if (gb >= 0) H5Gclose(gb);
    if (go >= 0) H5Gclose(go);
    if (gp >= 0) H5Gclose(gp);
    if (H5Fclose(f) < 0 && st == QT_OK) st = QT_ERROR(QT_EIO, "%s: cannot close", tmp);
    if (st == QT_OK && rename(tmp, path) != 0)
        st = QT_ERROR(QT_EIO, "%s: cannot rename the finished checkpoint into place", path);
    if (st != QT_OK) unlink(tmp);
    return st;
}

qt_status qt_checkpoint_load(const char *path, qt_paramset *ps, qt_adamw *opt,
                             qt_ckpt_state *s) {
    if (ps->ddata)
        return QT_ERROR(QT_ESTATE, "%s: load the checkpoint before moving the parameters to %s",
                        path, qt_device_name(ps->device));
    quiet_hdf5();
    if (access(path, R_OK) != 0) return QT_ERROR(QT_EIO, "%s: no checkpoint to resume from", path);
    if (H5Fis_hdf5(path) <= 0) return QT_ERROR(QT_EFORMAT, "%s: not an HDF5 file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return QT_ERROR(QT_EFORMAT, "%s: cannot open as HDF5 (truncated?)", path);
    qt_status st = QT_OK;
    hid_t gp = -1, go = -1;
    long version = 0, adam_step = 0;
    QT_H5_CHECK(get_long(f, "version", &version), "%s: not a qtrain checkpoint (no version)", path);
    if (version != QT_CKPT_VERSION) {
        st = QT_ERROR(QT_EFORMAT, "%s: checkpoint version %ld, this qtrain reads %d", path,
                      version, QT_CKPT_VERSION);
        goto done;
    }
    QT_H5_CHECK(get_long(f, "step", &s->step), "%s: missing attribute step", path);
    QT_H5_CHECK(get_long(f, "adam_step", &adam_step), "%s: missing attribute adam_step", path);
    QT_H5_CHECK(get_long(f, "data_epoch", &s->data_epoch), "%s: missing attribute data_epoch", path);
    QT_H5_CHECK(get_long(f, "data_pos", &s->data_pos), "%s: missing attribute data_pos", path);
    QT_H5_CHECK(get_long(f, "seed", &s->seed), "%s: missing attribute seed", path);
    QT_H5_CHECK(gp = H5Gopen2(f, "params", H5P_DEFAULT), "%s: missing group /params", path);
    for (int i = 0; i < ps->n && st == QT_OK; i++) {
        qt_tensor *t = ps->params[i];
        st = read_f32(path, gp, t->name, t->ndim, t->shape, ps->data + ps->offset[i]);
    }
    if (st != QT_OK || !opt) goto done;
    QT_H5_CHECK(go = H5Gopen2(f, "optimizer", H5P_DEFAULT), "%s: missing group /optimizer", path);
    int64_t n = (int64_t)opt->n;
    st = read_f32(path, go, "m", 1, &n, opt->m);
    if (st == QT_OK) st = read_f32(path, go, "v", 1, &n, opt->v);
    opt->step = adam_step;
done:
    if (go >= 0) H5Gclose(go);
    if (gp >= 0) H5Gclose(gp);
    H5Fclose(f);
    return st;
}

qt_status qt_checkpoint_load_buffers(const char *path, qt_paramset *buffers, qt_adamw *bopt) {
    quiet_hdf5();
    if (H5Fis_hdf5(path) <= 0) return QT_ERROR(QT_EFORMAT, "%s: not an HDF5 file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return QT_ERROR(QT_EFORMAT, "%s: cannot open as HDF5 (truncated?)", path);
    qt_status st = QT_OK;
    hid_t gb = -1;
    QT_H5_CHECK(gb = H5Gopen2(f, "buffers", H5P_DEFAULT),
                "%s: missing group /buffers (QAT observers / learned scales)", path);
    for (int i = 0; i < buffers->n && st == QT_OK; i++) {
        qt_tensor *t = buffers->params[i];
        st = read_f32(path, gb, t->name, t->ndim, t->shape, buffers->data + buffers->offset[i]);
    }
    if (st == QT_OK && bopt && bopt->n > 0) {
        hid_t go = H5Gopen2(f, "buffers_optimizer", H5P_DEFAULT);
        long step = 0;
        if (go < 0) st = QT_ERROR(QT_EFORMAT, "%s: missing group /buffers_optimizer", path);
        int64_t nb = (int64_t)bopt->n;
        if (st == QT_OK) st = read_f32(path, go, "m", 1, &nb, bopt->m);
        if (st == QT_OK) st = read_f32(path, go, "v", 1, &nb, bopt->v);
        if (st == QT_OK && get_long(go, "adam_step", &step) < 0)
            st = QT_ERROR(QT_EFORMAT, "%s: missing /buffers_optimizer adam_step", path);
        bopt->step = step;
        if (go >= 0) H5Gclose(go);
    }
done:
    if (gb >= 0) H5Gclose(gb);
    H5Fclose(f);
    return st;
}

qt_status qt_checkpoint_recipe(const char *path, char **text) {
    quiet_hdf5();
    *text = NULL;
    if (access(path, R_OK) != 0) return QT_ERROR(QT_EIO, "%s: cannot read the file", path);
    if (H5Fis_hdf5(path) <= 0) return QT_ERROR(QT_EFORMAT, "%s: not an HDF5 file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return QT_ERROR(QT_EFORMAT, "%s: cannot open as HDF5 (truncated?)", path);
    qt_status st = QT_OK;
    hid_t a = H5Aopen(f, "recipe", H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1;
    size_t n = t >= 0 ? H5Tget_size(t) : 0;
    if (a < 0 || t < 0 || H5Tget_class(t) != H5T_STRING || n == 0 || n > (64u << 20)) {
        st = QT_ERROR(QT_EFORMAT, "%s: not a qtrain checkpoint (no recipe attribute)", path);
    } else {
        *text = calloc(1, n + 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, n);
        if (!*text || H5Aread(a, mt, *text) < 0) {
            free(*text);
            *text = NULL;
            st = QT_ERROR(QT_EFORMAT, "%s: cannot read the recipe attribute", path);
        }
        H5Tclose(mt);
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    H5Fclose(f);
    return st;
}
