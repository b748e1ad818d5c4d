/* troupe-kv shard side: a list is a ring of strings (a deque). */
#include "store.h"

#include <stdlib.h>
#include <string.h>

kv_list *kv_list_new(void)
{
    kv_list *l = kv_xrealloc(NULL, sizeof *l);
    l->cap = 8;
    l->head = l->n = 0;
    l->a = kv_xrealloc(NULL, l->cap * sizeof *l->a);
    return l;
}

void kv_list_free(kv_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(*kv_list_at(l, i));
    free(l->a);
    free(l);
}

static void grow(kv_list *l)
{
    if (l->n < l->cap)
        return;
    kv_str **na = kv_xrealloc(NULL, l->cap * 2 * sizeof *na);
    for (size_t i = 0; i < l->n; i++)
        na[i] = *kv_list_at(l, i);
    free(l->a);
    l->a = na;
    l->head = 0;
    l->cap *= 2;
}

void kv_list_push(kv_list *l, kv_str *s, bool left)
{
    grow(l);
    if (left)
        l->head = (l->head - 1) & (l->cap - 1);
    l->n++;
    *kv_list_at(l, left ? 0 : l->n - 1) = s;
}

kv_str *kv_list_pop(kv_list *l, bool left)
{
    kv_str *s;
    if (left) {
        s = *kv_list_at(l, 0);
        l->head = (l->head + 1) & (l->cap - 1);
    } else {
        s = *kv_list_at(l, l->n - 1);
    }
    l->n--;
    if (l->cap > 64 && l->n * 8 < l->cap) { /* give memory back */
        size_t nc = l->cap;
        while (nc > 8 && l->n * 2 < nc)
            nc /= 2;
        kv_str **na = kv_xrealloc(NULL, nc * sizeof *na);
        for (size_t i = 0; i < l->n; i++)
            na[i] = *kv_list_at(l, i);
        free(l->a);
        l->a = na;
        l->head = 0;
        l->cap = nc;
    }
    return s;
}

void kv_list_insert(kv_list *l, size_t i, kv_str *s)
{
    if (i < l->n / 2) {
        kv_list_push(l, NULL, true);
        for (size_t j = 0; j < i; j++)
            *kv_list_at(l, j) = *kv_list_at(l, j + 1);
    } else {
        kv_list_push(l, NULL, false);
        for (size_t j = l->n - 1; j > i; j--)
            *kv_list_at(l, j) = *kv_list_at(l, j - 1);
    }
    *kv_list_at(l, i) = s;
}

void kv_list_compact(kv_list *l)
{
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        kv_str *s = *kv_list_at(l, i);
        if (s)
            *kv_list_at(l, k++) = s;
    }
    l->n = k;
}
