/*
 * Tables of named entries for the services (runtime/service.h): filled
 * once at program start, looked up by name, never emptied. The isolated
 * behaviors (runtime/isolate/worker.c) and the behaviors other nodes may
 * spawn (runtime/node/spawn.c) are two of them.
 */
#include "runtime/service.h"

#include <string.h>

/* Entry i of r; each starts with its NUL-terminated name. */
static char *ent(tpi_namereg *r, unsigned i)
{
    return (char *)r->ents + (size_t)i * r->size;
}

static int find(tpi_namereg *r, const char *name, size_t len)
{
    for (unsigned i = 0; i < r->n; i++)
        if (strlen(ent(r, i)) == len && memcmp(ent(r, i), name, len) == 0)
            return (int)i;
    return -1;
}

int tpi_namereg_add(tpi_namereg *r, const void *e)
{
    const char *name = e;
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    if (find(r, name, strlen(name)) >= 0)
        rc = TP_EEXIST;
    else if (r->n == r->max)
        rc = TP_ENOMEM;
    else
        memcpy(ent(r, r->n++), e, r->size);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int tpi_namereg_find(tpi_namereg *r, const char *name, size_t len, void *out)
{
    pthread_mutex_lock(&r->lock);
    int i = find(r, name, len);
    if (i >= 0)
        memcpy(out, ent(r, (unsigned)i), r->size);
    pthread_mutex_unlock(&r->lock);
    return i >= 0 ? 0 : TP_ENOENT;
}
