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

/* A page fault per 4 KiB page costs microseconds on a VM, and a chunk of
 * the actor table is written whole as soon as it is made: populated in one
 * call, its pages cost no more than they would anyway. With a hook set (a
 * test failing the N-th allocation) the block comes from the hook. */
void *tpi_calloc_pages(size_t n, bool *mapped)
{
    *mapped = alloc_fn == malloc;
    if (!*mapped)
        return tpi_calloc(n);
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void tpi_free_pages(void *p, size_t n, bool mapped)
{
    if (p && mapped)
        munmap(p, n);
    else
        tpi_free(p);
}
