/* The allocator hook: every allocation of the runtime goes through here so
 * a test can fail the N-th one. */
#ifndef TPI_ALLOC_H
#define TPI_ALLOC_H

#include <stddef.h>

void *tpi_alloc(size_t n);
void *tpi_calloc(size_t n);
void *tpi_realloc(void *p, size_t n);
void tpi_free(void *p);
char *tpi_strndup(const char *s, size_t max);

#endif
