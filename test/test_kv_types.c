/*
 * troupe-kv's data types, driven over loopback (issue 15, shard side):
 * strings, lists, hashes, sets and sorted sets with the replies and error
 * texts redis-server 7.0 gives for the same commands (taken from a
 * redis-server 7.0.15 run), WRONGTYPE for every type, RENAME between
 * shards, a SCAN that sees every key while the table grows, snapshots of
 * every type (and corrupt or stale files), active expiry of 100k keys
 * nobody touches, replies larger than one message, and the real
 * redis-cli for every command group.
 */
#include "kv_test.h"

#include <sys/stat.h>

/* Send raw bytes built by the caller (a pipeline) and check n replies. */
static void pipeline_set_px(client *c, const char *prefix, int n, int ttl_ms)
{
    size_t cap = (size_t)n * 96 + 64, len = 0;
    char *req = malloc(cap);
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_ms);
    for (int i = 0; i < n; i++) {
        char k[48];
        int kn = snprintf(k, sizeof k, "%s%d", prefix, i);
        len += (size_t)snprintf(req + len, cap - len,
                                "*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n"
                                "$2\r\nPX\r\n$%zu\r\n%s\r\n",
                                kn, k, strlen(ttl), ttl);
    }
    send_raw(c, req, len);
    free(req);
    for (int i = 0; i < n; i++) {
        reply_into(c, last, sizeof last);
        assert_string_equal(last, "+OK");
    }
}

static int64_t dbsize(client *c)
{
    CMD(c, "DBSIZE");
    assert_int_equal(last[0], ':');
    return atoll(last + 1);
}

/* ---------------------------------------------------------------- strings */

static void test_strings(void **state)
{
    client *c = kvt_client(state);
    EXPECT_REPLY(c, "+OK", "SET", "k", "v");
    EXPECT_REPLY(c, "$v", "SET", "k", "v4", "GET");
    EXPECT_REPLY(c, "(nil)", "SET", "nok", "x", "XX", "GET");
    EXPECT_REPLY(c, "-ERR invalid expire time in 'set' command", "SET", "k",
                 "v", "EX", "0");
    EXPECT_REPLY(c, "-ERR value is not an integer or out of range", "SET", "k",
                 "v", "EX", "abc");
    EXPECT_REPLY(c, "-ERR syntax error", "SET", "k", "v", "EX", "10", "PX",
                 "10");
    EXPECT_REPLY(c, "-ERR syntax error", "SET", "k", "v", "KEEPTTL", "EX",
                 "10");
    EXPECT_REPLY(c, "+OK", "SET", "k", "v", "EXAT", "1"); /* in the past */
    EXPECT_REPLY(c, "(nil)", "GET", "k");
    EXPECT_REPLY(c, "+OK", "SET", "k", "v", "EX", "100");
    EXPECT_REPLY(c, ":100", "TTL", "k");
    EXPECT_REPLY(c, "+OK", "SET", "k", "v2", "KEEPTTL");
    EXPECT_REPLY(c, ":100", "TTL", "k");
    EXPECT_REPLY(c, "+OK", "SET", "k", "v3");
    EXPECT_REPLY(c, ":-1", "TTL", "k");
    EXPECT_REPLY(c, ":0", "SETNX", "k", "x");
    EXPECT_REPLY(c, ":1", "SETNX", "k2", "x");
    EXPECT_REPLY(c, "+OK", "SETEX", "k3", "100", "v");
    EXPECT_REPLY(c, ":100", "TTL", "k3");
    EXPECT_REPLY(c, "-ERR invalid expire time in 'setex' command", "SETEX",
                 "k3", "0", "v");
    EXPECT_REPLY(c, "-ERR invalid expire time in 'psetex' command", "PSETEX",
                 "k3", "-1", "v");
    EXPECT_REPLY(c, "$v3", "GETSET", "k", "newv");
    EXPECT_REPLY(c, "(nil)", "GETSET", "nok9", "x");
    EXPECT_REPLY(c, "$newv", "GETDEL", "k");
    EXPECT_REPLY(c, "(nil)", "GETDEL", "k");
    EXPECT_REPLY(c, "$x", "GETEX", "k2", "EX", "100");
    EXPECT_REPLY(c, ":100", "TTL", "k2");
    EXPECT_REPLY(c, "$x", "GETEX", "k2", "PERSIST");
    EXPECT_REPLY(c, ":-1", "TTL", "k2");
    EXPECT_REPLY(c, "-ERR invalid expire time in 'getex' command", "GETEX",
                 "k2", "EX", "0");
    EXPECT_REPLY(c, "-ERR syntax error", "GETEX", "k2", "PERSIST", "EX", "10");
    EXPECT_REPLY(c, ":5", "APPEND", "a", "hello");
    EXPECT_REPLY(c, ":11", "APPEND", "a", " world");
    EXPECT_REPLY(c, "$hello world", "GET", "a");
    EXPECT_REPLY(c, ":11", "STRLEN", "a");
    EXPECT_REPLY(c, ":0", "STRLEN", "nokey");
    EXPECT_REPLY(c, ":1", "INCR", "n");
    EXPECT_REPLY(c, ":11", "INCRBY", "n", "10");
    EXPECT_REPLY(c, ":10", "DECR", "n");
    EXPECT_REPLY(c, ":5", "DECRBY", "n", "5");
    /* Shorter, then longer text: updated in place, then re-made. */
    EXPECT_REPLY(c, "$5", "GET", "n");
    EXPECT_REPLY(c, ":1", "STRLEN", "n");
    EXPECT_REPLY(c, ":-95", "DECRBY", "n", "100");
    EXPECT_REPLY(c, "$-95", "GET", "n");
    EXPECT_REPLY(c, ":5", "INCRBY", "n", "100");
    EXPECT_REPLY(c, ":1", "STRLEN", "n");
    EXPECT_REPLY(c, "-ERR decrement would overflow", "DECRBY", "n",
                 "-9223372036854775808");
    EXPECT_REPLY(c, "-ERR value is not an integer or out of range", "INCR",
                 "a");
    EXPECT_REPLY(c, "+OK", "SET", "f", "10.5");
    EXPECT_REPLY(c, "$10.6", "INCRBYFLOAT", "f", "0.1");
    EXPECT_REPLY(c, "$5.6", "INCRBYFLOAT", "f", "-5");
    EXPECT_REPLY(c, "-ERR value is not a valid float", "INCRBYFLOAT", "f",
                 "1e5000");
    EXPECT_REPLY(c, "$3000", "INCRBYFLOAT", "nf", "3.0e3");
    EXPECT_REPLY(c, "+OK", "SET", "f2", "5.0e3");
    EXPECT_REPLY(c, "$5200", "INCRBYFLOAT", "f2", "2.0e2");
    EXPECT_REPLY(c, "-ERR value is not a valid float", "INCRBYFLOAT", "a", "1");
    EXPECT_REPLY(c, "+OK", "SET", "z", "0");
    EXPECT_REPLY(c, "$0", "INCRBYFLOAT", "z", "-0");
    EXPECT_REPLY(c, "+string", "TYPE", "a");
    EXPECT_REPLY(c, "+none", "TYPE", "nokey");
}

/* ---------------------------------------------------------------- expiry */

static void test_key_expiry_commands(void **state)
{
    client *c = kvt_client(state);
    EXPECT_REPLY(c, "+OK", "SET", "x", "1");
    EXPECT_REPLY(c, ":1", "EXPIRE", "x", "100", "NX");
    EXPECT_REPLY(c, ":0", "EXPIRE", "x", "200", "NX");
    EXPECT_REPLY(c, ":0", "EXPIRE", "x", "50", "GT");
    EXPECT_REPLY(c, ":1", "EXPIRE", "x", "500", "GT");
    EXPECT_REPLY(c, ":0", "EXPIRE", "x", "600", "LT");
    EXPECT_REPLY(c, ":1", "EXPIRE", "x", "50", "LT");
    EXPECT_REPLY(c, ":50", "TTL", "x");
    EXPECT_REPLY(c,
                 "-ERR NX and XX, GT or LT options at the same time are not "
                 "compatible",
                 "EXPIRE", "x", "10", "NX", "XX");
    EXPECT_REPLY(c,
                 "-ERR GT and LT options at the same time are not compatible",
                 "EXPIRE", "x", "10", "GT", "LT");
    EXPECT_REPLY(c, "-ERR Unsupported option bogus", "EXPIRE", "x", "10",
                 "bogus");
    EXPECT_REPLY(c, "-ERR invalid expire time in 'expire' command", "EXPIRE",
                 "x", "9223372036854775807");
    EXPECT_REPLY(c, "-ERR invalid expire time in 'pexpire' command", "PEXPIRE",
                 "x", "9223372036854775807");
    EXPECT_REPLY(c, ":1", "PERSIST", "x");
    EXPECT_REPLY(c, ":0", "PERSIST", "x");
    EXPECT_REPLY(c, ":0", "EXPIRE", "x", "100", "XX");
    EXPECT_REPLY(c, ":0", "EXPIRE", "x", "100", "GT"); /* no TTL: infinite */
    EXPECT_REPLY(c, ":1", "EXPIRE", "x", "100", "LT");
    EXPECT_REPLY(c, ":1", "EXPIREAT", "x", "1"); /* in the past: deleted */
    EXPECT_REPLY(c, ":0", "EXISTS", "x");
    EXPECT_REPLY(c, "+OK", "SET", "e", "v");
    EXPECT_REPLY(c, ":1", "EXPIREAT", "e", "99999999999");
    EXPECT_REPLY(c, ":99999999999", "EXPIRETIME", "e");
    EXPECT_REPLY(c, ":1", "PEXPIREAT", "e", "99999999999123");
    EXPECT_REPLY(c, ":99999999999123", "PEXPIRETIME", "e");
    EXPECT_REPLY(c, ":-2", "EXPIRETIME", "nokey");
    EXPECT_REPLY(c, ":-2", "PTTL", "x2"); /* absent */
}

/* ----------------------------------------------------------------- lists */

static void test_lists(void **state)
{
    client *c = kvt_client(state);
    EXPECT_REPLY(c, ":3", "LPUSH", "l", "a", "b", "c");
    EXPECT_REPLY(c, ":5", "RPUSH", "l", "d", "e");
    EXPECT_REPLY(c, "[c,b,a,d,e]", "LRANGE", "l", "0", "-1");
    EXPECT_REPLY(c, "[d,e]", "LRANGE", "l", "-2", "-1");
    EXPECT_REPLY(c, "[]", "LRANGE", "l", "5", "1");
    EXPECT_REPLY(c, "[c,b,a,d,e]", "LRANGE", "l", "0", "100");
    EXPECT_REPLY(c, "-ERR value is not an integer or out of range", "LRANGE",
                 "l", "a", "b");
    EXPECT_REPLY(c, ":5", "LLEN", "l");
    EXPECT_REPLY(c, ":0", "LLEN", "nol");
    EXPECT_REPLY(c, "$e", "LINDEX", "l", "-1");
    EXPECT_REPLY(c, "(nil)", "LINDEX", "l", "99");
    EXPECT_REPLY(c, "+OK", "LSET", "l", "0", "z");
    EXPECT_REPLY(c, "-ERR index out of range", "LSET", "l", "99", "z");
    EXPECT_REPLY(c, "-ERR no such key", "LSET", "nol", "0", "z");
    EXPECT_REPLY(c, ":0", "LPUSHX", "nol", "a");
    EXPECT_REPLY(c, ":6", "RPUSHX", "l", "f");
    EXPECT_REPLY(c, ":7", "LINSERT", "l", "BEFORE", "d", "X");
    EXPECT_REPLY(c, ":8", "LINSERT", "l", "AFTER", "f", "Y");
    EXPECT_REPLY(c, ":-1", "LINSERT", "l", "AFTER", "nope", "Y");
    EXPECT_REPLY(c, "-ERR syntax error", "LINSERT", "l", "middle", "d", "Y");
    EXPECT_REPLY(c, ":0", "LINSERT", "nol", "BEFORE", "a", "b");
    EXPECT_REPLY(c, "[z,b,a,X,d,e,f,Y]", "LRANGE", "l", "0", "-1");
    EXPECT_REPLY(c, ":7", "RPUSH", "r", "a", "b", "a", "c", "a", "d", "a");
    EXPECT_REPLY(c, ":2", "LREM", "r", "2", "a");
    EXPECT_REPLY(c, "[b,c,a,d,a]", "LRANGE", "r", "0", "-1");
    EXPECT_REPLY(c, ":1", "LREM", "r", "-1", "a");
    EXPECT_REPLY(c, "[b,c,a,d]", "LRANGE", "r", "0", "-1");
    EXPECT_REPLY(c, ":1", "LREM", "r", "0", "a");
    EXPECT_REPLY(c, "+OK", "LTRIM", "r", "1", "1");
    EXPECT_REPLY(c, "[c]", "LRANGE", "r", "0", "-1");
    EXPECT_REPLY(c, "+OK", "LTRIM", "r", "5", "10");
    EXPECT_REPLY(c, ":0", "EXISTS", "r"); /* empty lists are deleted */
    EXPECT_REPLY(c, "$z", "LPOP", "l");
    EXPECT_REPLY(c, "$Y", "RPOP", "l");
    EXPECT_REPLY(c, "[b,a]", "LPOP", "l", "2");
    EXPECT_REPLY(c, "[f,e]", "RPOP", "l", "2");
    EXPECT_REPLY(c, "[]", "LPOP", "l", "0");
    EXPECT_REPLY(c, "-ERR value is out of range, must be positive", "LPOP", "l",
                 "-1");
    EXPECT_REPLY(c, "-ERR value is out of range, must be positive", "LPOP", "l",
                 "abc");
    EXPECT_REPLY(c, "[d,X]", "RPOP", "l", "100");
    EXPECT_REPLY(c, ":0", "EXISTS", "l");
    EXPECT_REPLY(c, "(nil)", "LPOP", "l");
    EXPECT_REPLY(c, "(nil)", "LPOP", "l", "1"); /* a null array */
    EXPECT_REPLY(c, "-ERR wrong number of arguments for 'rpop' command", "RPOP",
                 "l", "1", "2");
    /* A 10k list: LRANGE pages and pops from both ends stay in order. */
    size_t cap = 10000 * 64, n = 0;
    char *req = malloc(cap);
    for (int i = 0; i < 10000; i++)
        n += (size_t)snprintf(req + n, cap - n,
                              "*3\r\n$5\r\nRPUSH\r\n$3\r\nbig\r\n$%d\r\n%d\r\n",
                              i < 10     ? 1
                              : i < 100  ? 2
                              : i < 1000 ? 3
                                         : 4,
                              i);
    send_raw(c, req, n);
    free(req);
    for (int i = 0; i < 10000; i++)
        reply_into(c, last, sizeof last);
    assert_string_equal(last, ":10000");
    EXPECT_REPLY(c, "[5000,5001,5002]", "LRANGE", "big", "5000", "5002");
    EXPECT_REPLY(c, "$9999", "LINDEX", "big", "-1");
    EXPECT_REPLY(c, "[0,1]", "LPOP", "big", "2");
    EXPECT_REPLY(c, "$2", "LINDEX", "big", "0");
}

/* ---------------------------------------------------------------- hashes */

static void test_hashes(void **state)
{
    client *c = kvt_client(state);
    EXPECT_REPLY(c, ":2", "HSET", "h", "f1", "v1", "f2", "v2");
    EXPECT_REPLY(c, ":1", "HSET", "h", "f1", "v1b", "f3", "v3");
    EXPECT_REPLY(c, "-ERR wrong number of arguments for 'hset' command", "HSET",
                 "h", "f1");
    EXPECT_REPLY(c, "-ERR wrong number of arguments for 'hmset' command",
                 "HMSET", "h", "a", "1", "b");
    EXPECT_REPLY(c, "+OK", "HMSET", "h", "a", "1");
    EXPECT_REPLY(c, "$v1b", "HGET", "h", "f1");
    EXPECT_REPLY(c, "(nil)", "HGET", "h", "nof");
    EXPECT_REPLY(c, "(nil)", "HGET", "noh", "f");
    EXPECT_REPLY(c, "[v1b,(nil),v2]", "HMGET", "h", "f1", "nof", "f2");
    EXPECT_REPLY(c, "[(nil),(nil)]", "HMGET", "noh", "a", "b");
    EXPECT_REPLY(c, ":4", "HLEN", "h");
    EXPECT_REPLY(c, ":0", "HLEN", "noh");
    EXPECT_REPLY(c, ":1", "HEXISTS", "h", "f1");
    EXPECT_REPLY(c, ":0", "HEXISTS", "h", "x");
    EXPECT_REPLY(c, ":3", "HSTRLEN", "h", "f1");
    EXPECT_REPLY(c, ":0", "HSETNX", "h", "f1", "x");
    EXPECT_REPLY(c, ":1", "HSETNX", "h", "f9", "x");
    EXPECT_REPLY(c, ":5", "HINCRBY", "h", "cnt", "5");
    EXPECT_REPLY(c, ":-5", "HINCRBY", "h", "cnt", "-10");
    EXPECT_REPLY(c, ":0", "HINCRBY", "h", "cnt", "5");
    EXPECT_REPLY(c, "$0", "HGET", "h", "cnt");
    EXPECT_REPLY(c, ":1", "HSTRLEN", "h", "cnt");
    EXPECT_REPLY(c, "-ERR hash value is not an integer", "HINCRBY", "h", "f1",
                 "1");
    EXPECT_REPLY(c, "-ERR value is not an integer or out of range", "HINCRBY",
                 "h", "cnt", "x");
    EXPECT_REPLY(c, ":1", "HSET", "h", "big", "9223372036854775807");
    EXPECT_REPLY(c, "-ERR increment or decrement would overflow", "HINCRBY",
                 "h", "big", "1");
    EXPECT_REPLY(c, "$1.5", "HINCRBYFLOAT", "h", "fl", "1.5");
    EXPECT_REPLY(c, "$1.6", "HINCRBYFLOAT", "h", "fl", "0.1");
    EXPECT_REPLY(c, "-ERR hash value is not a float", "HINCRBYFLOAT", "h", "f1",
                 "1");
    EXPECT_REPLY(c, "-ERR value is not a valid float", "HINCRBYFLOAT", "h",
                 "fl", "x");
    EXPECT_REPLY(c, ":2", "HDEL", "h", "f1", "nof", "f2");
    EXPECT_REPLY(c, ":0", "HDEL", "noh", "a");
    EXPECT_REPLY(c, "[]", "HKEYS", "noh");
    EXPECT_REPLY(c, "[]", "HGETALL", "noh");
    EXPECT_REPLY(c, ":6", "HDEL", "h", "f3", "a", "f9", "cnt", "big", "fl");
    EXPECT_REPLY(c, ":0", "EXISTS", "h"); /* empty hashes are deleted */
    EXPECT_REPLY(c, ":1", "HSET", "one", "f", "v");
    EXPECT_REPLY(c, "[f,v]", "HGETALL", "one");
    EXPECT_REPLY(c, "[f]", "HKEYS", "one");
    EXPECT_REPLY(c, "[v]", "HVALS", "one");
}

/* ------------------------------------------------------------------ sets */

static void test_sets(void **state)
{
    client *c = kvt_client(state);
    EXPECT_REPLY(c, ":3", "SADD", "s", "a", "b", "c");
    EXPECT_REPLY(c, ":1", "SADD", "s", "a", "d");
    EXPECT_REPLY(c, ":1", "SREM", "s", "a", "x");
    EXPECT_REPLY(c, ":0", "SREM", "nos", "a");
    EXPECT_REPLY(c, ":3", "SCARD", "s");
    EXPECT_REPLY(c, ":0", "SCARD", "nos");
    EXPECT_REPLY(c, ":1", "SISMEMBER", "s", "b");
    EXPECT_REPLY(c, ":0", "SISMEMBER", "s", "a");
    EXPECT_REPLY(c, "[:0,:1,:1]", "SMISMEMBER", "s", "a", "b", "c");
    EXPECT_REPLY(c, "(nil)", "SPOP", "nos");
    EXPECT_REPLY(c, "[]", "SPOP", "nos", "3");
    EXPECT_REPLY(c, "-ERR value is out of range, must be positive", "SPOP", "s",
                 "-1");
    EXPECT_REPLY(c, "-ERR syntax error", "SPOP", "s", "1", "2");
    EXPECT_REPLY(c, "(nil)", "SRANDMEMBER", "nos");
    EXPECT_REPLY(c, "[]", "SRANDMEMBER", "nos", "5");
    EXPECT_REPLY(c, "[]", "SRANDMEMBER", "s", "0");
    EXPECT_REPLY(c,
                 "-ERR value is out of range, value must between "
                 "-9223372036854775807 and 9223372036854775807",
                 "SRANDMEMBER", "s", "-9223372036854775808");
    EXPECT_REPLY(c, ":3", "SREM", "s", "b", "c", "d");
    EXPECT_REPLY(c, ":0", "EXISTS", "s");
    EXPECT_REPLY(c, ":1", "SADD", "one", "x");
    EXPECT_REPLY(c, "[x,x,x]", "SRANDMEMBER", "one", "-3");
    EXPECT_REPLY(c, "[x]", "SRANDMEMBER", "one", "3");
    EXPECT_REPLY(c, "[x]", "SMEMBERS", "one");
    EXPECT_REPLY(c, "$x", "SPOP", "one");
    EXPECT_REPLY(c, ":0", "EXISTS", "one");
    /* SPOP with a count pops distinct members until the set is gone. */
    EXPECT_REPLY(c, ":5", "SADD", "five", "1", "2", "3", "4", "5");
    CMD(c, "SRANDMEMBER", "five", "3");
    assert_int_equal(strlen(last), strlen("[1,2,3]"));
    assert_true(last[1] != last[3] && last[1] != last[5] && last[3] != last[5]);
    CMD(c, "SPOP", "five", "4");
    assert_int_equal(strlen(last), strlen("[1,2,3,4]"));
    EXPECT_REPLY(c, ":1", "SCARD", "five");
    CMD(c, "SPOP", "five", "4");
    assert_int_equal(strlen(last), strlen("[1]"));
    EXPECT_REPLY(c, ":0", "EXISTS", "five");
}

/* ----------------------------------------------------------- sorted sets */

static void test_zsets(void **state)
{
    client *c = kvt_client(state);
    EXPECT_REPLY(c, ":3", "ZADD", "z", "1", "a", "2", "b", "3", "c");
    EXPECT_REPLY(c, ":0", "ZADD", "z", "1.5", "a");
    EXPECT_REPLY(c, ":1", "ZADD", "z", "CH", "1.5", "a", "5", "d");
    EXPECT_REPLY(c, ":1", "ZADD", "z", "NX", "100", "a", "9", "e");
    EXPECT_REPLY(c, ":0", "ZADD", "z", "XX", "100", "a", "9", "f");
    EXPECT_REPLY(c,
                 "-ERR XX and NX options at the same time are not compatible",
                 "ZADD", "z", "XX", "NX", "1", "a");
    EXPECT_REPLY(c,
                 "-ERR GT, LT, and/or NX options at the same time are not "
                 "compatible",
                 "ZADD", "z", "GT", "LT", "1", "a");
    EXPECT_REPLY(c, "-ERR INCR option supports a single increment-element pair",
                 "ZADD", "z", "INCR", "1", "a", "2", "b");
    EXPECT_REPLY(c, "$102", "ZADD", "z", "INCR", "2", "a");
    EXPECT_REPLY(c, "(nil)", "ZADD", "z", "INCR", "NX", "2", "a");
    EXPECT_REPLY(c, ":0", "ZADD", "z", "GT", "CH", "50", "a", "1", "b");
    EXPECT_REPLY(c, ":1", "ZADD", "z", "LT", "CH", "1", "a", "100", "b");
    EXPECT_REPLY(c, "-ERR syntax error", "ZADD", "z", "1", "a", "2");
    EXPECT_REPLY(c, "-ERR value is not a valid float", "ZADD", "z", "nan", "a");
    EXPECT_REPLY(c, "-ERR value is not a valid float", "ZADD", "z", "1e400",
                 "a"); /* overflow: refused as a score, as in Redis */
    EXPECT_REPLY(c, "-ERR value is not a valid float", "ZADD", "z", " 1", "a");
    EXPECT_REPLY(c, ":2", "ZADD", "z", "inf", "i", "-inf", "ni");
    EXPECT_REPLY(c, ":1", "ZCOUNT", "z", "1e400", "+inf"); /* a bound: inf */
    EXPECT_REPLY(c, "-ERR resulting score is not a number (NaN)", "ZADD", "z",
                 "INCR", "-inf", "i");
    /* Many pairs: a bad last score refuses the whole command (every
     * score is checked before any change). */
    EXPECT_REPLY(c, ":18", "ZADD", "many", "1", "m1", "2", "m2", "3", "m3", "4",
                 "m4", "5", "m5", "6", "m6", "7", "m7", "8", "m8", "9", "m9",
                 "10", "m10", "11", "m11", "12", "m12", "13", "m13", "14",
                 "m14", "15", "m15", "16", "m16", "17", "m17", "18", "m18");
    EXPECT_REPLY(c, "$16", "ZSCORE", "many", "m16");
    EXPECT_REPLY(c, "$18", "ZSCORE", "many", "m18");
    EXPECT_REPLY(c, "-ERR value is not a valid float", "ZADD", "many", "1",
                 "n1", "2", "n2", "3", "n3", "4", "n4", "5", "n5", "6", "n6",
                 "7", "n7", "8", "n8", "9", "n9", "10", "n10", "11", "n11",
                 "12", "n12", "13", "n13", "14", "n14", "15", "n15", "16",
                 "n16", "17", "n17", "x", "n18");
    EXPECT_REPLY(c, ":18", "ZCARD", "many");
    EXPECT_REPLY(c, "$1", "ZSCORE", "z", "a");
    EXPECT_REPLY(c, "$inf", "ZSCORE", "z", "i");
    EXPECT_REPLY(c, "(nil)", "ZSCORE", "z", "nope");
    EXPECT_REPLY(c, "[1,(nil),2]", "ZMSCORE", "z", "a", "nope", "b");
    EXPECT_REPLY(c, "$1.1000000000000001", "ZINCRBY", "z", "0.1", "a");
    EXPECT_REPLY(c, "$2.5", "ZINCRBY", "newz", "2.5", "m");
    EXPECT_REPLY(c, ":7", "ZCARD", "z");
    EXPECT_REPLY(c, "[ni,-inf,a,1.1000000000000001,b,2,c,3,d,5,e,9,i,inf]",
                 "ZRANGE", "z", "0", "-1", "WITHSCORES");
    EXPECT_REPLY(c, "[e,i]", "ZRANGE", "z", "-2", "-1");
    EXPECT_REPLY(c, "[i,inf,e,9]", "ZRANGE", "z", "0", "1", "REV",
                 "WITHSCORES");
    EXPECT_REPLY(c, "[i,e,d,c,b,a,ni]", "ZREVRANGE", "z", "0", "-1");
    EXPECT_REPLY(c, "-ERR syntax error", "ZREVRANGE", "z", "0", "1", "REV");
    EXPECT_REPLY(c, "[a,1.1000000000000001,b,2,c,3,d,5]", "ZRANGE", "z", "(1",
                 "5", "BYSCORE", "WITHSCORES");
    EXPECT_REPLY(c, "[d,c,b,a]", "ZRANGE", "z", "5", "(1", "BYSCORE", "REV");
    EXPECT_REPLY(c, "[a,b]", "ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT",
                 "1", "2");
    EXPECT_REPLY(c,
                 "-ERR syntax error, LIMIT is only supported in combination "
                 "with either BYSCORE or BYLEX",
                 "ZRANGE", "z", "0", "1", "LIMIT", "1", "2");
    EXPECT_REPLY(c, "-ERR min or max is not a float", "ZRANGE", "z", "a", "b",
                 "BYSCORE");
    EXPECT_REPLY(c, "[a,b,c]", "ZRANGEBYSCORE", "z", "1", "3");
    EXPECT_REPLY(c, "[a,b]", "ZRANGEBYSCORE", "z", "(1", "+inf", "LIMIT", "0",
                 "2");
    EXPECT_REPLY(c, "[c,b,a]", "ZREVRANGEBYSCORE", "z", "3", "1");
    EXPECT_REPLY(c, "[e,9]", "ZREVRANGEBYSCORE", "z", "+inf", "-inf",
                 "WITHSCORES", "LIMIT", "1", "1");
    EXPECT_REPLY(c, ":7", "ZCOUNT", "z", "-inf", "+inf");
    EXPECT_REPLY(c, ":2", "ZCOUNT", "z", "(1", "2");
    EXPECT_REPLY(c, ":0", "ZCOUNT", "z", "5", "1");
    EXPECT_REPLY(c, ":1", "ZRANK", "z", "a");
    EXPECT_REPLY(c, "(nil)", "ZRANK", "z", "nope");
    EXPECT_REPLY(c, ":4", "ZREVRANK", "z", "b");
    EXPECT_REPLY(c, ":1", "ZREM", "z", "a", "nope");
    EXPECT_REPLY(c, "[ni,-inf]", "ZPOPMIN", "z");
    EXPECT_REPLY(c, "[i,inf]", "ZPOPMAX", "z");
    EXPECT_REPLY(c, "[b,2,c,3]", "ZPOPMIN", "z", "2");
    EXPECT_REPLY(c, "-ERR value is out of range, must be positive", "ZPOPMAX",
                 "z", "-1");
    EXPECT_REPLY(c, "[]", "ZPOPMIN", "noz", "2");
    EXPECT_REPLY(c, "[d,5,e,9]", "ZPOPMIN", "z", "100");
    EXPECT_REPLY(c, ":0", "EXISTS", "z"); /* empty sorted sets are deleted */
    EXPECT_REPLY(c, ":6", "ZADD", "sc", "0.1", "a", "1e3", "b", "-0", "c",
                 "3.0", "d", "1.23456789012345678", "e",
                 "100000000000000000000", "f");
    EXPECT_REPLY(c,
                 "[c,0,a,0.10000000000000001,e,1.2345678901234567,d,3,b,1000,"
                 "f,1e+20]",
                 "ZRANGE", "sc", "0", "-1", "WITHSCORES");
    /* lex ranges (members of equal scores) */
    EXPECT_REPLY(c, ":5", "ZADD", "lz", "0", "a", "0", "b", "0", "c", "0", "d",
                 "0", "aa");
    EXPECT_REPLY(c, "[b,c]", "ZRANGEBYLEX", "lz", "[b", "(d");
    EXPECT_REPLY(c, "[aa,b]", "ZRANGEBYLEX", "lz", "-", "[c", "LIMIT", "1",
                 "2");
    EXPECT_REPLY(c, "[d,c]", "ZREVRANGEBYLEX", "lz", "+", "(b");
    EXPECT_REPLY(c, "[b,c,d]", "ZRANGE", "lz", "[b", "+", "BYLEX");
    EXPECT_REPLY(c, ":3", "ZLEXCOUNT", "lz", "(a", "[c");
    EXPECT_REPLY(c, "-ERR min or max not valid string range item",
                 "ZRANGEBYLEX", "lz", "b", "d");
    EXPECT_REPLY(c,
                 "-ERR syntax error, WITHSCORES not supported in combination "
                 "with BYLEX",
                 "ZRANGE", "lz", "-", "+", "BYLEX", "WITHSCORES");
    /* 20k members added in descending order: ranks and ranges hold. */
    size_t cap = 20000 * 64, n = 0;
    char *req = malloc(cap);
    for (int i = 20000; i > 0; i--) {
        char sc[16], m[16];
        snprintf(sc, sizeof sc, "%d", i);
        snprintf(m, sizeof m, "m%d", i);
        n += (size_t)snprintf(req + n, cap - n,
                              "*4\r\n$4\r\nZADD\r\n$3\r\nbig\r\n$%zu\r\n%s\r\n"
                              "$%zu\r\n%s\r\n",
                              strlen(sc), sc, strlen(m), m);
    }
    send_raw(c, req, n);
    free(req);
    for (int i = 0; i < 20000; i++) {
        reply_into(c, last, sizeof last);
        assert_string_equal(last, ":1");
    }
    EXPECT_REPLY(c, ":12344", "ZRANK", "big", "m12345");
    EXPECT_REPLY(c, ":7655", "ZREVRANK", "big", "m12345");
    EXPECT_REPLY(c, "[m10000,m10001]", "ZRANGE", "big", "9999", "10000");
    EXPECT_REPLY(c, ":101", "ZCOUNT", "big", "100", "200");
    EXPECT_REPLY(c, "[m19999,19999]", "ZRANGE", "big", "19998", "19998",
                 "WITHSCORES");
}

/* -------------------------------------------------------------- WRONGTYPE */

static void test_wrongtype(void **state)
{
    static const char WT[] =
        "-WRONGTYPE Operation against a key holding the wrong kind of value";
    client *c = kvt_client(state);
    EXPECT_REPLY(c, "+OK", "SET", "str", "x");
    EXPECT_REPLY(c, ":1", "RPUSH", "list", "x");
    EXPECT_REPLY(c, ":1", "HSET", "hash", "f", "x");
    EXPECT_REPLY(c, ":1", "SADD", "set", "x");
    EXPECT_REPLY(c, ":1", "ZADD", "zset", "1", "x");
    /* each type's commands on every other type */
    const char *keys[] = {"str", "list", "hash", "set", "zset"};
    for (int t = 0; t < 5; t++) {
        const char *k = keys[t];
        if (t != 0) {
            EXPECT_REPLY(c, WT, "GET", k);
            EXPECT_REPLY(c, WT, "INCR", k);
            EXPECT_REPLY(c, WT, "APPEND", k, "x");
            EXPECT_REPLY(c, WT, "GETSET", k, "x");
            EXPECT_REPLY(c, WT, "SET", k, "x", "GET");
            EXPECT_REPLY(c, "[(nil)]", "MGET", k); /* nil, like Redis */
        }
        if (t != 1) {
            EXPECT_REPLY(c, WT, "LPUSH", k, "a");
            EXPECT_REPLY(c, WT, "LRANGE", k, "0", "-1");
            EXPECT_REPLY(c, WT, "LPOP", k);
        }
        if (t != 2) {
            EXPECT_REPLY(c, WT, "HSET", k, "a", "b");
            EXPECT_REPLY(c, WT, "HGETALL", k);
        }
        if (t != 3) {
            EXPECT_REPLY(c, WT, "SADD", k, "a");
            EXPECT_REPLY(c, WT, "SMEMBERS", k);
            EXPECT_REPLY(c, WT, "SPOP", k);
        }
        if (t != 4) {
            EXPECT_REPLY(c, WT, "ZADD", k, "1", "a");
            EXPECT_REPLY(c, WT, "ZSCORE", k, "a");
            EXPECT_REPLY(c, WT, "ZPOPMIN", k);
        }
    }
    EXPECT_REPLY(c, "+list", "TYPE", "list");
    EXPECT_REPLY(c, "+hash", "TYPE", "hash");
    EXPECT_REPLY(c, "+set", "TYPE", "set");
    EXPECT_REPLY(c, "+zset", "TYPE", "zset");
    /* SET, MSET and DEL work on any type */
    EXPECT_REPLY(c, "+OK", "SET", "list", "now a string");
    EXPECT_REPLY(c, "+string", "TYPE", "list");
    EXPECT_REPLY(c, "+OK", "MSET", "hash", "1", "set", "2");
    EXPECT_REPLY(c, "[1,2]", "MGET", "hash", "set");
    EXPECT_REPLY(c, ":1", "DEL", "zset");
}

/* ----------------------------------------------------------------- RENAME */

/* Many pairs, so that most source and destination keys live on different
 * shards: the value (of every type) and its TTL move with it. */
static void test_rename_between_shards(void **unused)
{
    server s = start((const char *[]){"--no-persist", "--shards", "4", NULL});
    client *c = dial(s.port);
    EXPECT_REPLY(c, "-ERR no such key", "RENAME", "nokey", "x");
    EXPECT_REPLY(c, "-ERR no such key", "RENAMENX", "nokey", "x");
    EXPECT_REPLY(c, "+OK", "SET", "same", "v");
    EXPECT_REPLY(c, "+OK", "RENAME", "same", "same");
    EXPECT_REPLY(c, ":0", "RENAMENX", "same", "same");
    for (int i = 0; i < 24; i++) {
        char src[16], dst[16], want[64];
        snprintf(src, sizeof src, "src%d", i);
        snprintf(dst, sizeof dst, "dst%d", i);
        switch (i % 5) {
        case 0: EXPECT_REPLY(c, "+OK", "SET", src, "val"); break;
        case 1: EXPECT_REPLY(c, ":2", "RPUSH", src, "a", "b"); break;
        case 2: EXPECT_REPLY(c, ":1", "HSET", src, "f", "v"); break;
        case 3: EXPECT_REPLY(c, ":1", "SADD", src, "m"); break;
        default: EXPECT_REPLY(c, ":1", "ZADD", src, "2.5", "m"); break;
        }
        EXPECT_REPLY(c, ":1", "EXPIRE", src, "1000");
        EXPECT_REPLY(c, "+OK", "SET", dst, "old");
        EXPECT_REPLY(c, "+OK", "RENAME", src, dst);
        EXPECT_REPLY(c, ":0", "EXISTS", src);
        EXPECT_REPLY(c, ":1000", "TTL", dst);
        switch (i % 5) {
        case 0: snprintf(want, sizeof want, "$val"); break;
        case 1: snprintf(want, sizeof want, "[a,b]"); break;
        case 2: snprintf(want, sizeof want, "[f,v]"); break;
        case 3: snprintf(want, sizeof want, "[m]"); break;
        default: snprintf(want, sizeof want, "[m,2.5]"); break;
        }
        switch (i % 5) {
        case 0: EXPECT_REPLY(c, want, "GET", dst); break;
        case 1: EXPECT_REPLY(c, want, "LRANGE", dst, "0", "-1"); break;
        case 2: EXPECT_REPLY(c, want, "HGETALL", dst); break;
        case 3: EXPECT_REPLY(c, want, "SMEMBERS", dst); break;
        default:
            EXPECT_REPLY(c, want, "ZRANGE", dst, "0", "-1", "WITHSCORES");
            break;
        }
        /* RENAMENX onto a taken name: nothing moves, the source stays. */
        EXPECT_REPLY(c, "+OK", "SET", src, "again");
        EXPECT_REPLY(c, ":0", "RENAMENX", src, dst);
        EXPECT_REPLY(c, "$again", "GET", src);
        EXPECT_REPLY(c, ":1", "RENAMENX", src, "fresh");
        EXPECT_REPLY(c, "$again", "GET", "fresh");
        EXPECT_REPLY(c, ":1", "DEL", "fresh");
    }
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* ------------------------------------------------------------------- SCAN */

/* "*2 $n cursor *m keys": the cursor into cur, the keys counted into
 * seen[] by their number (key:<i>). */
static void scan_page(client *c, char *cur, size_t curn, unsigned char *seen,
                      int nseen, int *count)
{
    cmdv(c, 4, (const char *[]){"SCAN", cur, "COUNT", "20"});
    char line[128];
    for (int part = 0; part < 3; part++) {
        size_t ln = 0;
        int ch;
        while ((ch = getb(c)) >= 0 && ch != '\n')
            if (ch != '\r' && ln < sizeof line - 1)
                line[ln++] = (char)ch;
        line[ln] = '\0';
        assert_true(ch >= 0);
        if (part == 0)
            assert_string_equal(line, "*2");
    }
    snprintf(cur, curn, "%.60s", line);
    char hdr[32];
    size_t hn = 0;
    int ch;
    while ((ch = getb(c)) >= 0 && ch != '\n')
        if (ch != '\r' && hn < sizeof hdr - 1)
            hdr[hn++] = (char)ch;
    hdr[hn] = '\0';
    assert_int_equal(hdr[0], '*');
    int m = atoi(hdr + 1);
    for (int i = 0; i < m; i++) {
        char k[128];
        reply_into(c, k, sizeof k);
        if (strncmp(k, "$key:", 5) == 0) {
            int idx = atoi(k + 5);
            if (idx >= 0 && idx < nseen)
                seen[idx] = 1;
        }
        (*count)++;
    }
}

/* Every key present for the whole walk is returned at least once, while
 * another client inserts enough keys to grow every shard's table several
 * times between the pages. */
static void test_scan_while_growing(void **unused)
{
    enum { N = 2000, MORE = 30000 };
    server s = start((const char *[]){"--no-persist", "--shards", "4", NULL});
    client *c = dial(s.port), *w = dial(s.port);
    size_t cap = (size_t)MORE * 48, n = 0;
    char *req = malloc(cap);
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(req + n, cap - n,
                              "*3\r\n$3\r\nSET\r\n$%d\r\nkey:%d\r\n$1\r\nv\r\n",
                              (int)strlen("key:") + (i < 10     ? 1
                                                     : i < 100  ? 2
                                                     : i < 1000 ? 3
                                                                : 4),
                              i);
    send_raw(c, req, n);
    for (int i = 0; i < N; i++) {
        reply_into(c, last, sizeof last);
        assert_string_equal(last, "+OK");
    }
    unsigned char *seen = calloc(N, 1);
    char cur[64] = "0";
    int count = 0, pages = 0, added = 0;
    do {
        scan_page(c, cur, sizeof cur, seen, N, &count);
        /* Between pages: a burst of new keys (other names). */
        if (added < MORE) {
            n = 0;
            for (int i = 0; i < 1000; i++, added++)
                n += (size_t)snprintf(req + n, cap - n,
                                      "*3\r\n$3\r\nSET\r\n$12\r\nnew:%08d\r\n"
                                      "$1\r\nv\r\n",
                                      added);
            send_raw(w, req, n);
            for (int i = 0; i < 1000; i++)
                reply_into(w, last, sizeof last);
        }
        assert_true(++pages < 100000);
    } while (strcmp(cur, "0") != 0);
    for (int i = 0; i < N; i++)
        if (!seen[i])
            fail_msg("key:%d was never returned by SCAN", i);
    assert_true(count >= N);
    /* MATCH and TYPE filter */
    EXPECT_REPLY(c, ":1", "RPUSH", "key:list", "x");
    int found = 0;
    snprintf(cur, sizeof cur, "0");
    do {
        cmdv(c, 8,
             (const char *[]){"SCAN", cur, "MATCH", "key:*", "TYPE", "list",
                              "COUNT", "1000"});
        char line[64];
        for (int part = 0; part < 3; part++) {
            size_t ln = 0;
            int ch;
            while ((ch = getb(c)) >= 0 && ch != '\n')
                if (ch != '\r' && ln < sizeof line - 1)
                    line[ln++] = (char)ch;
            line[ln] = '\0';
        }
        snprintf(cur, sizeof cur, "%s", line);
        reply_into(c, last, sizeof last);
        if (strcmp(last, "[key:list]") == 0)
            found++;
        else
            assert_string_equal(last, "[]");
    } while (strcmp(cur, "0") != 0);
    assert_int_equal(found, 1);
    free(seen);
    free(req);
    hangup(c);
    hangup(w);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* -------------------------------------------------------------- snapshots */

static void fill_every_type(client *c)
{
    EXPECT_REPLY(c, "+OK", "SET", "s", "string value");
    EXPECT_REPLY(c, "+OK", "SET", "ttl", "v", "EX", "1000");
    EXPECT_REPLY(c, ":3", "RPUSH", "l", "a", "b", "c");
    EXPECT_REPLY(c, ":2", "HSET", "h", "f1", "v1", "f2", "v2");
    EXPECT_REPLY(c, ":3", "SADD", "set", "x", "y", "z");
    EXPECT_REPLY(c, ":3", "ZADD", "z", "1.5", "a", "-2", "b", "inf", "c");
    EXPECT_REPLY(c, ":1", "EXPIRE", "z", "1000");
}

/* A TTL set to 1000 s a moment ago (a restart may take a second). */
static void expect_ttl_1000(client *c, const char *key)
{
    CMD(c, "TTL", key);
    assert_int_equal(last[0], ':');
    assert_in_range(atoi(last + 1), 990, 1000);
}

static void check_every_type(client *c)
{
    EXPECT_REPLY(c, "$string value", "GET", "s");
    EXPECT_REPLY(c, "$v", "GET", "ttl");
    expect_ttl_1000(c, "ttl");
    EXPECT_REPLY(c, "[a,b,c]", "LRANGE", "l", "0", "-1");
    EXPECT_REPLY(c, "$v1", "HGET", "h", "f1");
    EXPECT_REPLY(c, "$v2", "HGET", "h", "f2");
    EXPECT_REPLY(c, ":2", "HLEN", "h");
    EXPECT_REPLY(c, "[:1,:1,:1,:0]", "SMISMEMBER", "set", "x", "y", "z", "w");
    EXPECT_REPLY(c, "[b,-2,a,1.5,c,inf]", "ZRANGE", "z", "0", "-1",
                 "WITHSCORES");
    expect_ttl_1000(c, "z");
    EXPECT_REPLY(c, ":6", "DBSIZE");
}

/* Start the server and expect it to refuse (exit non-zero) with a line
 * containing why on stderr. */
static void expect_refused(const char *why)
{
    char log[160], cmd[PATH_MAX + 512];
    snprintf(log, sizeof log, "%s.log", dbfile);
    snprintf(cmd, sizeof cmd, "%s --port 0 --dbfile %s --quiet 2>%s >/dev/null",
             kv_bin, dbfile, log);
    int st = system(cmd);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    char text[1024];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(log);
    if (!strstr(text, why))
        fail_msg("refusal message '%s' lacks '%s'", text, why);
}

/* Write dbfile: magic, the records, the trailer (count, FNV-1a of the
 * records). */
static void write_snapshot(const char *magic, const char *recs, size_t n,
                           int count)
{
    char trailer[20] = {(char)0xff, (char)0xff, (char)0xff, (char)0xff,
                        (char)count};
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)recs[i];
        h *= 1099511628211ull;
    }
    for (int i = 0; i < 8; i++)
        trailer[12 + i] = (char)(h >> (8 * i));
    FILE *f = fopen(dbfile, "wb");
    fwrite(magic, 1, strlen(magic), f);
    fwrite(recs, 1, n, f);
    fwrite(trailer, 1, sizeof trailer, f);
    fclose(f);
}

/* A version 2 string record (type byte, u32 key and value lengths, i64
 * expire 0, key, value) at out; its length. */
static size_t string_record(char *out, int type, const char *k, const char *v)
{
    size_t kn = strlen(k), vn = strlen(v);
    memset(out, 0, 17);
    out[0] = (char)type;
    out[1] = (char)kn;
    out[5] = (char)vn;
    memcpy(out + 17, k, kn);
    memcpy(out + 17 + kn, v, vn);
    return 17 + kn + vn;
}

static void test_snapshot_every_type(void **unused)
{
    unlink(dbfile);
    server s = start(NULL);
    client *c = dial(s.port);
    fill_every_type(c);
    EXPECT_REPLY(c, "+OK", "SAVE");
    hangup(c);
    assert_int_equal(stop(&s, SIGKILL), -1); /* no save at exit */
    struct stat st;
    assert_int_equal(stat(dbfile, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    s = start(NULL);
    c = dial(s.port);
    check_every_type(c);
    hangup(c);
    assert_int_equal(stop(&s, SIGKILL), -1);

    /* Every truncation and every flipped byte is refused. */
    FILE *f = fopen(dbfile, "rb");
    char *good = malloc((size_t)st.st_size);
    assert_int_equal(fread(good, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);
    for (off_t cut = 0; cut < st.st_size; cut += st.st_size / 7 + 1) {
        f = fopen(dbfile, "wb");
        fwrite(good, 1, (size_t)cut, f);
        fclose(f);
        expect_refused(cut < 30 ? "snapshot" : "corrupt snapshot");
    }
    for (off_t at = 10; at < st.st_size; at += st.st_size / 9 + 1) {
        good[at] ^= 0x5a;
        f = fopen(dbfile, "wb");
        fwrite(good, 1, (size_t)st.st_size, f);
        fclose(f);
        good[at] ^= 0x5a;
        expect_refused("corrupt snapshot");
    }
    /* A version 1 file (strings only) still loads. */
    static const char v1[] = "\x01\0\0\0\x02\0\0\0\0\0\0\0\0\0\0\0"
                             "kv1";
    write_snapshot("TROUPEKV1\n", v1, sizeof v1 - 1, 1);
    s = start(NULL);
    c = dial(s.port);
    EXPECT_REPLY(c, "$v1", "GET", "k");
    EXPECT_REPLY(c, ":1", "DBSIZE");
    hangup(c);
    assert_int_equal(stop(&s, SIGKILL), -1);
    /* Weak records (a RENAME's value in flight while the shards were
     * serialized) load only when the file has no other record of the key,
     * before or after them. */
    char recs[512];
    size_t n = 0;
    n += string_record(recs + n, 0x80, "a", "weak");
    n += string_record(recs + n, 0, "a", "strong");
    n += string_record(recs + n, 0, "b", "strong");
    n += string_record(recs + n, 0x80, "b", "weak");
    n += string_record(recs + n, 0x80, "c", "only weak");
    write_snapshot("TROUPEKV2\n", recs, n, 5);
    s = start(NULL);
    c = dial(s.port);
    EXPECT_REPLY(c, "[strong,strong,only weak]", "MGET", "a", "b", "c");
    EXPECT_REPLY(c, ":3", "DBSIZE");
    hangup(c);
    assert_int_equal(stop(&s, SIGKILL), -1);
    free(good);
    unlink(dbfile);
}

/* A BGSAVE killed mid-write leaves <dbfile>.tmp.<pid>: the next start
 * removes it (its process is gone); a live process's one is kept. */
static void test_stale_temp_files(void **unused)
{
    unlink(dbfile);
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    char stale[192], live[192];
    snprintf(stale, sizeof stale, "%s.tmp.%d", dbfile, (int)dead);
    snprintf(live, sizeof live, "%s.tmp.%d", dbfile, (int)getpid());
    FILE *f = fopen(stale, "w");
    fputs("partial", f);
    fclose(f);
    f = fopen(live, "w");
    fputs("in progress", f);
    fclose(f);
    server s = start(NULL);
    assert_int_equal(access(stale, F_OK), -1);
    assert_int_equal(access(live, F_OK), 0);
    client *c = dial(s.port);
    EXPECT_REPLY(c, "+OK", "SET", "k", "v");
    EXPECT_REPLY(c, "+OK", "SAVE");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
    unlink(live);
    unlink(dbfile);
}

/* ----------------------------------------------------------- active expiry */

/* 100k keys with a 300 ms TTL that nobody reads again are gone within
 * about 2 s (issue 15: 1M keys were still 89 % there after 10 s). */
static void test_active_expiry(void **state)
{
    client *c = kvt_client(state);
    EXPECT_REPLY(c, "+OK", "SET", "keeper", "v");
    pipeline_set_px(c, "exp:", 100000, 300);
    double t0 = tpt_now_ms();
    int64_t n;
    while ((n = dbsize(c)) > 1) {
        if (tpt_now_ms() - t0 > 2300)
            fail_msg("%lld keys left %.0f ms after the last SET", (long long)n,
                     tpt_now_ms() - t0);
        usleep(20 * 1000); /* polling the observable state, with a deadline */
    }
    fprintf(stderr, "100k keys expired %.0f ms after the last SET\n",
            tpt_now_ms() - t0);
    EXPECT_REPLY(c, "$v", "GET", "keeper");
}

/* ------------------------------------------------------------ big replies */

/* An MGET whose reply is many times a shard's message split arrives
 * whole and in order (issue 15: it used to be dropped). */
static void test_big_replies(void **state)
{
    enum { VAL = 1 << 20, KEYS = 12 };
    client *c = kvt_client(state);
    char *v = malloc(VAL + 1);
    for (int i = 0; i < KEYS; i++) {
        char k[16];
        snprintf(k, sizeof k, "big%d", i);
        memset(v, 'a' + i, VAL);
        v[VAL] = '\0';
        char n[16];
        snprintf(n, sizeof n, ":%d", i + 1);
        EXPECT_REPLY(c, "+OK", "SET", k, v);
        EXPECT_REPLY(c, n, "RPUSH", "biglist", v);
    }
    const char *argv[KEYS + 1] = {"MGET"};
    char names[KEYS][16];
    for (int i = 0; i < KEYS; i++) {
        snprintf(names[i], sizeof names[i], "big%d", i);
        argv[i + 1] = names[i];
    }
    for (int round = 0; round < 2; round++) {
        if (round == 0)
            cmdv(c, KEYS + 1, argv);
        else
            cmdv(c, 4, (const char *[]){"LRANGE", "biglist", "0", "-1"});
        char line[32];
        size_t ln = 0;
        int ch;
        while ((ch = getb(c)) >= 0 && ch != '\n')
            if (ch != '\r')
                line[ln++] = (char)ch;
        line[ln] = '\0';
        assert_string_equal(line, "*12");
        for (int i = 0; i < KEYS; i++) {
            ln = 0;
            while ((ch = getb(c)) >= 0 && ch != '\n')
                if (ch != '\r')
                    line[ln++] = (char)ch;
            line[ln] = '\0';
            assert_string_equal(line, "$1048576");
            for (int j = 0; j < VAL + 2; j++) {
                ch = getb(c);
                assert_true(ch >= 0);
                if (j < VAL && ch != 'a' + i)
                    fail_msg("value %d byte %d: %d", i, j, ch);
            }
        }
    }
    EXPECT_REPLY(c, "+PONG", "PING");
    free(v);
}

/* -------------------------------------------------------------- redis-cli */

static void test_redis_cli_types(void **unused)
{
    if (!have_redis_cli())
        skip();
    server s = start((const char *[]){"--no-persist", NULL});
    uint16_t p = s.port;
    cli_expect(p, "set s 10", "OK");
    cli_expect(p, "incrbyfloat s 0.5", "10.5");
    cli_expect(p, "append s x", "5");
    cli_expect(p, "getdel s", "10.5x");
    cli_expect(p, "rpush L a b c", "3");
    cli_expect(p, "lrange L 0 -1", "a\nb\nc");
    cli_expect(p, "lpop L 2", "a\nb");
    cli_expect(p, "hset H f v g w", "2");
    cli_expect(p, "hget H g", "w");
    cli_expect(p, "hincrby H n 7", "7");
    cli_expect(p, "sadd S m", "1");
    cli_expect(p, "smembers S", "m");
    cli_expect(p, "sismember S m", "1");
    cli_expect(p, "zadd Z 1.5 a 2 b", "2");
    cli_expect(p, "zrange Z 0 -1 withscores", "a\n1.5\nb\n2");
    cli_expect(p, "zscore Z a", "1.5");
    cli_expect(p, "type Z", "zset");
    cli_expect(p, "rename Z Z2", "OK");
    cli_expect(p, "zcard Z2", "2");
    cli_expect(p, "expire Z2 100", "1");
    cli_expect(p, "ttl Z2", "100");
    cli_expect(p, "lpush H x",
               "WRONGTYPE Operation against a key holding the wrong kind of "
               "value");
    assert_int_equal(stop(&s, SIGTERM), 0);
}

int main(void)
{
    if (kvt_setup() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        KVT_WITH_SERVER(test_strings),
        KVT_WITH_SERVER(test_key_expiry_commands),
        KVT_WITH_SERVER(test_lists),
        KVT_WITH_SERVER(test_hashes),
        KVT_WITH_SERVER(test_sets),
        KVT_WITH_SERVER(test_zsets),
        KVT_WITH_SERVER(test_wrongtype),
        cmocka_unit_test(test_rename_between_shards),
        cmocka_unit_test(test_scan_while_growing),
        cmocka_unit_test(test_snapshot_every_type),
        cmocka_unit_test(test_stale_temp_files),
        KVT_WITH_SERVER(test_active_expiry),
        KVT_WITH_SERVER(test_big_replies),
        cmocka_unit_test(test_redis_cli_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
