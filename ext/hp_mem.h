/* hp_mem.h: the memory of the big tables (flow entries and their index, timers, flow-log records
 * and their index, the planned opens' side records, the LPM arrays).
 *
 * Those tables are read at random, one or two cache lines per packet, and grow to tens of MB: with
 * 4 KiB pages nearly every such read also misses the TLB. So a block of 2 MiB and more is mapped
 * on its own, 2 MiB aligned, and offered to transparent huge pages (madvise MADV_HUGEPAGE: the
 * kernel's default THP mode, "madvise", gives huge pages to such blocks only). Measured on the 1M
 * packet replay of benchmarks/bench_replay.py: the fast loop ~10 % faster (benchmarks/README.md).
 * Smaller blocks come from malloc, and so does everything under AddressSanitizer (which watches
 * malloc'd blocks only).
 *
 * A block is freed with its size (hp_big_free), which must be the size it was allocated or last
 * grown to: the size decides how it was allocated. A block that shrinks back below 2 MiB (a table
 * made again smaller) is unmapped, so its memory goes back to the system.
 */
#ifndef HP_MEM_H
#define HP_MEM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HP_HUGE_ALIGN ((size_t)2 << 20)

#if defined(__SANITIZE_ADDRESS__)
#define HP_MEM_MAP 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HP_MEM_MAP 0
#endif
#endif
#if !defined(HP_MEM_MAP)
#if defined(MAP_ANONYMOUS) && defined(MAP_PRIVATE)
#define HP_MEM_MAP 1
#else
#define HP_MEM_MAP 0
#endif
#endif

/* Whether a block of `size` bytes is mapped (else malloc'd). */
static inline int hp_big_mapped(size_t size)
{
    return HP_MEM_MAP && size >= HP_HUGE_ALIGN;
}

/* A zeroed block of `size` bytes; NULL when out of memory. */
static inline void *hp_big_alloc(size_t size)
{
#if HP_MEM_MAP
    if (hp_big_mapped(size)) {
        size_t rounded = (size + HP_HUGE_ALIGN - 1) & ~(HP_HUGE_ALIGN - 1);
        size_t span = rounded + HP_HUGE_ALIGN;
        char *raw = (char *)mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        char *p;
        size_t head;
        if (raw == (char *)MAP_FAILED)
            return NULL;
        p = (char *)(((uintptr_t)raw + HP_HUGE_ALIGN - 1) & ~(uintptr_t)(HP_HUGE_ALIGN - 1));
        head = (size_t)(p - raw);
        if (head)
            munmap(raw, head);
        if (span - head - rounded)
            munmap(p + rounded, span - head - rounded);
#ifdef MADV_HUGEPAGE
        madvise(p, rounded, MADV_HUGEPAGE);
#endif
        return p;
    }
#endif
    return calloc(size ? size : 1, 1);
}

/* Free block p of `size` bytes (NULL: nothing). */
static inline void hp_big_free(void *p, size_t size)
{
    if (p == NULL)
        return;
#if HP_MEM_MAP
    if (hp_big_mapped(size)) {
        munmap(p, (size + HP_HUGE_ALIGN - 1) & ~(HP_HUGE_ALIGN - 1));
        return;
    }
#endif
    free(p);
}

/* Block p of `old` bytes made `size` bytes (its first min(old, size) bytes kept, any new ones
 * zeroed); NULL when out of memory, p then left as it was. A mapped block that grows keeps its
 * pages: they are moved (mremap) to the start of a new 2 MiB aligned mapping, not copied (the
 * bytes of a mapped block past its size are zero: blocks are made zeroed and only grow in place). */
static inline void *hp_big_resize(void *p, size_t old, size_t size)
{
    void *q;
    if (!hp_big_mapped(old) && !hp_big_mapped(size)) {
        q = realloc(p, size ? size : 1);
        if (q && size > old)
            memset((char *)q + old, 0, size - old);
        return q;
    }
#if HP_MEM_MAP && defined(MREMAP_MAYMOVE) && defined(MREMAP_FIXED)
    if (p && hp_big_mapped(old) && size > old) {
        size_t from = (old + HP_HUGE_ALIGN - 1) & ~(HP_HUGE_ALIGN - 1);
        size_t to = (size + HP_HUGE_ALIGN - 1) & ~(HP_HUGE_ALIGN - 1);
        if (to == from)
            return p;
        q = hp_big_alloc(size); /* the new place, aligned and offered to huge pages */
        if (!q)
            return NULL;
        if (mremap(p, from, to, MREMAP_MAYMOVE | MREMAP_FIXED, q) != MAP_FAILED)
            return q;
        hp_big_free(q, size); /* cannot move: copied below */
    }
#endif
    q = hp_big_alloc(size);
    if (!q)
        return NULL;
    if (p)
        memcpy(q, p, old < size ? old : size);
    hp_big_free(p, old);
    return q;
}

#endif /* HP_MEM_H */
