/*
 * device.c - the registry of device backends and the few engine operations that cross
 * devices: copies between host and device, and zeroing device memory.
 *
 * The CPU is not a registered backend: its kernels are the reference and sit in each
 * op's definition. A device library (cuda/) registers a qt_backend for its kind when the
 * program asks for it (qt_cuda_init); until then tensors of that kind cannot be made.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const qt_backend *backends[QT_DEV_KIND_COUNT];

void qt_backend_register(qt_device_kind kind, const qt_backend *be) {
    if (kind != QT_DEV_CPU && (unsigned)kind < QT_DEV_KIND_COUNT) backends[kind] = be;
}

const qt_backend *qt_backend_get(qt_device_kind kind) {
    return (unsigned)kind < QT_DEV_KIND_COUNT ? backends[kind] : NULL;
}

bool qt_device_available(qt_device_kind kind) {
    return kind == QT_DEV_CPU || qt_backend_get(kind) != NULL;
}

const char *qt_device_name(qt_device dev) {
    return dev.kind == QT_DEV_CPU ? "cpu" : dev.kind == QT_DEV_CUDA ? "cuda" : "?";
}

void *qt_device_alloc(qt_device dev, size_t bytes) {
    if (dev.kind == QT_DEV_CPU) {
        void *p = malloc(bytes ? bytes : 1);
        if (!p) QT_ERROR(QT_ENOMEM, "cannot allocate %zu bytes", bytes);
        return p;
    }
    const qt_backend *be = qt_backend_get(dev.kind);
    if (!be) {
        QT_ERROR(QT_EDEVICE, "no backend for device %s", qt_device_name(dev));
        return NULL;
    }
    return be->alloc(bytes);
}

void qt_device_free(qt_device dev, void *p) {
    if (!p) return;
    if (dev.kind == QT_DEV_CPU) {
        free(p);
        return;
    }
    const qt_backend *be = qt_backend_get(dev.kind);
    if (be) be->free(p);
}

qt_status qt_device_zero(qt_device dev, void *p, size_t bytes) {
    if (!bytes) return QT_OK;
    if (dev.kind == QT_DEV_CPU) {
        memset(p, 0, bytes);
        return QT_OK;
    }
    const qt_backend *be = qt_backend_get(dev.kind);
    if (!be) return QT_ERROR(QT_EDEVICE, "no backend for device %s", qt_device_name(dev));
    return be->zero(p, bytes);
}

qt_status qt_device_copy(qt_device dst_dev, void *dst, qt_device src_dev, const void *src,
                         size_t bytes) {
    if (!bytes) return QT_OK;
    bool dh = dst_dev.kind == QT_DEV_CPU, sh = src_dev.kind == QT_DEV_CPU;
    if (dh && sh) {
        memcpy(dst, src, bytes);
        return QT_OK;
    }
    if (!dh && !sh && dst_dev.kind != src_dev.kind)
        return QT_ERROR(QT_ENOTSUP, "copy between %s and %s", qt_device_name(dst_dev),
                        qt_device_name(src_dev));
    const qt_backend *be = qt_backend_get(dh ? src_dev.kind : dst_dev.kind);
    if (!be)
        return QT_ERROR(QT_EDEVICE, "no backend for device %s",
                        qt_device_name(dh ? src_dev : dst_dev));
    return be->copy(dst, src, bytes, dh ? QT_COPY_D2H : sh ? QT_COPY_H2D : QT_COPY_D2D);
}

qt_status qt_device_sync(qt_device dev) {
    const qt_backend *be = qt_backend_get(dev.kind);
    return be && be->sync ? be->sync() : QT_OK;
}

qt_status qt_tensor_read(const qt_tensor *t, void *dst) {
    size_t bytes = (size_t)qt_numel(t) * qt_dtype_size(t->dtype);
    return qt_device_copy((qt_device){QT_DEV_CPU, 0}, dst, t->device, t->data, bytes);
}

qt_status qt_tensor_read_grad(const qt_tensor *t, float *dst) {
    if (!t->grad) return QT_ERROR(QT_ESTATE, "tensor has no grad");
    return qt_device_copy((qt_device){QT_DEV_CPU, 0}, dst, t->device, t->grad,
                          (size_t)qt_numel(t) * sizeof(float));
}

qt_tensor *qt_tensor_to(qt_ctx *ctx, const qt_tensor *t, qt_device dev) {
    if (ctx->status != QT_OK) return NULL;
    if (!t) return QT_FAIL(ctx, QT_EINVAL, "tensor_to: tensor is NULL");
    qt_tensor *o = qt_tensor_new_on(ctx, dev, t->dtype, t->ndim, t->shape);
    if (!o) return NULL;
    qt_status st = qt_device_copy(dev, o->data, t->device, t->data,
                                  (size_t)qt_numel(t) * qt_dtype_size(t->dtype));
    if (st != QT_OK) return QT_FAIL(ctx, st, "tensor_to: %s", qt_error_message());
    return o;
}
