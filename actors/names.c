/* Registered names: a small chained hash map under one mutex. Lookups are
 * rare next to sends (users resolve a name once and keep the pid). */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

#include <pthread.h>
#include <string.h>

#define NAME_MAX_LEN 63
#define NBUCKETS 256

typedef struct entry {
    struct entry *next;
    tp_pid pid;
    char name[];
} entry;

struct tpi_names {
    pthread_mutex_t lock;
    entry *b[NBUCKETS];
};

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % NBUCKETS;
}

int tpi_names_new(tpi_names **out)
{
    tpi_names *n = tpi_calloc(sizeof *n);
    if (!n)
        return TP_ENOMEM;
    pthread_mutex_init(&n->lock, NULL);
    *out = n;
    return 0;
}

void tpi_names_free(tpi_names *n)
{
    if (!n)
        return;
    for (int i = 0; i < NBUCKETS; i++)
        for (entry *e = n->b[i], *nx; e; e = nx) {
            nx = e->next;
            tpi_free(e);
        }
    pthread_mutex_destroy(&n->lock);
    tpi_free(n);
}

static bool valid(const char *name)
{
    return name && name[0] && strnlen(name, NAME_MAX_LEN + 1) <= NAME_MAX_LEN;
}

int tp_register(tp_ctx *ctx, const char *name)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (!valid(name))
        return TP_EINVAL;
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    if (!x)
        return TP_ENOMEM;
    if (x->name)
        return TP_EEXIST;
    tpi_names *n = tpi_actor_rt(a)->names;
    size_t len = strlen(name);
    entry *e = tpi_alloc(sizeof *e + len + 1);
    char *copy = tpi_strndup(name, NAME_MAX_LEN);
    if (!e || !copy) {
        tpi_free(e);
        tpi_free(copy);
        return TP_ENOMEM;
    }
    memcpy(e->name, name, len + 1);
    e->pid = tpi_actor_pid(a);
    unsigned h = hash(name);
    pthread_mutex_lock(&n->lock);
    for (entry *o = n->b[h]; o; o = o->next)
        if (strcmp(o->name, name) == 0) {
            pthread_mutex_unlock(&n->lock);
            tpi_free(e);
            tpi_free(copy);
            return TP_EEXIST;
        }
    e->next = n->b[h];
    n->b[h] = e;
    pthread_mutex_unlock(&n->lock);
    x->name = copy;
    return 0;
}

/* Remove name if it maps to pid. */
static bool remove_name(tpi_names *n, const char *name, tp_pid pid)
{
    unsigned h = hash(name);
    bool found = false;
    pthread_mutex_lock(&n->lock);
    for (entry **pp = &n->b[h]; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->name, name) == 0 && (*pp)->pid == pid) {
            entry *e = *pp;
            *pp = e->next;
            tpi_free(e);
            found = true;
            break;
        }
    pthread_mutex_unlock(&n->lock);
    return found;
}

void tpi_names_release(tpi_names *n, const char *name, tp_pid pid)
{
    remove_name(n, name, pid);
}

int tp_unregister(tp_ctx *ctx, const char *name)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (!valid(name))
        return TP_EINVAL;
    tpi_actor_ext *x = a->ext;
    if (!x || !x->name || strcmp(x->name, name) != 0)
        return TP_ENOENT;
    remove_name(tpi_actor_rt(a)->names, name, tpi_actor_pid(a));
    tpi_free(x->name);
    x->name = NULL;
    return 0;
}

tp_pid tp_whereis(tp_runtime *rt, const char *name)
{
    if (!rt || !valid(name))
        return TP_PID_NONE;
    tpi_names *n = rt->names;
    tp_pid pid = TP_PID_NONE;
    unsigned h = hash(name);
    pthread_mutex_lock(&n->lock);
    for (entry *e = n->b[h]; e; e = e->next)
        if (strcmp(e->name, name) == 0) {
            pid = e->pid;
            break;
        }
    pthread_mutex_unlock(&n->lock);
    return pid;
}
