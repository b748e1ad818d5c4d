/*
 * The keyed commands: those whose key is args[1] and that the key's shard
 * runs whole (OP_CMD). The connection looks a command up here to route it
 * (and checks its arity); the shard indexes the same table to run it.
 * Arities are Redis 7.0's.
 */
#include "store.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

KV_CMD(get);
KV_CMD(set);
KV_CMD(setnx);
KV_CMD(setex);
KV_CMD(psetex);
KV_CMD(getset);
KV_CMD(getdel);
KV_CMD(getex);
KV_CMD(append);
KV_CMD(strlen);
KV_CMD(incr);
KV_CMD(decr);
KV_CMD(incrby);
KV_CMD(decrby);
KV_CMD(incrbyfloat);
KV_CMD(type);
KV_CMD(rename);
KV_CMD(renamenx);
KV_CMD(persist);
KV_CMD(expire);
KV_CMD(pexpire);
KV_CMD(expireat);
KV_CMD(pexpireat);
KV_CMD(ttl);
KV_CMD(pttl);
KV_CMD(expiretime);
KV_CMD(pexpiretime);
KV_CMD(lpush);
KV_CMD(rpush);
KV_CMD(lpushx);
KV_CMD(rpushx);
KV_CMD(lpop);
KV_CMD(rpop);
KV_CMD(llen);
KV_CMD(lrange);
KV_CMD(lindex);
KV_CMD(lset);
KV_CMD(lrem);
KV_CMD(ltrim);
KV_CMD(linsert);
KV_CMD(hset);
KV_CMD(hsetnx);
KV_CMD(hmset);
KV_CMD(hget);
KV_CMD(hmget);
KV_CMD(hdel);
KV_CMD(hlen);
KV_CMD(hexists);
KV_CMD(hgetall);
KV_CMD(hkeys);
KV_CMD(hvals);
KV_CMD(hincrby);
KV_CMD(hincrbyfloat);
KV_CMD(hstrlen);
KV_CMD(sadd);
KV_CMD(srem);
KV_CMD(smembers);
KV_CMD(sismember);
KV_CMD(smismember);
KV_CMD(scard);
KV_CMD(spop);
KV_CMD(srandmember);
KV_CMD(zadd);
KV_CMD(zrem);
KV_CMD(zscore);
KV_CMD(zmscore);
KV_CMD(zincrby);
KV_CMD(zcard);
KV_CMD(zcount);
KV_CMD(zrank);
KV_CMD(zrevrank);
KV_CMD(zrange);
KV_CMD(zrevrange);
KV_CMD(zrangebyscore);
KV_CMD(zrevrangebyscore);
KV_CMD(zpopmin);
KV_CMD(zpopmax);
KV_CMD(zlexcount);
KV_CMD(zrangebylex);
KV_CMD(zrevrangebylex);

#define R(name, arity, write)                                                  \
    {                                                                          \
#name, arity, write, kv_cmd_##name                                     \
    }

static const kv_keyed KEYED[] = {
    /* strings */
    R(get, 2, false),
    R(set, -3, true),
    R(setnx, 3, true),
    R(setex, 4, true),
    R(psetex, 4, true),
    R(getset, 3, true),
    R(getdel, 2, true),
    R(getex, -2, true),
    R(append, 3, true),
    R(strlen, 2, false),
    R(incr, 2, true),
    R(decr, 2, true),
    R(incrby, 3, true),
    R(decrby, 3, true),
    R(incrbyfloat, 3, true),
    /* keys */
    R(type, 2, false),
    R(rename, 3, true),
    R(renamenx, 3, true),
    R(persist, 2, true),
    R(expire, -3, true),
    R(pexpire, -3, true),
    R(expireat, -3, true),
    R(pexpireat, -3, true),
    R(ttl, 2, false),
    R(pttl, 2, false),
    R(expiretime, 2, false),
    R(pexpiretime, 2, false),
    /* lists */
    R(lpush, -3, true),
    R(rpush, -3, true),
    R(lpushx, -3, true),
    R(rpushx, -3, true),
    R(lpop, -2, true),
    R(rpop, -2, true),
    R(llen, 2, false),
    R(lrange, 4, false),
    R(lindex, 3, false),
    R(lset, 4, true),
    R(lrem, 4, true),
    R(ltrim, 4, true),
    R(linsert, 5, true),
    /* hashes */
    R(hset, -4, true),
    R(hsetnx, 4, true),
    R(hmset, -4, true),
    R(hget, 3, false),
    R(hmget, -3, false),
    R(hdel, -3, true),
    R(hlen, 2, false),
    R(hexists, 3, false),
    R(hgetall, 2, false),
    R(hkeys, 2, false),
    R(hvals, 2, false),
    R(hincrby, 4, true),
    R(hincrbyfloat, 4, true),
    R(hstrlen, 3, false),
    /* sets */
    R(sadd, -3, true),
    R(srem, -3, true),
    R(smembers, 2, false),
    R(sismember, 3, false),
    R(smismember, -3, false),
    R(scard, 2, false),
    R(spop, -2, true),
    R(srandmember, -2, false),
    /* sorted sets */
    R(zadd, -4, true),
    R(zrem, -3, true),
    R(zscore, 3, false),
    R(zmscore, -3, false),
    R(zincrby, 4, true),
    R(zcard, 2, false),
    R(zcount, 4, false),
    R(zrank, 3, false),
    R(zrevrank, 3, false),
    R(zrange, -4, false),
    R(zrevrange, -4, false),
    R(zrangebyscore, -4, false),
    R(zrevrangebyscore, -4, false),
    R(zpopmin, -2, true),
    R(zpopmax, -2, true),
    R(zlexcount, 4, false),
    R(zrangebylex, -4, false),
    R(zrevrangebylex, -4, false),
};

#define NKEYED (sizeof KEYED / sizeof KEYED[0])

/* Lookup by a hash of the lower-cased name in an open-addressed index
 * (the connection asks for every command it parses), built once. */
#define SLOTS 512
static int16_t slots[SLOTS];
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static uint32_t name_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)(p[i] | 0x20)) * 16777619u;
    return h;
}

static void build_index(void)
{
    memset(slots, 0xff, sizeof slots);
    for (size_t i = 0; i < NKEYED; i++) {
        uint32_t s = name_hash(KEYED[i].name, strlen(KEYED[i].name));
        while (slots[s % SLOTS] >= 0)
            s++;
        slots[s % SLOTS] = (int16_t)i;
    }
}

int kv_keyed_find(const char *name, size_t n)
{
    pthread_once(&index_once, build_index);
    for (uint32_t s = name_hash(name, n);; s++) {
        int i = slots[s % SLOTS];
        if (i < 0)
            return -1;
        if (strlen(KEYED[i].name) == n &&
            strncasecmp(KEYED[i].name, name, n) == 0)
            return i;
    }
}

const kv_keyed *kv_keyed_at(int idx)
{
    return idx >= 0 && (size_t)idx < NKEYED ? &KEYED[idx] : NULL;
}

size_t kv_keyed_count(void) { return NKEYED; }
