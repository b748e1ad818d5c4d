/*
 * Snapshot file: "TROUPEKV1\n", then records (u32 klen, u32 vlen,
 * i64 expire unix ms or 0, key, value; little-endian), then a trailer
 * (u32 0xffffffff, u64 record count, u64 hash of every record byte).
 * Written to a temporary file, fsynced, and renamed over the old one, so
 * a crash mid-save leaves the previous snapshot intact. Writing runs in the
 * blocking pool (kv_save_job_run); loading runs in main before tp_run.
 */
#include "kv.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char MAGIC[] = "TROUPEKV1\n";
#define MAGIC_LEN (sizeof MAGIC - 1)
#define TRAILER 20

/* Streaming FNV-1a, the file checksum. */
static uint64_t fnv(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}
#define FNV0 1469598103934665603ull

void kv_save_job_free(kv_save_job *j)
{
    if (!j)
        return;
    for (unsigned i = 0; i < j->nparts; i++)
        free(j->parts[i]);
    free(j->path);
    free(j);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Blocking pool job: owns arg (a kv_save_job). Replies nothing on
 * success, TP_ESYS on failure (errno in the log line). */
int kv_save_job_run(void *arg, void **out, size_t *out_len)
{
    kv_save_job *j = arg;
    (void)out;
    (void)out_len;
    size_t plen = strlen(j->path);
    char *tmp = kv_xrealloc(NULL, plen + 32);
    snprintf(tmp, plen + 32, "%s.tmp.%ld", j->path, (long)getpid());
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        uint64_t h = FNV0;
        rc = write_all(fd, MAGIC, MAGIC_LEN);
        for (unsigned i = 0; !rc && i < j->nparts; i++) {
            h = fnv(h, j->parts[i], j->lens[i]);
            rc = write_all(fd, j->parts[i], j->lens[i]);
        }
        char tr[TRAILER];
        kv_put32(tr, 0xffffffffu);
        kv_put64(tr + 4, j->count);
        kv_put64(tr + 12, h);
        if (!rc)
            rc = write_all(fd, tr, sizeof tr);
        if (!rc)
            rc = fsync(fd);
        if (close(fd) != 0 && !rc)
            rc = -1;
        if (!rc)
            rc = rename(tmp, j->path);
        if (rc) {
            int e = errno;
            unlink(tmp);
            errno = e;
        }
    }
    if (rc) {
        fprintf(stderr, "troupe-kv: saving %s failed: %s\n", j->path,
                strerror(errno));
    } else {
        /* Make the rename durable too. */
        char *d = kv_xrealloc(NULL, plen + 1);
        memcpy(d, j->path, plen + 1);
        int dfd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(d);
    }
    free(tmp);
    kv_save_job_free(j);
    return rc ? TP_ESYS : 0;
}

int kv_load(kv_server *srv, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT
                   ? 1
                   : (fprintf(stderr, "troupe-kv: cannot open %s: %s\n", path,
                              strerror(errno)),
                      -1);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 ||
        st.st_size < (off_t)(MAGIC_LEN + TRAILER)) {
        fclose(f);
        fprintf(stderr, "troupe-kv: %s: not a snapshot (too short)\n", path);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    char *buf = kv_xrealloc(NULL, n);
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    const char *why = NULL;
    if (got != n)
        why = "short read";
    else if (memcmp(buf, MAGIC, MAGIC_LEN) != 0)
        why = "bad magic";
    const char *p = buf + MAGIC_LEN, *end = buf + n - TRAILER;
    uint64_t count = 0;
    /* First pass: check every length against the bytes actually there,
     * and the checksum, before touching the keyspace. */
    while (!why && p < end) {
        if ((size_t)(end - p) < KV_REC_HDR) {
            why = "truncated record";
            break;
        }
        uint64_t kl = kv_get32(p), vl = kv_get32(p + 4);
        if (kl + vl > (size_t)(end - p) - KV_REC_HDR) {
            why = "record length past the end";
            break;
        }
        p += KV_REC_HDR + kl + vl;
        count++;
    }
    if (!why && (kv_get32(end) != 0xffffffffu || kv_get64(end + 4) != count))
        why = "bad trailer";
    if (!why && kv_get64(end + 12) !=
                    fnv(FNV0, buf + MAGIC_LEN, (size_t)(end - buf) - MAGIC_LEN))
        why = "checksum mismatch";
    if (why) {
        fprintf(stderr,
                "troupe-kv: %s: corrupt snapshot (%s); refusing to "
                "start\n",
                path, why);
        free(buf);
        return -1;
    }
    int64_t now = kv_now_ms();
    uint64_t loaded = 0;
    for (p = buf + MAGIC_LEN; p < end;) {
        uint32_t kl = kv_get32(p), vl = kv_get32(p + 4);
        int64_t exp = (int64_t)kv_get64(p + 8);
        const char *k = p + KV_REC_HDR;
        if (!exp || exp > now) {
            kv_shard_load(srv->shard_state[kv_shard_of(srv, k, kl)], k, kl,
                          k + kl, vl, exp);
            loaded++;
        }
        p += KV_REC_HDR + kl + vl;
    }
    free(buf);
    if (!srv->cfg.quiet)
        fprintf(stderr, "troupe-kv: loaded %llu keys from %s\n",
                (unsigned long long)loaded, path);
    return 0;
}
