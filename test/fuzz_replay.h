/*
 * A fuzz target's inputs replayed in ctest (test/isolate/test_frame.c,
 * test/node/test_wire.c): every file of the folder fuzz/<sub> beside the
 * test's source goes through a callback, so a seed or a crash kept there
 * is checked on every run, without libFuzzer.
 */
#ifndef FUZZ_REPLAY_H
#define FUZZ_REPLAY_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*tpt_replay_fn)(const char *name, const void *data, size_t len);

/* Replay fuzz/<sub> beside source (__FILE__ of the test: CMake compiles it
 * by its absolute path): how many files, or -1 if there is no such
 * folder. Files are read up to 1 MiB. */
static inline int tpt_replay(const char *source, const char *sub,
                             tpt_replay_fn fn)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", source);
    char *slash = strrchr(dir, '/');
    size_t at = slash ? (size_t)(slash - dir) + 1 : 0;
    snprintf(dir + at, sizeof dir - at, "fuzz/%s", sub);
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    static uint8_t data[1 << 20];
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        size_t len = fread(data, 1, sizeof data, f);
        fclose(f);
        fn(e->d_name, data, len);
        n++;
    }
    closedir(d);
    return n;
}

#endif
