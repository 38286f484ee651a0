/*
 * qt_dist.h - data-parallel training across MPI ranks: one `qt_dist` state, gradient
 * averaging in buckets (MPI on the CPU, NCCL between GPUs), ZeRO-1's sharded optimizer
 * step, and the few collectives the loop needs (losses, norms, agreement checks).
 *
 * MPI starts the ranks (`mpirun -np N qtrain train ...`) and carries NCCL's unique id.
 * A process not started by an MPI launcher, or a build without MPI, is one rank of one:
 * every call below is then a no-op that returns QT_OK, so the loop has one code path.
 *
 * Equivalence: N ranks with per-rank batch B see, between them, the windows one process
 * with batch N B sees (qt_dataset_shard), and the averaged gradient of N per-rank means
 * is the gradient of the global mean (with masked targets the loop weights each rank's
 * mean by its share of the counted tokens); the two runs agree up to summation order.
 *
 * Overlap: qt_dist_grads_arm installs a backward hook (qt_ctx_set_grad_hook); a bucket of
 * the flat gradient buffer starts its all-reduce (MPI_Iallreduce, or ncclAllReduce on
 * its own stream after an event on the compute stream) as soon as backward has finished
 * every grad in it, so the buckets of the last layers move while the first layers still
 * compute. Collectives start in the same order on every rank: the order backward finishes
 * parameters in, which the graph fixes.
 */
#ifndef QT_DIST_H
#define QT_DIST_H

#include "qt_autograd.h"
#include "qt_optim.h"

typedef struct qt_dist {
    int rank, world;             /* 0 and 1 in a single process */
    int local_rank, local_world; /* this node's ranks (one GPU per local rank) */
    bool mpi;                    /* MPI_Init was called here (launched by mpirun) */
    bool nccl;                   /* GPU grads move through NCCL (qt_dist_nccl_init) */
    void *nccl_comm, *nccl_stream, *nccl_event; /* ncclComm_t, cudaStream_t, cudaEvent_t */
    /* counters of this rank: payload bytes handed to collectives, calls, and seconds
     * spent in qt_dist_grads_finish (the communication backward did not hide) */
    double bytes, wait_s;
    long calls;
} qt_dist;

/* Starts MPI when an MPI launcher started this process (OpenMPI, MPICH/PMI, PMIx
 * environment), once per process; otherwise rank 0 of 1. Errors: launched by mpirun
 * with several ranks in a build without MPI. */
qt_status qt_dist_init(qt_dist *d);
/* NCCL's communicator (then MPI), once, in that order. Safe on a single process. */
void qt_dist_finalize(qt_dist *d);
/* For an error on one rank while the others may wait in a collective (never a hang):
 * with several ranks, MPI_Abort ends every rank of the job with `code` and does not
 * return. Returns when there is no job to end (one process): the caller then finalizes
 * and exits with its code itself. */
void qt_dist_abort(qt_dist *d, int code);

/* Every rank waits for all the others (MPI_Barrier). */
qt_status qt_dist_barrier(qt_dist *d);

typedef enum { QT_DIST_SUM, QT_DIST_MAX, QT_DIST_MIN } qt_dist_op;
/* In place across ranks (host values). */
qt_status qt_dist_reduce_f64(qt_dist *d, double *x, int n, qt_dist_op op);
qt_status qt_dist_reduce_i64(qt_dist *d, int64_t *x, int n, qt_dist_op op);

/* The NCCL communicator on GPU `device` (rank 0's unique id broadcast over MPI) and a
 * stream of its own. QT_ENOTSUP in builds without NCCL. */
qt_status qt_dist_nccl_init(qt_dist *d, int device);

/* ---- ZeRO-1: each rank owns a contiguous slice of the flat gradient buffer ---------- */

/* Rank r's slice [lo, hi) of n elements (sizes differ by at most one). */
void qt_dist_shard(const qt_dist *d, int r, size_t n, size_t *lo, size_t *hi);

/* ---- gradient averaging -------------------------------------------------------------- */

typedef struct {
    size_t bucket_bytes; /* all-reduce granularity (DDP's bucket_cap_mb); 0 = 25 MiB */
    bool overlap;        /* start buckets from backward's hook */
    bool zero;           /* ps[0]'s grads are reduce-scattered: rank r gets its slice only */
} qt_dist_grads_config;

typedef struct qt_dist_grads qt_dist_grads;

/* Averaging for the grads of n paramsets (1 or 2: the model's and the buffers', QAT's
 * scales or LoRA's adapters), allocated, on the device they will train on. */
qt_status qt_dist_grads_new(qt_dist *d, qt_paramset *const *ps, int n,
                            const qt_dist_grads_config *cfg, qt_dist_grads **out);
void qt_dist_grads_free(qt_dist_grads *g);
/* Before the backward that completes the step's grads (the last micro-batch): buckets
 * start as their grads become final. Without it, finish does everything. */
void qt_dist_grads_arm(qt_dist_grads *g, qt_ctx *ctx);
/* After that backward: every bucket reduced and divided by world (ZeRO: ps[0] only in
 * this rank's slice). Removes the hook. */
qt_status qt_dist_grads_finish(qt_dist_grads *g, qt_ctx *ctx);
/* After a failed step on this rank: removes the hook and starts nothing more (the other
 * ranks may have started buckets in another order; the job is ended by qt_dist_abort). */
void qt_dist_grads_disarm(qt_dist_grads *g, qt_ctx *ctx);

/* ZeRO-1 after the sharded optimizer step: every rank's slice of ps's trained values to
 * every rank (all-gather). */
qt_status qt_dist_allgather_params(qt_dist *d, qt_paramset *ps);
/* ZeRO-1's moments of every rank into `full` on rank 0 (sized ps->n_grad; other ranks
 * may pass NULL), for a checkpoint. */
qt_status qt_dist_gather_moments(qt_dist *d, const qt_adamw *shard, qt_adamw *full);

/* A 64-bit digest of every value (host copies, frozen ones included): ranks must agree
 * bit for bit. */
uint64_t qt_dist_digest(const qt_paramset *ps);

#endif /* QT_DIST_H */
