/*
 * qt_dataset.h - token datasets for training (to be folded into qt_data.h, the data
 * module's public header, once the tokenizer lands there).
 *
 * A dataset is one token stream cut into windows of seq_len + 1 tokens (inputs and
 * next-token targets overlap by one). The last val_fraction of the stream is held out
 * for validation. Training windows are visited in an order shuffled per epoch by the
 * seed; the position (epoch, index) is all the state there is, so a run resumes exactly
 * by restoring it. With world > 1, rank r takes every world-th window of the order.
 */
#ifndef QT_DATASET_H
#define QT_DATASET_H

#include <stdint.h>

#include "qt_autograd.h"

typedef struct {
    int32_t *tokens;     /* (n_tokens) the whole stream */
    int64_t n_tokens;
    int64_t seq_len;
    int64_t n_train;     /* training windows */
    int64_t n_val;       /* validation windows */
    int64_t val_start;   /* first token of the validation part */
    uint64_t seed;
    int64_t *order;      /* (n_train) this epoch's window order */
    int64_t epoch, pos;  /* resumable position: next index into order */
    int rank, world;
} qt_dataset;

/* Reads a UTF-8 text file as bytes (one token per byte, vocab 256). Errors name the
 * file: missing, unreadable, or too short for one training and one validation window. */
qt_status qt_dataset_open_bytes(qt_dataset *ds, const char *path, int64_t seq_len,
                                float val_fraction, uint64_t seed);
void qt_dataset_close(qt_dataset *ds);
/* This process's share of the training windows (rank in [0, world)). */
qt_status qt_dataset_shard(qt_dataset *ds, int rank, int world);
/* Next B training windows into ids and targets (B * seq_len each), advancing the
 * position and reshuffling at each epoch boundary. */
void qt_dataset_next(qt_dataset *ds, int64_t B, int32_t *ids, int32_t *targets);
/* Validation windows [first, first + B) (wrapping), for evaluation. */
void qt_dataset_val(const qt_dataset *ds, int64_t first, int64_t B, int32_t *ids,
                    int32_t *targets);
/* Moves to a saved position (resume). */
qt_status qt_dataset_seek(qt_dataset *ds, int64_t epoch, int64_t pos);

#endif
