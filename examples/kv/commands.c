/*
 * The keyed commands: those whose key is args[1] and that the key's shard
 * runs whole (OP_CMD). The connection looks a command up here to route it;
 * the shard indexes the same table to run it.
 */
#include "kv.h"

#include <string.h>
#include <strings.h>

static const kv_keyed KEYED[] = {
    {"get", 2, false},
};

#define NKEYED (sizeof KEYED / sizeof KEYED[0])

int kv_keyed_find(const char *name, size_t n)
{
    for (size_t i = 0; i < NKEYED; i++)
        if (strlen(KEYED[i].name) == n &&
            strncasecmp(KEYED[i].name, name, n) == 0)
            return (int)i;
    return -1;
}

const kv_keyed *kv_keyed_at(int idx)
{
    return idx >= 0 && (size_t)idx < NKEYED ? &KEYED[idx] : NULL;
}

size_t kv_keyed_count(void) { return NKEYED; }
