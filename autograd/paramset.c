/*
 * paramset.c - a model's parameters in one flat f32 value buffer and one flat grad
 * buffer (llm.c's layout), so the optimizer and a gradient all-reduce each make one
 * pass over one buffer. Parameters are declared first, then allocated together.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

void qt_paramset_init(qt_paramset *ps) { memset(ps, 0, sizeof *ps); }

void qt_paramset_free(qt_paramset *ps) {
    for (int i = 0; i < ps->n; i++) {
        free((char *)ps->params[i]->name);
        free(ps->params[i]);
    }
    free(ps->params);
    free(ps->flags);
    free(ps->offset);
    free(ps->goffset);
    free(ps->data);
    free(ps->grad);
    const qt_backend *be = qt_backend_get(ps->device.kind);
    if (be) {
        be->free(ps->ddata);
        be->free(ps->dgrad);
    }
    memset(ps, 0, sizeof *ps);
}

static bool grow(qt_paramset *ps) {
    int cap = ps->cap ? 2 * ps->cap : 16;
    qt_tensor **p = realloc(ps->params, (size_t)cap * sizeof *p);
    if (!p) return false;
    ps->params = p;
    uint32_t *f = realloc(ps->flags, (size_t)cap * sizeof *f);
    if (!f) return false;
    ps->flags = f;
    size_t *o = realloc(ps->offset, (size_t)cap * sizeof *o);
    if (!o) return false;
    ps->offset = o;
    size_t *g = realloc(ps->goffset, (size_t)cap * sizeof *g);
    if (!g) return false;
    ps->goffset = g;
    ps->cap = cap;
    return true;
}

qt_tensor *qt_paramset_add(qt_paramset *ps, const char *name, int ndim,
                           const int64_t *shape, uint32_t flags) {
    if (ps->allocated) {
        QT_ERROR(QT_ESTATE, "paramset_add(%s): the set is already allocated", name);
        return NULL;
    }
    if (ndim < 1 || ndim > QT_MAX_DIMS) {
        QT_ERROR(QT_ESHAPE, "paramset_add(%s): ndim must be 1..%d, got %d", name,
                 QT_MAX_DIMS, ndim);
        return NULL;
    }
    if (qt_paramset_find(ps, name)) {
        QT_ERROR(QT_EINVAL, "paramset_add: duplicate parameter name %s", name);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) {
            QT_ERROR(QT_ESHAPE, "paramset_add(%s): dim %d must be positive, got %lld", name, i,
                     (long long)shape[i]);
            return NULL;
        }
        n *= shape[i];
    }
    if (ps->n == ps->cap && !grow(ps)) {
        QT_ERROR(QT_ENOMEM, "paramset_add(%s): out of memory", name);
        return NULL;
    }
    qt_tensor *t = calloc(1, sizeof *t);
    char *nm = strdup(name);
    if (!t || !nm) {
        free(t);
        free(nm);
        QT_ERROR(QT_ENOMEM, "paramset_add(%s): out of memory", name);
        return NULL;
    }
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->dtype = QT_F32;
    t->device = (qt_device){QT_DEV_CPU, 0};
    t->node = -1;
    t->is_param = true;
    t->requires_grad = !(flags & QT_PARAM_FROZEN);
    t->name = nm;
    ps->params[ps->n] = t;
    ps->flags[ps->n] = flags;
    ps->offset[ps->n] = ps->n_total;
    ps->n_total += (size_t)n;
    if (flags & QT_PARAM_FROZEN) {
        ps->goffset[ps->n] = (size_t)-1;
    } else {
        ps->goffset[ps->n] = ps->n_grad;
        ps->n_grad += (size_t)n;
    }
    ps->n++;
    return t;
}

qt_status qt_paramset_alloc(qt_paramset *ps) {
    if (ps->allocated) return QT_ERROR(QT_ESTATE, "paramset_alloc: already allocated");
    ps->data = calloc(ps->n_total ? ps->n_total : 1, sizeof(float));
    ps->grad = calloc(ps->n_grad ? ps->n_grad : 1, sizeof(float));
    if (!ps->data || !ps->grad)
        return QT_ERROR(QT_ENOMEM, "paramset_alloc: cannot allocate %zu parameters",
                        ps->n_total);
    for (int i = 0; i < ps->n; i++) {
        qt_tensor *t = ps->params[i];
        t->data = ps->data + ps->offset[i];
        t->grad = ps->goffset[i] == (size_t)-1 ? NULL : ps->grad + ps->goffset[i];
    }
    ps->allocated = true;
    return QT_OK;
}

qt_tensor *qt_paramset_find(const qt_paramset *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->params[i]->name, name) == 0) return ps->params[i];
    return NULL;
}

void qt_paramset_zero_grad(qt_paramset *ps) {
    if (ps->dgrad)
        qt_device_zero(ps->device, ps->dgrad, ps->n_grad * sizeof(float));
    else if (ps->grad)
        memset(ps->grad, 0, ps->n_grad * sizeof(float));
}

static void point_params(qt_paramset *ps, float *data, float *grad, qt_device dev) {
    for (int i = 0; i < ps->n; i++) {
        qt_tensor *t = ps->params[i];
        t->data = data + ps->offset[i];
        /* frozen after allocation (LoRA's base: requires_grad off) stays without a grad */
        t->grad = ps->goffset[i] == (size_t)-1 || !t->requires_grad ? NULL : grad + ps->goffset[i];
        t->device = dev;
    }
    ps->device = dev;
}

qt_status qt_paramset_to(qt_paramset *ps, qt_device dev) {
    if (!ps->allocated) return QT_ERROR(QT_ESTATE, "paramset_to: not allocated");
    if (dev.kind == ps->device.kind && dev.index == ps->device.index) return QT_OK;
    if (dev.index != 0)
        return QT_ERROR(QT_ENOTSUP, "paramset_to: %s:%d: one device per process (cuda:0; "
                                    "ranks own their GPUs)", qt_device_name(dev), dev.index);
    const qt_device cpu = {QT_DEV_CPU, 0};
    size_t db = ps->n_total * sizeof(float), gb = ps->n_grad * sizeof(float);
    if (ps->device.kind != QT_DEV_CPU) { /* back to the host first */
        qt_status st = qt_device_copy(cpu, ps->data, ps->device, ps->ddata, db);
        if (st == QT_OK) st = qt_device_copy(cpu, ps->grad, ps->device, ps->dgrad, gb);
        if (st != QT_OK) return st;
        const qt_backend *old = qt_backend_get(ps->device.kind);
        old->free(ps->ddata);
        old->free(ps->dgrad);
        ps->ddata = ps->dgrad = NULL;
        point_params(ps, ps->data, ps->grad, cpu);
    }
    if (dev.kind == QT_DEV_CPU) return QT_OK;
    const qt_backend *be = qt_backend_get(dev.kind);
    if (!be)
        return QT_ERROR(QT_EDEVICE, "paramset_to: device %s has no backend",
                        qt_device_name(dev));
    float *d = be->alloc(db ? db : 4), *g = be->alloc(gb ? gb : 4);
    qt_status st = d && g ? QT_OK : QT_ENOMEM;
    if (st == QT_OK) st = be->copy(d, ps->data, db, QT_COPY_H2D);
    if (st == QT_OK) st = be->copy(g, ps->grad, gb, QT_COPY_H2D);
    if (st != QT_OK) {
        if (d) be->free(d);
        if (g) be->free(g);
        return QT_ERROR(st, "paramset_to: moving %zu parameters to %s: %s", ps->n_total,
                        qt_device_name(dev), qt_error_message());
    }
    ps->ddata = d;
    ps->dgrad = g;
    point_params(ps, d, g, dev);
    return QT_OK;
}

qt_status qt_paramset_pull(qt_paramset *ps) {
    if (!ps->ddata) return QT_OK;
    return qt_device_copy((qt_device){QT_DEV_CPU, 0}, ps->data, ps->device, ps->ddata,
                          ps->n_total * sizeof(float));
}

qt_status qt_paramset_release(qt_paramset *ps, const qt_tensor *t) {
    if (ps->ddata)
        return QT_ERROR(QT_ESTATE, "paramset_release: the parameters are on %s",
                        qt_device_name(ps->device));
    int i = 0;
    while (i < ps->n && ps->params[i] != t) i++;
    if (i == ps->n) return QT_ERROR(QT_EINVAL, "paramset_release: not a parameter of this set");
    /* the whole pages inside the parameter's range; the partial pages at its ends stay */
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t s = (uintptr_t)(ps->data + ps->offset[i]);
    uintptr_t e = s + (uintptr_t)qt_numel(t) * sizeof(float);
    uintptr_t a = (s + pg - 1) & ~(pg - 1), b = e & ~(pg - 1);
    if (b > a && madvise((void *)a, b - a, MADV_DONTNEED) != 0)
        return QT_ERROR(QT_EIO, "paramset_release(%s): madvise failed", t->name);
    return QT_OK;
}
