/* The allocator hook: every allocation of the runtime goes through here so
 * a test can fail the N-th one. */
#ifndef TPI_ALLOC_H
#define TPI_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *tpi_alloc(size_t n);
void *tpi_calloc(size_t n);
void *tpi_realloc(void *p, size_t n);
void tpi_free(void *p);
char *tpi_strndup(const char *s, size_t max);
/* Double the array *v of *cap elements of elem bytes (4 at first): 0, or
 * TP_ENOMEM with *v and *cap as they were. */
int tpi_grow(void **v, uint32_t *cap, size_t elem);
/* Memory aligned to align (a power of two <= 4096), for structures laid
 * out on cache lines; free with tpi_free_aligned. Not zeroed, so pages
 * nobody writes are never touched. */
void *tpi_alloc_aligned(size_t n, size_t align);
/* The same, zeroed. */
void *tpi_calloc_aligned(size_t n, size_t align);
void tpi_free_aligned(void *p);
/* Address space for n zeroed bytes, backed by memory as it is first
 * touched, in transparent huge pages where the kernel has them: for the
 * actor table, whose slots are used one after another as actors are
 * spawned. NULL when an allocator hook is set (a test failing the N-th
 * allocation: the caller allocates through the hook instead) or the space
 * is not there. Free with tpi_unreserve and the same n. */
void *tpi_reserve(size_t n);
void tpi_unreserve(void *p, size_t n);

#endif
