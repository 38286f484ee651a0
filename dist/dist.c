/*
 * dist.c - data-parallel training across MPI ranks (qt_dist.h): MPI's start and end,
 * bucketed gradient averaging overlapped with backward, ZeRO-1's reduce-scatter and
 * all-gather, and the NCCL communicator for GPU ranks.
 *
 * Buckets are fixed-size runs of a paramset's flat gradient buffer, not whole tensors
 * (DDP groups tensors; a run of the flat buffer needs no packing, and a tensor larger
 * than a bucket simply spans several). A bucket starts when backward has finished every
 * element in it (the grad hook counts them down), so the last layers' grads move while
 * the first layers still compute. MPI only progresses a non-blocking collective inside
 * MPI calls, so each hook call also tests the outstanding ones.
 *
 * Every MPI and NCCL call is checked (QT_MPI_CHECK, QT_NCCL_CHECK); MPI_COMM_WORLD returns
 * errors instead of aborting, so a failure reaches the CLI as a status with file:line,
 * and the CLI ends the job (qt_dist_abort). Nothing here prints or exits.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qt_dist.h"
#ifdef QT_HAVE_MPI
#include <mpi.h>
#endif
#ifdef QT_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#if NCCL_VERSION_CODE < NCCL_VERSION(2, 10, 0)
#error "qtrain needs NCCL >= 2.10 (ncclAvg)"
#endif
#endif

#ifdef QT_HAVE_MPI
static qt_status mpi_fail(int rc, const char *file, int line, const char *call) {
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return qt_error_set(QT_EIO, file, line, "%s: MPI error %d: %s", call, rc, msg);
}
#define QT_MPI_CHECK(call)                                                                \
    do {                                                                                  \
        int qt_rc_ = (call);                                                              \
        if (qt_rc_ != MPI_SUCCESS) return mpi_fail(qt_rc_, __FILE__, __LINE__, #call);    \
    } while (0)
#endif

#ifdef QT_HAVE_NCCL
#define QT_NCCL_CHECK(call)                                                               \
    do {                                                                                  \
        ncclResult_t qt_r_ = (call);                                                      \
        if (qt_r_ != ncclSuccess)                                                         \
            return QT_ERROR(QT_EIO, "%s: NCCL error: %s", #call, ncclGetErrorString(qt_r_)); \
    } while (0)
#define QT_CUDART_CHECK(call)                                                             \
    do {                                                                                  \
        cudaError_t qt_c_ = (call);                                                       \
        if (qt_c_ != cudaSuccess)                                                         \
            return QT_ERROR(QT_EDEVICE, "%s: CUDA error: %s", #call, cudaGetErrorString(qt_c_)); \
    } while (0)
#endif

/* How many ranks an MPI launcher (Open MPI, MPICH's Hydra / Slurm's PMI, PMIx) started
 * this process among; 0 when none did. An sbatch script's own shell (SLURM_NTASKS
 * without a PMI rank) is not a rank. */
static int launcher_world(void) {
    if (getenv("SLURM_NTASKS") && !getenv("PMI_RANK") && !getenv("PMIX_RANK") &&
        !getenv("OMPI_COMM_WORLD_SIZE"))
        return 0;
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                 "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) return atoi(v);
    }
    return getenv("PMIX_RANK") || getenv("PMI_RANK") ? 2 : 0; /* PMIx without a size */
}

qt_status qt_dist_init(qt_dist *d) {
    memset(d, 0, sizeof *d);
    d->world = d->local_world = 1;
    int launched = launcher_world();
#ifdef QT_HAVE_MPI
    if (launched <= 0) return QT_OK; /* not started by mpirun: one rank */
    int inited = 0;
    QT_MPI_CHECK(MPI_Initialized(&inited));
    if (!inited) { /* MPI is called from the main thread only (OpenMP and CUDA have theirs) */
        int level = MPI_THREAD_SINGLE;
        QT_MPI_CHECK(MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &level));
        if (level < MPI_THREAD_FUNNELED)
            return QT_ERROR(QT_ENOTSUP, "MPI gives thread level %d, qtrain needs "
                                        "MPI_THREAD_FUNNELED (%d)", level, MPI_THREAD_FUNNELED);
    }
    d->mpi = true;
    QT_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    QT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &d->rank));
    QT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &d->world));
    MPI_Comm node;
    QT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank,
                                     MPI_INFO_NULL, &node));
    QT_MPI_CHECK(MPI_Comm_rank(node, &d->local_rank));
    QT_MPI_CHECK(MPI_Comm_size(node, &d->local_world));
    QT_MPI_CHECK(MPI_Comm_free(&node));
    return QT_OK;
#else
    if (launched > 1)
        return QT_ERROR(QT_ENOTSUP, "started by an MPI launcher with %d ranks, but this qtrain "
                                    "was built without MPI (apt-get install libopenmpi-dev, "
                                    "then rebuild; QT_MPI=ON makes it required)", launched);
    return QT_OK;
#endif
}

void qt_dist_finalize(qt_dist *d) {
#ifdef QT_HAVE_NCCL
    if (d->nccl_comm) ncclCommDestroy((ncclComm_t)d->nccl_comm);
    if (d->nccl_event) cudaEventDestroy((cudaEvent_t)d->nccl_event);
    if (d->nccl_stream) cudaStreamDestroy((cudaStream_t)d->nccl_stream);
#endif
    d->nccl_comm = d->nccl_stream = d->nccl_event = NULL;
    d->nccl = false;
#ifdef QT_HAVE_MPI
    int fin = 0;
    if (d->mpi && MPI_Finalized(&fin) == MPI_SUCCESS && !fin) MPI_Finalize();
#endif
    d->mpi = false;
}

void qt_dist_abort(qt_dist *d, int code) {
#ifdef QT_HAVE_MPI
    if (d && d->mpi && d->world > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    (void)d, (void)code;
}

qt_status qt_dist_barrier(qt_dist *d) {
    if (d->world == 1) return QT_OK;
#ifdef QT_HAVE_MPI
    QT_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
#endif
    return QT_OK;
}

#ifdef QT_HAVE_MPI
static qt_status allreduce(void *x, int n, MPI_Datatype type, qt_dist_op op) {
    MPI_Op o = op == QT_DIST_SUM ? MPI_SUM : op == QT_DIST_MAX ? MPI_MAX : MPI_MIN;
    QT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, x, n, type, o, MPI_COMM_WORLD));
    return QT_OK;
}
#endif

qt_status qt_dist_reduce_f64(qt_dist *d, double *x, int n, qt_dist_op op) {
#ifdef QT_HAVE_MPI
    if (d->world > 1) return allreduce(x, n, MPI_DOUBLE, op);
#endif
    (void)d, (void)x, (void)n, (void)op;
    return QT_OK;
}

qt_status qt_dist_reduce_i64(qt_dist *d, int64_t *x, int n, qt_dist_op op) {
#ifdef QT_HAVE_MPI
    if (d->world > 1) return allreduce(x, n, MPI_INT64_T, op);
#endif
    (void)d, (void)x, (void)n, (void)op;
    return QT_OK;
}

qt_status qt_dist_nccl_init(qt_dist *d, int device) {
#ifdef QT_HAVE_NCCL
    if (d->world == 1 || d->nccl) return QT_OK;
    ncclUniqueId id;
    if (d->rank == 0) QT_NCCL_CHECK(ncclGetUniqueId(&id));
    QT_MPI_CHECK(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD));
    QT_CUDART_CHECK(cudaSetDevice(device));
    ncclComm_t comm;
    QT_NCCL_CHECK(ncclCommInitRank(&comm, d->world, id, d->rank));
    d->nccl_comm = comm;
    /* non-blocking: the legacy default stream (the engine's) would otherwise serialise
     * with it; order comes from events instead */
    cudaStream_t s;
    cudaEvent_t e;
    QT_CUDART_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    d->nccl_stream = s;
    QT_CUDART_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    d->nccl_event = e;
    d->nccl = true;
    return QT_OK;
#else
    (void)device;
    if (d->world == 1) return QT_OK;
    return QT_ERROR(QT_ENOTSUP, "distributed.backend nccl: this qtrain was built without NCCL "
                                "(it needs CUDA, MPI and nccl.h / libnccl)");
#endif
}

void qt_dist_shard(const qt_dist *d, int r, size_t n, size_t *lo, size_t *hi) {
    *lo = (size_t)((unsigned __int128)n * (unsigned)r / (unsigned)d->world);
    *hi = (size_t)((unsigned __int128)n * (unsigned)(r + 1) / (unsigned)d->world);
}

/* ---- gradient averaging ----------------------------------------------------------------- */

typedef struct {
    int set;          /* which paramset */
    size_t lo, hi;    /* grad elements */
    size_t remaining; /* not yet final in this backward */
    bool started;     /* its collective is in flight (or done) */
#ifdef QT_HAVE_MPI
    MPI_Request req;
#endif
} bucket;

struct qt_dist_grads {
    qt_dist *d;
    qt_paramset *ps[2];
    int n_ps;
    qt_dist_grads_config cfg;
    bucket *b;
    int n_b;
    int first[2];     /* each paramset's first bucket */
    size_t per_bucket; /* elements */
    float *stage;     /* GPU paramsets without NCCL: their grads staged through the host, */
    size_t stage_n;   /* set k's at stage + stage_off[k] */
    size_t stage_off[2];
    bool armed;
};

/* Every parameter trained, so value i is grad element i: the slices gather in place. */
static bool values_in_grad_order(const qt_paramset *ps) {
    for (int i = 0; i < ps->n; i++)
        if (ps->goffset[i] != ps->offset[i]) return false;
    return ps->n_grad == ps->n_total;
}

#ifdef QT_HAVE_MPI
/* counts and displacements of every rank's slice of n (MPI's int counts) */
static qt_status slices(const qt_dist *d, size_t n, int **counts, int **displs) {
    *counts = malloc((size_t)d->world * sizeof(int));
    *displs = malloc((size_t)d->world * sizeof(int));
    if (!*counts || !*displs) return QT_ERROR(QT_ENOMEM, "dist: out of memory");
    if (n > (size_t)INT_MAX)
        return QT_ERROR(QT_ENOTSUP, "distributed.zero 1: %zu trained values exceed MPI's int "
                                    "displacements", n);
    for (int r = 0; r < d->world; r++) {
        size_t lo, hi;
        qt_dist_shard(d, r, n, &lo, &hi);
        (*counts)[r] = (int)(hi - lo);
        (*displs)[r] = (int)lo;
    }
    return QT_OK;
}
#endif

static float *grads_of(const qt_paramset *ps) { return ps->dgrad ? ps->dgrad : ps->grad; }

qt_status qt_dist_grads_new(qt_dist *d, qt_paramset *const *ps, int n,
                            const qt_dist_grads_config *cfg, qt_dist_grads **out) {
    *out = NULL;
    if (n < 1 || n > 2) return QT_ERROR(QT_EINVAL, "dist: 1 or 2 paramsets, got %d", n);
    qt_dist_grads *g = calloc(1, sizeof *g);
    if (!g) return QT_ERROR(QT_ENOMEM, "dist: out of memory");
    g->d = d;
    g->cfg = *cfg;
    g->n_ps = n;
    size_t bytes = cfg->bucket_bytes ? cfg->bucket_bytes : (size_t)25 << 20;
    g->per_bucket = bytes / sizeof(float);
    if (g->per_bucket < 1024) g->per_bucket = 1024;
    if (g->per_bucket > (size_t)INT_MAX) g->per_bucket = (size_t)INT_MAX; /* MPI counts */
    g->per_bucket -= g->per_bucket % 64; /* buckets start 256-byte aligned */
    if (cfg->zero && ps[0]->n_grad > (size_t)INT_MAX) { /* MPI's int counts, refused early */
        free(g);
        return QT_ERROR(QT_ENOTSUP, "distributed.zero 1: %zu trained values exceed MPI's int "
                                    "counts", ps[0]->n_grad);
    }
    if (cfg->zero && !values_in_grad_order(ps[0])) { /* no recipe shards such a paramset */
        free(g);
        return QT_ERROR(QT_ENOTSUP, "distributed.zero 1: the sharded parameters include "
                                    "frozen ones; use distributed.zero 0");
    }
    int total = 0;
    for (int k = 0; k < n; k++) {
        g->ps[k] = ps[k];
        if (k == 0 && cfg->zero) continue; /* reduce-scattered whole, no buckets */
        total += (int)((ps[k]->n_grad + g->per_bucket - 1) / g->per_bucket);
    }
    g->b = calloc((size_t)(total ? total : 1), sizeof *g->b);
    if (!g->b) {
        free(g);
        return QT_ERROR(QT_ENOMEM, "dist: out of memory");
    }
    for (int k = 0; k < n; k++) {
        g->first[k] = g->n_b;
        if (k == 0 && cfg->zero) continue;
        for (size_t lo = 0; lo < ps[k]->n_grad; lo += g->per_bucket) {
            bucket *b = &g->b[g->n_b++];
            b->set = k;
            b->lo = lo;
            b->hi = lo + g->per_bucket < ps[k]->n_grad ? lo + g->per_bucket : ps[k]->n_grad;
        }
    }
    for (int k = 0; k < n; k++) /* host staging for a GPU paramset without NCCL */
        if (ps[k]->dgrad && !d->nccl) {
            g->stage_off[k] = g->stage_n;
            g->stage_n += ps[k]->n_grad;
        }
    if (g->stage_n && d->world > 1) {
        g->stage = malloc(g->stage_n * sizeof(float));
        if (!g->stage) {
            qt_dist_grads_free(g);
            return QT_ERROR(QT_ENOMEM, "dist: out of memory");
        }
    }
    *out = g;
    return QT_OK;
}

void qt_dist_grads_free(qt_dist_grads *g) {
    if (!g) return;
    free(g->b);
    free(g->stage);
    free(g);
}

/* Starts bucket b's sum across ranks. */
static qt_status bucket_start(qt_dist_grads *g, bucket *b) {
    b->started = true;
    qt_dist *d = g->d;
    qt_paramset *ps = g->ps[b->set];
    size_t n = b->hi - b->lo;
    d->bytes += (double)n * sizeof(float);
    d->calls++;
#ifdef QT_HAVE_NCCL
    if (ps->dgrad && d->nccl) {
        cudaStream_t s = (cudaStream_t)d->nccl_stream;
        cudaEvent_t e = (cudaEvent_t)d->nccl_event;
        /* after the grads' kernels on the compute stream (the legacy default) */
        QT_CUDART_CHECK(cudaEventRecord(e, cudaStreamLegacy));
        QT_CUDART_CHECK(cudaStreamWaitEvent(s, e, 0));
        QT_NCCL_CHECK(ncclAllReduce(ps->dgrad + b->lo, ps->dgrad + b->lo, n, ncclFloat, ncclAvg,
                                    (ncclComm_t)d->nccl_comm, s));
        return QT_OK;
    }
#endif
#ifdef QT_HAVE_MPI
    float *buf = ps->grad + b->lo;
    if (ps->dgrad) { /* staged through the host: synchronous */
        buf = g->stage + g->stage_off[b->set] + b->lo;
        qt_status st = qt_device_copy((qt_device){QT_DEV_CPU, 0}, buf, ps->device,
                                      ps->dgrad + b->lo, n * sizeof(float));
        if (st != QT_OK) return st;
    }
    QT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                                &b->req));
#endif
    (void)ps, (void)n;
    return QT_OK;
}

/* Waits for bucket b and divides it by world (NCCL averaged already). */
static qt_status bucket_finish(qt_dist_grads *g, bucket *b) {
    qt_paramset *ps = g->ps[b->set];
    size_t n = b->hi - b->lo;
#ifdef QT_HAVE_NCCL
    if (ps->dgrad && g->d->nccl) return QT_OK; /* finish waits on the stream once */
#endif
#ifdef QT_HAVE_MPI
    QT_MPI_CHECK(MPI_Wait(&b->req, MPI_STATUS_IGNORE));
#endif
    float inv = 1.0f / (float)g->d->world;
    if (ps->dgrad) {
        float *buf = g->stage + g->stage_off[b->set] + b->lo;
        for (size_t i = 0; i < n; i++) buf[i] *= inv;
        return qt_device_copy(ps->device, ps->dgrad + b->lo, (qt_device){QT_DEV_CPU, 0}, buf,
                              n * sizeof(float));
    }
    float *buf = ps->grad + b->lo;
    for (size_t i = 0; i < n; i++) buf[i] *= inv;
    return QT_OK;
}

/* The backward hook: count the parameter's grad elements down in the buckets they fall
 * in; start the buckets that reach zero; let MPI progress the ones in flight. */
static qt_status on_grad_ready(void *user, qt_tensor *t) {
    qt_dist_grads *g = user;
    for (int k = 0; k < g->n_ps; k++) {
        if (k == 0 && g->cfg.zero) continue;
        qt_paramset *ps = g->ps[k];
        uintptr_t base = (uintptr_t)grads_of(ps), at0 = (uintptr_t)t->grad;
        if (at0 < base || at0 >= base + ps->n_grad * sizeof(float)) continue;
        size_t g0 = (at0 - base) / sizeof(float), g1 = g0 + (size_t)qt_numel(t);
        for (size_t at = g0; at < g1;) {
            bucket *b = &g->b[g->first[k] + (int)(at / g->per_bucket)];
            size_t end = b->hi < g1 ? b->hi : g1;
            b->remaining -= end - at;
            at = end;
            if (b->remaining == 0 && !b->started) {
                qt_status st = bucket_start(g, b);
                if (st != QT_OK) return st;
            }
        }
        break;
    }
#ifdef QT_HAVE_MPI
    for (int i = 0; i < g->n_b; i++) { /* progress; a finished request becomes NULL */
        if (!g->b[i].started || g->b[i].req == MPI_REQUEST_NULL) continue;
        int flag;
        QT_MPI_CHECK(MPI_Test(&g->b[i].req, &flag, MPI_STATUS_IGNORE));
    }
#endif
    return QT_OK;
}

static void reset_buckets(qt_dist_grads *g) {
    for (int i = 0; i < g->n_b; i++) {
        bucket *b = &g->b[i];
        b->remaining = b->hi - b->lo;
        b->started = false;
#ifdef QT_HAVE_MPI
        b->req = MPI_REQUEST_NULL;
#endif
    }
}

void qt_dist_grads_arm(qt_dist_grads *g, qt_ctx *ctx) {
    reset_buckets(g);
    /* staged through the host, each start would be a blocking copy that drains the GPU's
     * queue: no overlap there */
    g->armed = g->d->world > 1 && g->cfg.overlap && !g->stage;
    if (g->armed) qt_ctx_set_grad_hook(ctx, on_grad_ready, g);
}

/* ZeRO-1: sum ps's grads and leave this rank's slice, divided by world, in place. */
static qt_status reduce_scatter(qt_dist_grads *g, qt_paramset *ps) {
    qt_dist *d = g->d;
    if (ps->dgrad) return QT_ERROR(QT_ENOTSUP, "distributed.zero 1 runs on the CPU only for now");
#ifdef QT_HAVE_MPI
    int *counts = NULL, *displs = NULL;
    qt_status st = slices(d, ps->n_grad, &counts, &displs);
    free(displs);
    if (st != QT_OK) {
        free(counts);
        return st;
    }
    size_t lo, hi;
    qt_dist_shard(d, d->rank, ps->n_grad, &lo, &hi);
    d->bytes += (double)ps->n_grad * sizeof(float);
    d->calls++;
    /* in place: the whole buffer in, this rank's sum at its start */
    int rc = MPI_Reduce_scatter(MPI_IN_PLACE, ps->grad, counts, MPI_FLOAT, MPI_SUM,
                                MPI_COMM_WORLD);
    free(counts);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, __FILE__, __LINE__, "MPI_Reduce_scatter");
    memmove(ps->grad + lo, ps->grad, (hi - lo) * sizeof(float));
    float inv = 1.0f / (float)d->world;
    for (size_t i = lo; i < hi; i++) ps->grad[i] *= inv;
#endif
    (void)d;
    return QT_OK;
}

void qt_dist_grads_disarm(qt_dist_grads *g, qt_ctx *ctx) {
    if (g->armed) qt_ctx_set_grad_hook(ctx, NULL, NULL);
    g->armed = false;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

qt_status qt_dist_grads_finish(qt_dist_grads *g, qt_ctx *ctx) {
    if (g->armed) qt_ctx_set_grad_hook(ctx, NULL, NULL);
    bool armed = g->armed;
    g->armed = false;
    if (g->d->world == 1) return QT_OK;
    double t0 = now_s();
    if (!armed) reset_buckets(g);
    qt_status st = QT_OK;
    for (int i = 0; i < g->n_b && st == QT_OK; i++) /* what backward did not finish */
        if (!g->b[i].started) st = bucket_start(g, &g->b[i]);
    for (int i = 0; i < g->n_b && st == QT_OK; i++) st = bucket_finish(g, &g->b[i]);
#ifdef QT_HAVE_NCCL
    if (st == QT_OK && g->d->nccl) { /* the compute stream waits for the all-reduces */
        cudaEvent_t e = (cudaEvent_t)g->d->nccl_event;
        cudaError_t ce = cudaEventRecord(e, (cudaStream_t)g->d->nccl_stream);
        if (ce == cudaSuccess) ce = cudaStreamWaitEvent(cudaStreamLegacy, e, 0);
        if (ce != cudaSuccess)
            st = QT_ERROR(QT_EDEVICE, "dist: NCCL stream: %s", cudaGetErrorString(ce));
    }
#endif
    if (st == QT_OK && g->cfg.zero) st = reduce_scatter(g, g->ps[0]);
    g->d->wait_s += now_s() - t0; /* what backward did not hide (GPU: the queueing only) */
    return st;
}

/* ---- ZeRO-1 ------------------------------------------------------------------------------ */


qt_status qt_dist_allgather_params(qt_dist *d, qt_paramset *ps) {
    if (d->world == 1) return QT_OK;
    if (ps->ddata) return QT_ERROR(QT_ENOTSUP, "distributed.zero 1 runs on the CPU only for now");
    if (!values_in_grad_order(ps))
        return QT_ERROR(QT_ENOTSUP, "distributed.zero 1: the sharded parameters include "
                                    "frozen ones; use distributed.zero 0");
#ifdef QT_HAVE_MPI
    int *counts = NULL, *displs = NULL;
    qt_status st = slices(d, ps->n_grad, &counts, &displs);
    if (st == QT_OK) {
        d->bytes += (double)ps->n_grad * sizeof(float);
        d->calls++;
        /* in place: this rank's slice is already at its displacement */
        int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, ps->data, counts, displs,
                                MPI_FLOAT, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) st = mpi_fail(rc, __FILE__, __LINE__, "MPI_Allgatherv");
    }
    free(counts);
    free(displs);
    return st;
#else
    return QT_OK;
#endif
}

qt_status qt_dist_gather_moments(qt_dist *d, const qt_adamw *shard, qt_adamw *full) {
    if (d->world == 1) return QT_OK;
#ifdef QT_HAVE_MPI
    size_t n = 0;
    int64_t total = (int64_t)(shard->lo + shard->n); /* the last rank's end is n_grad */
    qt_status st = qt_dist_reduce_i64(d, &total, 1, QT_DIST_MAX);
    if (st != QT_OK) return st;
    n = (size_t)total;
    int *counts = NULL, *displs = NULL;
    st = slices(d, n, &counts, &displs);
    for (int k = 0; k < 2 && st == QT_OK; k++) {
        const float *src = k ? shard->v : shard->m;
        float *dst = d->rank == 0 ? (k ? full->v : full->m) : NULL;
        int rc = MPI_Gatherv(src, (int)shard->n, MPI_FLOAT, dst, counts, displs, MPI_FLOAT, 0,
                             MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) st = mpi_fail(rc, __FILE__, __LINE__, "MPI_Gatherv");
    }
    if (d->rank == 0 && full) full->step = shard->step;
    free(counts);
    free(displs);
    return st;
#else
    (void)shard, (void)full;
    return QT_OK;
#endif
}

uint64_t qt_dist_digest(const qt_paramset *ps) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a over the values' bits, frozen ones too */
    const uint32_t *u = (const uint32_t *)ps->data;
    for (size_t j = 0; j < ps->n_total; j++) {
        h ^= u[j];
        h *= 0x100000001b3ULL;
    }
    return h;
}
