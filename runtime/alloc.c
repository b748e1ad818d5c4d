#include "runtime/alloc.h"

#include "troupe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Set once before any runtime exists (documented), so plain globals. */
static void *(*alloc_fn)(size_t) = malloc;
static void *(*realloc_fn)(void *, size_t) = realloc;
static void (*free_fn)(void *) = free;

void tp_set_allocator(void *(*a)(size_t), void *(*r)(void *, size_t),
                      void (*f)(void *))
{
    alloc_fn = a ? a : malloc;
    realloc_fn = r ? r : realloc;
    free_fn = f ? f : free;
}

void *tpi_alloc(size_t n) { return alloc_fn(n); }

void *tpi_calloc(size_t n)
{
    void *p = alloc_fn(n);
    if (p)
        memset(p, 0, n);
    return p;
}

void *tpi_realloc(void *p, size_t n) { return realloc_fn(p, n); }

void tpi_free(void *p)
{
    if (p)
        free_fn(p);
}

void *tp_alloc(size_t n) { return tpi_alloc(n); }
void *tp_calloc(size_t n) { return tpi_calloc(n); }
void *tp_realloc(void *p, size_t n) { return tpi_realloc(p, n); }
void tp_free(void *p) { tpi_free(p); }

int tpi_grow(void **v, uint32_t *cap, size_t elem)
{
    uint32_t ncap = *cap ? *cap * 2 : 4;
    void *nv = tpi_realloc(*v, ncap * elem);
    if (!nv)
        return TP_ENOMEM;
    *v = nv;
    *cap = ncap;
    return 0;
}

char *tpi_strndup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *d = alloc_fn(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* The hook has no alignment: over-allocate, and keep the pointer to free
 * just below the aligned block. */
void *tpi_alloc_aligned(size_t n, size_t align)
{
    char *raw = tpi_alloc(n + align + sizeof(void *));
    if (!raw)
        return NULL;
    uintptr_t p = ((uintptr_t)raw + sizeof(void *) + align - 1) &
                  ~(uintptr_t)(align - 1);
    memcpy((char *)p - sizeof(void *), &raw, sizeof raw);
    return (void *)p;
}

void *tpi_calloc_aligned(size_t n, size_t align)
{
    void *p = tpi_alloc_aligned(n, align);
    if (p)
        memset(p, 0, n);
    return p;
}

void tpi_free_aligned(void *p)
{
    if (!p)
        return;
    void *raw;
    memcpy(&raw, (char *)p - sizeof(void *), sizeof raw);
    tpi_free(raw);
}

/* A page fault costs microseconds on a VM, once per 4 KiB page, or once
 * per 2 MiB page where the kernel gives transparent huge pages. The size
 * is rounded up to whole huge pages. */
#define HUGE_PAGE ((size_t)2 << 20)

void *tpi_reserve(size_t n)
{
    if (alloc_fn != malloc) /* a hook: the caller allocates through it */
        return NULL;
    n = (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    /* NORESERVE: address space only; memory comes as it is touched. One
     * huge page more, to align the block to one. */
    char *raw = mmap(NULL, n + HUGE_PAGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *p = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    munmap(p + n, (size_t)(raw + HUGE_PAGE - p));
    (void)madvise(p, n, MADV_HUGEPAGE); /* a hint: small pages otherwise */
    return p;
}

void tpi_unreserve(void *p, size_t n)
{
    if (p)
        munmap(p, (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
}
