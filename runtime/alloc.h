/* The allocator hook: every allocation of the runtime goes through here so
 * a test can fail the N-th one. */
#ifndef TPI_ALLOC_H
#define TPI_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

void *tpi_alloc(size_t n);
void *tpi_calloc(size_t n);
void *tpi_realloc(void *p, size_t n);
void tpi_free(void *p);
char *tpi_strndup(const char *s, size_t max);
/* Memory aligned to align (a power of two <= 4096), for structures laid
 * out on cache lines; free with tpi_free_aligned. Not zeroed, so pages
 * nobody writes are never touched. */
void *tpi_alloc_aligned(size_t n, size_t align);
/* The same, zeroed. */
void *tpi_calloc_aligned(size_t n, size_t align);
void tpi_free_aligned(void *p);
/* n zeroed bytes that the caller writes whole at once (an actor-table
 * chunk): mapped with their pages present when no hook is set (*mapped);
 * free with tpi_free_pages, the same n and *mapped. */
void *tpi_calloc_pages(size_t n, bool *mapped);
void tpi_free_pages(void *p, size_t n, bool mapped);

#endif
