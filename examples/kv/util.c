/* troupe-kv: buffers, hashing, time, integers. */
#include "kv.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Like Redis, an out-of-memory server stops loudly rather than limping
 * (for the server's own data; a client's buffers are soft, see kv.h). */
static _Noreturn void out_of_memory(size_t n)
{
    fprintf(stderr, "troupe-kv: out of memory allocating %zu bytes\n", n);
    abort();
}

void *kv_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        out_of_memory(n);
    return q;
}

/* Per thread: one actor turn at a time runs on it, so a soft section is
 * one connection's turn. */
static _Thread_local bool soft, soft_failed;

void kv_soft_begin(void)
{
    soft = true;
    soft_failed = false;
}

bool kv_soft_end(void)
{
    soft = false;
    return soft_failed;
}

bool kv_buf_reserve(kv_buf *b, size_t extra)
{
    if (b->max && extra > b->max - b->n) {
        b->over = true;
        return false;
    }
    if (b->cap - b->n >= extra)
        return true;
    if (extra > SIZE_MAX / 4 - b->n) {
        if (!soft)
            out_of_memory(extra);
        soft_failed = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n < extra)
        cap *= 2;
    char *p = soft ? realloc(b->p, cap) : kv_xrealloc(b->p, cap);
    if (!p) {
        soft_failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void kv_buf_add(kv_buf *b, const void *p, size_t n)
{
    if (!kv_buf_reserve(b, n))
        return;
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

void kv_buf_str(kv_buf *b, const char *s) { kv_buf_add(b, s, strlen(s)); }

void kv_buf_fmt(kv_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !kv_buf_reserve(b, (size_t)n + 1))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

static size_t u64_dec(char *out, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

size_t kv_fmt_i64(char *out, int64_t v)
{
    uint64_t u = (uint64_t)v;
    if (v >= 0)
        return u64_dec(out, u);
    *out = '-';
    return 1 + u64_dec(out + 1, 0 - u);
}

static void prefixed(kv_buf *b, char c, int64_t v)
{
    if (!kv_buf_reserve(b, 24))
        return;
    char *p = b->p + b->n;
    *p++ = c;
    p += kv_fmt_i64(p, v);
    *p++ = '\r';
    *p++ = '\n';
    b->n = (size_t)(p - b->p);
}

void kv_buf_int(kv_buf *b, int64_t v) { prefixed(b, ':', v); }

void kv_buf_bulk(kv_buf *b, const void *p, size_t n)
{
    if (!kv_buf_reserve(b, n + 24))
        return;
    prefixed(b, '$', (int64_t)n);
    kv_buf_add(b, p, n);
    kv_buf_add(b, "\r\n", 2);
}

void kv_buf_free(kv_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

void kv_bin_start(kv_buf *b)
{
    b->n = 0;
    if (kv_buf_reserve(b, 5))
        b->n = 5;
}

void kv_bin_finish(kv_buf *b)
{
    if (b->n < 5)
        return; /* could not start (soft section) */
    uint32_t n = (uint32_t)(b->n - 5);
    b->p[0] = (char)0xc6;
    b->p[1] = (char)(n >> 24);
    b->p[2] = (char)(n >> 16);
    b->p[3] = (char)(n >> 8);
    b->p[4] = (char)n;
}

void kv_frag(kv_buf *b, uint32_t seq, uint32_t pos, const void *p, size_t n)
{
    if (!kv_buf_reserve(b, 12 + n))
        return;
    kv_put32(b->p + b->n, seq);
    kv_put32(b->p + b->n + 4, pos);
    kv_put32(b->p + b->n + 8, (uint32_t)n);
    b->n += 12;
    kv_buf_add(b, p, n);
}

/* Little-endian loads, whatever the host: every node of a cluster must
 * place a key on the same shard. memcpy: the bytes need not be aligned. */
static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint64_t load32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

#define HASH_MUL 0x9e3779b97f4a7c15ull /* 2^64 / golden ratio, odd */

/* One word into the state: the multiply carries its bits upwards, the
 * shift brings the high half back down for the next word. */
static inline uint64_t hash_word(uint64_t h, uint64_t w)
{
    h = (h ^ w) * HASH_MUL;
    return h ^ (h >> 32);
}

/* Eight bytes a step; the last 1 to 8 bytes as one word read in two
 * overlapping halves (or, under 4, from its first, middle and last
 * bytes), which the length in the seed makes unambiguous. A final
 * avalanche (splitmix64's) spreads every input bit over the high half
 * (kv_shard_of) and the low bits (the dict's buckets). Deterministic and
 * unkeyed: good enough spreading for the demo; a public server would want
 * a keyed hash (SipHash). */
uint64_t kv_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x6a09e667f3bcc909ull ^ ((uint64_t)n * HASH_MUL);
    for (; n > 8; s += 8, n -= 8)
        h = hash_word(h, load64(s));
    uint64_t w = 0;
    if (n >= 4)
        w = load32(s) << 32 | load32(s + n - 4);
    else if (n)
        w = (uint64_t)s[0] << 16 | (uint64_t)s[n / 2] << 8 | s[n - 1];
    h = hash_word(h, w);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

int64_t kv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool kv_parse_i64(const char *p, size_t n, int64_t *out)
{
    if (n == 0 || n > 20)
        return false;
    size_t i = 0;
    bool neg = false;
    if (p[0] == '-') {
        neg = true;
        if (++i == n)
            return false;
    }
    if (p[i] == '0' && n > i + 1)
        return false; /* no leading zeros, like Redis */
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return false;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    if (neg && *out == 0)
        return false; /* "-0" */
    return true;
}

/* One element of a pattern other than '*' (at p, pn > 0) against the byte
 * c: whether it matches; *used: the pattern bytes it spans. Elements: ?
 * [set] [^set] [a-z] (an unterminated class ends the pattern), \x, x. */
static bool glob_one(const char *p, size_t pn, unsigned char c, size_t *used)
{
    size_t i = 1;
    bool ok;
    switch (p[0]) {
    case '?': ok = true; break;
    case '[': {
        bool neg = i < pn && p[i] == '^', match = false;
        i += neg;
        for (; i < pn && p[i] != ']'; i++) {
            if (p[i] == '\\' && pn - i >= 2) {
                match |= (unsigned char)p[++i] == c;
            } else if (pn - i >= 3 && p[i + 1] == '-') {
                unsigned char lo = (unsigned char)p[i],
                              hi = (unsigned char)p[i + 2];
                match |= lo <= hi ? c >= lo && c <= hi : c >= hi && c <= lo;
                i += 2;
            } else {
                match |= (unsigned char)p[i] == c;
            }
        }
        i += i < pn; /* the ']' */
        ok = match != neg;
        break;
    }
    case '\\':
        if (pn >= 2)
            i = 2;
        ok = (unsigned char)p[i - 1] == c;
        break;
    default: ok = (unsigned char)p[0] == c; break;
    }
    *used = i;
    return ok;
}

/* Redis's stringmatchlen, on bytes, without recursion: a client's pattern
 * of a million stars must not take a million stack frames. On a mismatch
 * only the last star seen takes one more byte: every element between two
 * stars spans one byte, so an earlier star taking more could only start
 * the rest later, which the last star's retries already cover (and stays
 * O(pattern x string), the bound of Redis's CVE-2022-36021 fix). */
bool kv_glob(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0, star_p = SIZE_MAX, star_s = 0, used;
    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            while (pi < pn && p[pi] == '*')
                pi++;
            if (pi == pn)
                return true;
            star_p = pi; /* the rest after it, tried from star_s on */
            star_s = si;
        } else if (pi < pn &&
                   glob_one(p + pi, pn - pi, (unsigned char)s[si], &used)) {
            pi += used;
            si++;
        } else if (star_p == SIZE_MAX) {
            return false;
        } else { /* the last star takes one more byte */
            pi = star_p;
            si = ++star_s;
        }
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
}
