/* Messages: allocation, accessors, reason payloads, private FIFOs. */
#include "actors/actor.h"
#include "runtime/alloc.h"

#include <msgpack.h>
#include <string.h>

/* Small messages (the common case: an int, a short string) use one node
 * size (TPI_SMALL_PAYLOAD), recycled through per-thread caches; larger
 * ones are TPI_MSG_LARGE.
 * Sanitizer builds (TPI_NO_POOL) use the allocator for every node. */
tpi_msg *tpi_msg_new(int32_t tag, const void *data, size_t len)
{
    tpi_msg *m;
    uint32_t flags = 0;
    if (len <= TPI_SMALL_PAYLOAD) {
        if (!(m = tpi_node_get()))
            /* One spare byte: a payload that ends in a string (reasons)
             * reads as a C string in place. */
            m = tpi_alloc(sizeof *m + TPI_SMALL_PAYLOAD + 1);
    } else {
        flags = TPI_MSG_LARGE;
        m = tpi_alloc(sizeof *m + len + 1);
    }
    if (!m)
        return NULL;
    tpi_msg_init(m, tag, flags, len);
    if (data && len)
        memcpy(m->inl, data, len);
    m->inl[len] = '\0';
    return m;
}

void tpi_msg_free(tpi_msg *m)
{
    if (!m || (m->flags & TPI_MSG_STATIC))
        return;
    if (m->flags & TPI_MSG_OWNED)
        tpi_free(m->data);
    if (!(m->flags & TPI_MSG_LARGE) && tpi_node_put(m))
        return;
    tpi_free(m);
}

/* The reason payload is the msgpack array [kind, code, text|nil]. */
tpi_msg *tpi_msg_reason_new(int32_t tag, tp_reason r)
{
    size_t tlen = r.text ? strnlen(r.text, TP_REASON_TEXT_MAX) : 0;
    char buf[32 + TP_REASON_TEXT_MAX];
    char *p = buf;
    *p++ = (char)0x93;
    *p++ = (char)(r.kind & 0x7f);
    p += tpi_pack_int(p, r.code);
    if (r.text) {
        *p++ = (char)0xd9; /* str8: TP_REASON_TEXT_MAX < 256 */
        *p++ = (char)tlen;
        memcpy(p, r.text, tlen);
        p += tlen;
    } else {
        *p++ = (char)0xc0;
    }
    return tpi_msg_new(tag, buf, (size_t)(p - buf));
}

int32_t tp_msg_tag(const tp_msg *m) { return m ? m->tag : 0; }
tp_pid tp_msg_from(const tp_msg *m) { return m ? m->from : TP_PID_NONE; }
tp_ref tp_msg_ref(const tp_msg *m) { return m ? m->ref : 0; }
int tp_msg_status(const tp_msg *m) { return m ? m->status : TP_EINVAL; }

void tpi_msg_pack_int(tpi_msg *m)
{
    int64_t v;
    memcpy(&v, m->inl + TPI_MSG_INT_AT, sizeof v);
    m->len = tpi_pack_int(m->inl, v);
    m->inl[m->len] = '\0';
    m->data = m->inl;
}

/* The accessors below read a message their caller holds (its behavior's
 * argument), so an int message may be packed in place. */
const void *tp_msg_data(const tp_msg *m, size_t *len)
{
    if (m)
        tpi_msg_bytes((tpi_msg *)m);
    if (len)
        *len = m ? m->len : 0;
    return m ? m->data : NULL;
}

bool tp_msg_wants_reply(const tp_msg *m)
{
    return m &&
           (m->flags & (TPI_MSG_REQUEST | TPI_MSG_REPLIED)) == TPI_MSG_REQUEST;
}

int tp_msg_int(const tp_msg *m, int64_t *out)
{
    if (!m || !out)
        return TP_EINVAL;
    if (m->flags & TPI_MSG_INT) { /* tpi_msg_new_int kept it unpacked */
        memcpy(out, m->inl + TPI_MSG_INT_AT, sizeof *out);
        return 0;
    }
    return tpi_read_int(m->data, m->len, out);
}

int tp_msg_scanf(const tp_msg *m, const char *fmt, ...)
{
    if (!m || !fmt)
        return TP_EINVAL;
    tpi_msg_bytes((tpi_msg *)m);
    va_list ap;
    va_start(ap, fmt);
    int rc = tp_vunpackf(m->data, m->len, fmt, ap);
    va_end(ap);
    return rc;
}

int tp_msg_reason(const tp_msg *m, tp_reason *out)
{
    if (!m || !out ||
        (m->tag != TP_TAG_EXIT && m->tag != TP_TAG_DOWN &&
         m->tag != TPI_SIG_EXIT))
        return TP_EINVAL;
    int kind, code;
    const char *text = NULL;
    size_t tlen = 0;
    /* The text is nil or a string; try both shapes. */
    if (tp_unpackf(m->data, m->len, "[iin]", &kind, &code) != 0 &&
        tp_unpackf(m->data, m->len, "[iiS]", &kind, &code, &text, &tlen) != 0)
        return TP_EPROTO;
    if (kind < TP_EXIT_NORMAL || kind > TP_EXIT_KIND_MAX)
        return TP_EPROTO;
    /* The text is the payload's last bytes and tpi_msg_new terminates
     * every payload, so it is a C string in place. */
    if (text && text + tlen != m->data + m->len)
        return TP_EPROTO;
    out->kind = (tp_exit_kind)kind;
    out->code = code;
    out->text = text;
    return 0;
}

void tpi_msglist_push(tpi_msglist *l, tpi_msg *m)
{
    atomic_store_explicit(&m->node.next, NULL, memory_order_relaxed);
    if (l->tail)
        atomic_store_explicit(&l->tail->node.next, &m->node,
                              memory_order_relaxed);
    else
        l->head = m;
    l->tail = m;
}

tpi_msg *tpi_msglist_pop(tpi_msglist *l)
{
    tpi_msg *m = l->head;
    if (m) {
        l->head = (tpi_msg *)atomic_load_explicit(&m->node.next,
                                                  memory_order_relaxed);
        if (!l->head)
            l->tail = NULL;
    }
    return m;
}

void tpi_msglist_prepend(tpi_msglist *dst, tpi_msglist *src)
{
    if (!src->head)
        return;
    atomic_store_explicit(&src->tail->node.next,
                          dst->head ? &dst->head->node : NULL,
                          memory_order_relaxed);
    if (!dst->head)
        dst->tail = src->tail;
    dst->head = src->head;
    src->head = src->tail = NULL;
}
