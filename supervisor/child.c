/*
 * Supervisor child specs and the child table: tp_sup_spec_init, checking a
 * spec and copying it into a new supervisor's state (and freeing that
 * state), adding children, finding them by pid, id or place, and deleting
 * the doomed ones.
 */
#include "supervisor/sup_int.h"

#include <stdio.h>
#include <string.h>

void tp_sup_spec_init(tp_sup_spec *spec)
{
    if (!spec)
        return;
    memset(spec, 0, sizeof *spec);
    spec->strategy = TP_SUP_ONE_FOR_ONE;
    spec->intensity = 1;
    spec->period_ms = 5000;
}

static int spec_check(const tp_sup_spec *spec)
{
    if (!spec || spec->period_ms == 0 ||
        (unsigned)spec->strategy > TP_SUP_SIMPLE_ONE_FOR_ONE ||
        (spec->n_children && !spec->children) ||
        (spec->name && (!spec->name[0] || strlen(spec->name) > 63)) ||
        spec->backoff.jitter_pct > 100)
        return TP_EINVAL;
    if (spec->strategy == TP_SUP_SIMPLE_ONE_FOR_ONE && spec->n_children != 1)
        return TP_EINVAL;
    for (size_t i = 0; i < spec->n_children; i++) {
        const tp_child_spec *c = &spec->children[i];
        if (!c->start || (unsigned)c->restart > TP_CHILD_TEMPORARY ||
            (unsigned)c->kind > TP_CHILD_SUPERVISOR ||
            c->shutdown_ms < TP_CHILD_INFINITY)
            return TP_EINVAL;
        if (spec->strategy == TP_SUP_SIMPLE_ONE_FOR_ONE)
            continue;
        if (!c->id || !c->id[0] || strlen(c->id) > TP_CHILD_ID_MAX)
            return TP_EINVAL;
        for (size_t k = 0; k < i; k++)
            if (strcmp(spec->children[k].id, c->id) == 0)
                return TP_EINVAL;
    }
    return 0;
}

tpi_sup *tpi_sup_new(const tp_sup_spec *spec, int *rc)
{
    *rc = spec_check(spec);
    if (*rc)
        return NULL;
    tpi_sup *s = tp_calloc(sizeof *s);
    if (!s) {
        *rc = TP_ENOMEM;
        return NULL;
    }
    s->spec = *spec;
    s->spec.children = NULL;
    s->spec.n_children = 0;
    s->spec.name = NULL;
    if (spec->name)
        snprintf(s->name, sizeof s->name, "%s", spec->name);
    if (spec->strategy == TP_SUP_SIMPLE_ONE_FOR_ONE) {
        s->tmpl = spec->children[0];
        s->tmpl.id = "";
        return s;
    }
    for (size_t i = 0; i < spec->n_children; i++) {
        if (!tpi_sup_child_add(s, &spec->children[i], NULL, 0)) {
            tpi_sup_free(s);
            *rc = TP_ENOMEM;
            return NULL;
        }
    }
    return s;
}

static void child_free(tpi_sup_child *c)
{
    tp_free(c->args);
    tp_free(c);
}

void tpi_sup_free(void *state)
{
    tpi_sup *s = state;
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        child_free(s->kids[i]);
    tp_free(s->kids);
    for (tpi_sup_note *n = s->notes, *next; n; n = next) {
        next = n->next;
        tp_free(n);
    }
    tp_free(s->rs);
    tp_free(s->job.steps);
    tp_free(s);
}

static tpi_sup_child *child_new(const tp_child_spec *spec, const void *args,
                                size_t args_len)
{
    tpi_sup_child *c = tp_calloc(sizeof *c);
    if (!c)
        return NULL;
    c->spec = *spec;
    if (spec->id)
        snprintf(c->id, sizeof c->id, "%s", spec->id);
    c->spec.id = c->id;
    if (args_len) {
        c->args = tp_alloc(args_len);
        if (!c->args) {
            tp_free(c);
            return NULL;
        }
        memcpy(c->args, args, args_len);
        c->args_len = args_len;
    }
    c->state = TP_CHILD_STOPPED;
    return c;
}

tpi_sup_child *tpi_sup_child_add(tpi_sup *s, const tp_child_spec *spec,
                                 const void *args, size_t args_len)
{
    tpi_sup_child *c = child_new(spec, args, args_len);
    if (!c)
        return NULL;
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 8;
        tpi_sup_child **nk = tp_realloc(s->kids, ncap * sizeof *nk);
        if (!nk) {
            child_free(c);
            return NULL;
        }
        s->kids = nk;
        s->cap = ncap;
    }
    s->kids[s->n++] = c;
    return c;
}

size_t tpi_sup_kid_index(const tpi_sup *s, const tpi_sup_child *c)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->kids[i] == c)
            return i;
    return s->n;
}

tpi_sup_child *tpi_sup_kid_by_pid(const tpi_sup *s, tp_pid pid)
{
    if (pid == TP_PID_NONE)
        return NULL;
    for (size_t i = s->n; i-- > 0;) /* recent children are likelier */
        if (s->kids[i]->pid == pid && !s->kids[i]->doomed)
            return s->kids[i];
    return NULL;
}

tpi_sup_child *tpi_sup_kid_by_id(const tpi_sup *s, const char *id, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (!s->kids[i]->doomed && strlen(s->kids[i]->id) == len &&
            memcmp(s->kids[i]->id, id, len) == 0)
            return s->kids[i];
    return NULL;
}

void tpi_sup_child_stopped(tpi_sup_child *c)
{
    c->pid = TP_PID_NONE;
    c->state = TP_CHILD_STOPPED;
    if (tpi_sup_one_shot(c))
        c->doomed = true;
}

void tpi_sup_sweep(tpi_sup *s)
{
    size_t j = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->kids[i]->doomed)
            child_free(s->kids[i]);
        else
            s->kids[j++] = s->kids[i];
    }
    s->n = j;
}
