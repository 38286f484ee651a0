/*
 * qmodel.c - the quantized model every PTQ algorithm fills and every exporter reads
 * (qt_ptq.h): the float model plus the quantizer-core codes of each quantized Linear.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_ptq.h"

void qt_qmodel_init(qt_qmodel *qm, qt_model *m, const char *method) {
    memset(qm, 0, sizeof *qm);
    qm->model = m;
    snprintf(qm->method, sizeof qm->method, "%s", method ? method : "");
}

void qt_qmodel_free(qt_qmodel *qm) {
    for (int i = 0; i < qm->n; i++) {
        qt_qtensor_free(&qm->layers[i].q);
        free(qm->layers[i].perm);
    }
    free(qm->layers);
    free(qm->recipe);
    memset(qm, 0, sizeof *qm);
}

qt_status qt_qmodel_add(qt_qmodel *qm, const char *name, qt_qtensor *q, int32_t *perm) {
    if (strlen(name) >= sizeof qm->layers[0].name) {
        qt_qtensor_free(q);
        free(perm);
        return QT_ERROR(QT_EINVAL, "qmodel: parameter name too long: %s", name);
    }
    qt_qlinear *l = realloc(qm->layers, (size_t)(qm->n + 1) * sizeof *l);
    if (!l) {
        qt_qtensor_free(q);
        free(perm);
        return QT_ERROR(QT_ENOMEM, "qmodel: out of memory");
    }
    qm->layers = l;
    l = &qm->layers[qm->n++];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->q = *q;
    memset(q, 0, sizeof *q);
    l->perm = perm;
    return QT_OK;
}

const qt_qlinear *qt_qmodel_find(const qt_qmodel *qm, const char *name) {
    for (int i = 0; i < qm->n; i++)
        if (!strcmp(qm->layers[i].name, name)) return &qm->layers[i];
    return NULL;
}

qt_status qt_qlinear_dequantize(const qt_qlinear *l, float *out) {
    if (!l->perm) return qt_dequantize(&l->q, out);
    const int64_t rows = l->q.rows, cols = l->q.cols;
    float *tmp = malloc((size_t)(rows * cols) * sizeof *tmp);
    if (!tmp) return QT_ERROR(QT_ENOMEM, "qmodel: out of memory");
    qt_status st = qt_dequantize(&l->q, tmp);
    if (st == QT_OK)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < cols; i++) out[r * cols + l->perm[i]] = tmp[r * cols + i];
    free(tmp);
    return st;
}
