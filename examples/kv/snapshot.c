/*
 * Snapshot file: "TROUPEKV2\n", then records (u8 type, u32 klen,
 * u32 vlen, i64 expire unix ms or 0, key, value; little-endian; the value
 * serialized by type as db.c's kv_obj_encode says; the type byte has
 * KV_REC_WEAK set for a value a RENAME had in flight between shards, which
 * loads only if the file has no other record of its key), then a trailer
 * (u32 0xffffffff, u64 record count, u64 hash of every record byte).
 * Version 1 files (strings only: no type byte) are still read.
 * Written to a temporary file "<file>.tmp.<pid>" (created exclusively,
 * mode 0600, never through a symlink), fsynced, and renamed over the old
 * one, so a crash mid-save leaves the previous snapshot intact; the temp
 * files of processes that died mid-save are removed at the next start.
 * Writing runs in the blocking pool (kv_save_job_run); loading runs in
 * main before tp_run.
 */
#include "store.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char MAGIC[] = "TROUPEKV2\n", MAGIC_V1[] = "TROUPEKV1\n";
#define MAGIC_LEN (sizeof MAGIC - 1)
#define V1_REC_HDR 16
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
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(tmp, flags, 0600);
    if (fd < 0 && errno == EEXIST) {
        /* Named after this process: a leftover of ours, safe to drop. */
        unlink(tmp);
        fd = open(tmp, flags, 0600);
    }
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

/* Remove "<path>.tmp.<pid>" files whose process is gone (a BGSAVE
 * killed mid-write) or is this one (a pid reused). */
static void remove_stale_temps(const char *path)
{
    char *d = strdup(path), *b = strdup(path);
    if (!d || !b)
        goto out;
    const char *dir = dirname(d), *base = basename(b);
    size_t bn = strlen(base);
    DIR *dh = opendir(dir);
    if (!dh)
        goto out;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        const char *nm = de->d_name;
        if (strncmp(nm, base, bn) != 0 || strncmp(nm + bn, ".tmp.", 5) != 0)
            continue;
        const char *digits = nm + bn + 5;
        char *end;
        long pid = strtol(digits, &end, 10);
        if (end == digits || *end || pid <= 0)
            continue;
        if (pid != (long)getpid() &&
            (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue; /* a live process's save in progress */
        if (unlinkat(dirfd(dh), nm, 0) == 0)
            fprintf(stderr,
                    "troupe-kv: removed %s/%s, left by a save that "
                    "did not finish\n",
                    dir, nm);
    }
    closedir(dh);
out:
    free(d);
    free(b);
}

int kv_load(kv_server *srv, const char *path)
{
    remove_stale_temps(path);
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
    bool v1 = got == n && memcmp(buf, MAGIC_V1, MAGIC_LEN) == 0;
    size_t hdr = v1 ? V1_REC_HDR : KV_REC_HDR;
    if (got != n)
        why = "short read";
    else if (!v1 && memcmp(buf, MAGIC, MAGIC_LEN) != 0)
        why = "bad magic";
    const char *p = buf + MAGIC_LEN, *end = buf + n - TRAILER;
    uint64_t count = 0;
    /* First pass: check every length against the bytes actually there,
     * and the checksum, before touching the keyspace. */
    while (!why && p < end) {
        if ((size_t)(end - p) < hdr) {
            why = "truncated record";
            break;
        }
        uint64_t kl = kv_get32(p + !v1), vl = kv_get32(p + !v1 + 4);
        if (kl + vl > (size_t)(end - p) - hdr) {
            why = "record length past the end";
            break;
        }
        if (!v1 && ((uint8_t)p[0] & ~KV_REC_WEAK) > KV_T_ZSET) {
            why = "unknown value type";
            break;
        }
        p += hdr + kl + vl;
        count++;
    }
    if (!why && (kv_get32(end) != 0xffffffffu || kv_get64(end + 4) != count))
        why = "bad trailer";
    if (!why && kv_get64(end + 12) !=
                    fnv(FNV0, buf + MAGIC_LEN, (size_t)(end - buf) - MAGIC_LEN))
        why = "checksum mismatch";
    int64_t now = kv_now_ms();
    uint64_t loaded = 0, elsewhere = 0;
    for (p = buf + MAGIC_LEN; !why && p < end;) {
        uint8_t type = v1 ? KV_T_STRING : (uint8_t)p[0];
        uint32_t kl = kv_get32(p + !v1), vl = kv_get32(p + !v1 + 4);
        int64_t exp = (int64_t)kv_get64(p + !v1 + 8);
        const char *k = p + hdr;
        kv_shard *sh = srv->shard_state[kv_shard_of(srv, k, kl)];
        p += hdr + kl + vl;
        if (exp && exp <= now)
            continue;
        if (!sh) { /* cluster mode: another node's shard */
            elsewhere++;
            continue;
        }
        if (kv_shard_load(sh, type, k, kl, k + kl, vl, exp) != 0)
            why = "malformed value";
        loaded++;
    }
    free(buf);
    if (why) {
        fprintf(stderr,
                "troupe-kv: %s: corrupt snapshot (%s); refusing to "
                "start\n",
                path, why);
        return -1;
    }
    if (!srv->cfg.quiet)
        fprintf(stderr, "troupe-kv: loaded %llu keys from %s\n",
                (unsigned long long)loaded, path);
    if (elsewhere)
        fprintf(stderr,
                "troupe-kv: %llu keys of %s belong to other nodes' shards: "
                "skipped\n",
                (unsigned long long)elsewhere, path);
    return 0;
}
