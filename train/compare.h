/* compare.h - how closely a candidate model (quantized, exported) follows a reference on
 * a text: the parity report of `qtrain compare` and `qtrain quantize` (private to
 * train/). */
#ifndef QT_COMPARE_H
#define QT_COMPARE_H

#include "qt_layers.h"

typedef struct {
    long tokens;              /* scored tokens */
    double ppl_ref, ppl_cand; /* perplexity of each (the sliding windows of qtrain eval) */
    double kld_mean, kld_max, kld_p99; /* KL(P_ref || P_cand) of the next-token
                                          distributions, nats per token */
    double top1;              /* fraction of tokens where both argmaxes agree */
} qt_compare_result;

/* Both models over the same windows: ctx tokens advancing `stride`, each window scoring
 * the tokens the previous did not (as qtrain eval). Vocabularies must match. */
qt_status qt_compare_models(qt_model *ref, qt_model *cand, const int32_t *ids, long n,
                            long ctx, long stride, qt_compare_result *out);
/* One line: "ppl ref 7.49 cand 7.53 (+0.53%), KLD mean 0.0012 p99 0.011 max 0.09, top-1 98.7%" */
void qt_compare_print(FILE *f, const char *label, const qt_compare_result *r);

#endif
