/*
 * ckpt_diff.c - how far apart two qtrain checkpoints are: for every f32 dataset of
 * /params, /optimizer, /buffers and /buffers_optimizer in A (each must be in B with the
 * same size), rel = ||a - b|| / ||b|| (0 when both are zero); the step and data position
 * attributes must be equal. Prints the worst tensor; exits 1 if its rel exceeds TOL, or
 * on any mismatch in the files' contents, 2 on bad usage or an unreadable file.
 *
 *   ckpt_diff A.h5 B.h5 TOL [--params-only]
 *
 * The multi-rank tests (test_dist.sh) compare a run on N ranks with one on 1 rank.
 * --params-only skips the optimizer groups (a LoRA checkpoint's base has none to
 * compare, a resumed run's moments are compared like the rest).
 */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    hid_t a, b;
    const char *group;
    double worst;
    char worst_name[512];
    int n, errors;
} diff_state;

static float *read_all(hid_t file, const char *path, hssize_t *n) {
    hid_t ds = H5Dopen2(file, path, H5P_DEFAULT);
    if (ds < 0) return NULL;
    hid_t sp = H5Dget_space(ds);
    *n = H5Sget_simple_extent_npoints(sp);
    float *buf = malloc((size_t)(*n > 0 ? *n : 1) * sizeof(float));
    if (buf && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        buf = NULL;
    }
    H5Sclose(sp);
    H5Dclose(ds);
    return buf;
}

#if H5_VERSION_GE(1, 12, 0)
typedef H5L_info2_t link_info;
#define ITERATE H5Literate2
#else
typedef H5L_info_t link_info;
#define ITERATE H5Literate
#endif

static herr_t visit(hid_t g, const char *name, const link_info *info, void *user) {
    (void)g, (void)info;
    diff_state *s = user;
    char path[512];
    snprintf(path, sizeof path, "/%s/%s", s->group, name);
    hssize_t na = 0, nb = 0;
    float *x = read_all(s->a, path, &na), *y = read_all(s->b, path, &nb);
    if (!x || !y || na != nb) {
        fprintf(stderr, "ckpt_diff: %s: %s\n", path,
                !x ? "unreadable in A" : !y ? "missing or unreadable in B" : "sizes differ");
        s->errors++;
    } else {
        double dd = 0, bb = 0;
        for (hssize_t i = 0; i < na; i++) {
            double e = (double)x[i] - y[i];
            dd += e * e;
            bb += (double)y[i] * y[i];
        }
        double rel = dd == 0 ? 0 : bb == 0 ? INFINITY : sqrt(dd / bb);
        if (!(rel <= s->worst)) { /* NaN counts as worst */
            s->worst = rel;
            snprintf(s->worst_name, sizeof s->worst_name, "%s", path);
        }
        s->n++;
    }
    free(x);
    free(y);
    return 0;
}

static long attr_long(hid_t f, const char *name) {
    long v = -1;
    if (H5Aexists(f, name) > 0) {
        hid_t at = H5Aopen(f, name, H5P_DEFAULT);
        H5Aread(at, H5T_NATIVE_LONG, &v);
        H5Aclose(at);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: ckpt_diff A.h5 B.h5 TOL [--params-only]\n");
        return 2;
    }
    bool params_only = argc > 4 && !strcmp(argv[4], "--params-only");
    double tol = atof(argv[3]);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    diff_state s = {.worst = 0};
    s.a = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
    s.b = H5Fopen(argv[2], H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s.a < 0 || s.b < 0) {
        fprintf(stderr, "ckpt_diff: cannot open %s\n", s.a < 0 ? argv[1] : argv[2]);
        return 2;
    }
    static const char *groups[] = {"params", "buffers", "optimizer", "buffers_optimizer"};
    for (int k = 0; k < 4; k++) {
        if (params_only && k >= 2) break;
        if (H5Lexists(s.a, groups[k], H5P_DEFAULT) <= 0) continue;
        if (H5Lexists(s.b, groups[k], H5P_DEFAULT) <= 0) {
            fprintf(stderr, "ckpt_diff: /%s is in A, not in B\n", groups[k]);
            s.errors++;
            continue;
        }
        hid_t g = H5Gopen2(s.a, groups[k], H5P_DEFAULT);
        s.group = groups[k];
        ITERATE(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, visit, &s);
        H5Gclose(g);
    }
    static const char *attrs[] = {"step", "adam_step", "data_epoch", "data_pos"};
    for (int k = 0; k < 4; k++) {
        long x = attr_long(s.a, attrs[k]), y = attr_long(s.b, attrs[k]);
        if (x != y) {
            fprintf(stderr, "ckpt_diff: attribute %s: %ld vs %ld\n", attrs[k], x, y);
            s.errors++;
        }
    }
    printf("ckpt_diff: %d tensors, worst ||a-b||/||b|| %.3g (%s), tolerance %.3g\n", s.n,
           s.worst, s.n ? s.worst_name : "-", tol);
    H5Fclose(s.a);
    H5Fclose(s.b);
    return s.errors || s.n == 0 || !(s.worst <= tol) ? 1 : 0;
}
