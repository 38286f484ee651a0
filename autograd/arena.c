/*
 * arena.c - the per-step activation arena: a bump allocator over a list of chunks.
 *
 * It grows by chunks sized from demand (at least double the last one), so no size has
 * to be guessed up front (the fixed ggml context pool is that library's most reported
 * error). On reset, if the step needed more than one chunk, they are replaced by a
 * single chunk of the total size: after the first step a steady training loop makes no
 * allocation at all. A device arena (be != NULL) is the same over the backend's memory.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define QT_ARENA_ALIGN 64
#define QT_ARENA_DEVICE_ALIGN 256 /* what cudaMalloc guarantees */
#define QT_ARENA_MIN_CHUNK ((size_t)1 << 20)

static qt_arena_chunk *chunk_new(const qt_backend *be, size_t size) {
    qt_arena_chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->base = be ? be->alloc(size) : aligned_alloc(QT_ARENA_ALIGN, size);
    if (!c->base) {
        free(c);
        return NULL;
    }
    c->size = size;
    c->used = 0;
    c->next = NULL;
    return c;
}

void *qt_arena_alloc(qt_arena *a, size_t bytes) {
    size_t align = a->be ? QT_ARENA_DEVICE_ALIGN : QT_ARENA_ALIGN;
    size_t need = (bytes + align - 1) & ~(align - 1);
    if (need < bytes) { /* overflow */
        qt_error_set(QT_ENOMEM, __FILE__, __LINE__, "arena: %zu bytes is too many", bytes);
        return NULL;
    }
    if (need == 0) need = align;
    qt_arena_chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        size_t size = c ? 2 * c->size : QT_ARENA_MIN_CHUNK;
        if (size < need) size = need;
        qt_arena_chunk *n = chunk_new(a->be, size);
        /* doubling can ask for more than a GPU has left: halve down to `need` */
        for (size_t s2 = size / 2; !n && s2 > need; s2 /= 2) n = chunk_new(a->be, s2);
        if (!n && size > need) n = chunk_new(a->be, need);
        if (!n) return NULL;
        n->next = c;
        a->head = n;
        a->total += n->size;
        c = n;
    }
    void *p = c->base + c->used;
    c->used += need;
    a->in_use += need;
    if (a->in_use > a->peak) a->peak = a->in_use;
    return p;
}

void qt_arena_free(qt_arena *a) {
    qt_arena_chunk *c = a->head;
    while (c) {
        qt_arena_chunk *next = c->next;
        if (a->be)
            a->be->free(c->base);
        else
            free(c->base);
        free(c);
        c = next;
    }
    const qt_backend *be = a->be;
    memset(a, 0, sizeof *a);
    a->be = be; /* the arena stays on its device */
}

void qt_arena_reset(qt_arena *a) {
    if (a->head && a->head->next) {
        /* consolidate: one chunk big enough for what this step used */
        size_t want = a->peak;
        size_t peak = a->peak;
        qt_arena_free(a);
        a->peak = peak;
        qt_arena_chunk *c = chunk_new(a->be, want < QT_ARENA_MIN_CHUNK ? QT_ARENA_MIN_CHUNK : want);
        if (c) { /* on failure the next alloc simply starts a new chunk */
            a->head = c;
            a->total = c->size;
        }
    } else if (a->head) {
        a->head->used = 0;
    }
    a->in_use = 0;
}
