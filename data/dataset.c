/*
 * dataset.c - byte-level text datasets: the stream, its train/validation split, the
 * per-epoch shuffle and the resumable position (see qt_dataset.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_data.h"

static void shuffle(qt_dataset *ds) {
    for (int64_t i = 0; i < ds->n_train; i++) ds->order[i] = i;
    /* Fisher-Yates driven by the counter RNG: the order is a function of (seed, epoch) */
    uint64_t s = ds->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)ds->epoch;
    for (int64_t i = ds->n_train - 1; i > 0; i--) {
        int64_t j = (int64_t)(qt_rand_u64(s, (uint64_t)i) % (uint64_t)(i + 1));
        int64_t t = ds->order[i];
        ds->order[i] = ds->order[j];
        ds->order[j] = t;
    }
}

qt_status qt_dataset_open_bytes(qt_dataset *ds, const char *path, int64_t seq_len,
                                float val_fraction, uint64_t seed) {
    memset(ds, 0, sizeof *ds);
    if (seq_len < 1) return QT_ERROR(QT_EINVAL, "%s: seq_len must be positive", path);
    FILE *f = fopen(path, "rb");
    if (!f) return QT_ERROR(QT_EIO, "%s: cannot open training data: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return QT_ERROR(QT_EIO, "%s: not a regular file", path);
    }
    long size = ftell(f);
    rewind(f);
    if (size < 0) {
        fclose(f);
        return QT_ERROR(QT_EIO, "%s: cannot tell the file size", path);
    }
    unsigned char *buf = malloc((size_t)size + 1);
    ds->tokens = malloc(((size_t)size + 1) * sizeof(int32_t));
    if (!buf || !ds->tokens) {
        free(buf);
        fclose(f);
        qt_dataset_close(ds);
        return QT_ERROR(QT_ENOMEM, "%s: cannot hold %ld bytes", path, size);
    }
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(buf);
        qt_dataset_close(ds);
        return QT_ERROR(QT_EIO, "%s: short read (%zu of %ld bytes)", path, got, size);
    }
    for (long i = 0; i < size; i++) ds->tokens[i] = buf[i];
    free(buf);
    ds->n_tokens = size;
    ds->seq_len = seq_len;
    ds->seed = seed;
    ds->world = 1;
    int64_t n_val_tok = (int64_t)((double)size * (double)val_fraction);
    ds->val_start = size - n_val_tok;
    ds->n_train = (ds->val_start - 1) / seq_len;
    ds->n_val = n_val_tok > 0 ? (n_val_tok - 1) / seq_len : 0;
    if (ds->n_train < 1 || (val_fraction > 0 && ds->n_val < 1)) {
        qt_dataset_close(ds);
        return QT_ERROR(QT_EINVAL,
                        "%s: %ld bytes is too little text for one training window and one "
                        "validation window of %lld tokens (val_fraction %g)",
                        path, size, (long long)seq_len + 1, (double)val_fraction);
    }
    ds->order = malloc((size_t)ds->n_train * sizeof(int64_t));
    if (!ds->order) {
        qt_dataset_close(ds);
        return QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
    }
    shuffle(ds);
    return QT_OK;
}

void qt_dataset_close(qt_dataset *ds) {
    free(ds->tokens);
    free(ds->order);
    memset(ds, 0, sizeof *ds);
}

qt_status qt_dataset_shard(qt_dataset *ds, int rank, int world) {
    if (world < 1 || rank < 0 || rank >= world)
        return QT_ERROR(QT_EINVAL, "dataset: rank %d of world %d", rank, world);
    if (ds->n_train < world)
        return QT_ERROR(QT_EINVAL, "dataset: %lld training windows cannot feed %d ranks",
                        (long long)ds->n_train, world);
    ds->rank = rank;
    ds->world = world;
    return QT_OK;
}

static void window(const qt_dataset *ds, int64_t start, int32_t *ids, int32_t *targets) {
    memcpy(ids, ds->tokens + start, (size_t)ds->seq_len * sizeof(int32_t));
    memcpy(targets, ds->tokens + start + 1, (size_t)ds->seq_len * sizeof(int32_t));
}

void qt_dataset_next(qt_dataset *ds, int64_t B, int32_t *ids, int32_t *targets) {
    /* each rank reads order[pos + rank], the global position advances by world */
    int64_t per_epoch = ds->n_train / ds->world * ds->world;
    for (int64_t b = 0; b < B; b++) {
        if (ds->pos >= per_epoch) {
            ds->epoch++;
            ds->pos = 0;
            shuffle(ds);
        }
        int64_t w = ds->order[ds->pos + ds->rank];
        window(ds, w * ds->seq_len, ids + b * ds->seq_len, targets + b * ds->seq_len);
        ds->pos += ds->world;
    }
}

void qt_dataset_val(const qt_dataset *ds, int64_t first, int64_t B, int32_t *ids,
                    int32_t *targets) {
    for (int64_t b = 0; b < B; b++) {
        int64_t w = ds->n_val ? (first + b) % ds->n_val : 0;
        window(ds, ds->val_start + w * ds->seq_len, ids + b * ds->seq_len,
               targets + b * ds->seq_len);
    }
}

qt_status qt_dataset_seek(qt_dataset *ds, int64_t epoch, int64_t pos) {
    if (epoch < 0 || pos < 0 || pos > ds->n_train)
        return QT_ERROR(QT_EINVAL, "dataset: bad position (epoch %lld, index %lld) for %lld "
                                   "windows", (long long)epoch, (long long)pos,
                        (long long)ds->n_train);
    ds->epoch = epoch;
    ds->pos = pos;
    shuffle(ds);
    return QT_OK;
}
