/*
 * Actors: spawn/self/exit reasons, kill, pids that never reach a later actor
 * in the same slot, registered names, 1,000,000 short-lived actors with a
 * bounded table, small states kept in the table (tp_spawn_inline),
 * tp_run waiting for the whole tree (tokio::run semantics),
 * exit status, bad input that yields a clear TP_E* code and disturbs
 * nothing else, and no allocation left behind by threads outside the
 * runtime that sent messages and exited.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "tp_test.h"
#include "actors/actor.h"    /* a slot's generation, for the wrap test */
#include "runtime/runtime.h" /* its table */

enum { TAG_GO = 1, TAG_CONT, TAG_DATA, TAG_FIN, TAG_READY };

static atomic_long ended; /* state_free calls */
static void count_end(void *state) { atomic_fetch_add(&ended, 1); }

static int quit_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* ------------------------------------------------- spawn, self, reasons */

enum {
    K_NORMAL,
    K_SHUTDOWN,
    K_ERROR,
    K_RETURN,
    K_OVERRIDE,
    K_LONG,
    K_KILLED,
    K_N
};

typedef struct child_rec {
    int kind;
    tp_pid self, spawned;
    tp_ref mon;
    int downs;
    tp_reason why;
    char text[TP_REASON_TEXT_MAX + 2];
    size_t text_len;
} child_rec;

static child_rec kids[K_N];

static int reason_child(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    child_rec *c = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        c->self = tp_self(ctx);
        return TP_HANDLED;
    }
    if (tp_msg_tag(msg) != TAG_GO)
        return TP_HANDLED;
    char text[400]; /* on the stack: tp_exit must copy it */
    switch (c->kind) {
    case K_NORMAL: tp_exit(ctx, TP_REASON_NORMAL); break;
    case K_SHUTDOWN: tp_exit(ctx, TP_REASON_SHUTDOWN); break;
    case K_ERROR:
        strcpy(text, "boom");
        tp_exit(ctx, TP_REASON_ERROR(42, text));
        memset(text, 'X', sizeof text);
        break;
    case K_RETURN: return TP_ENOENT;
    case K_OVERRIDE:
        tp_exit(ctx, TP_REASON_ERROR(1, "first"));
        tp_exit(ctx, TP_REASON_NORMAL); /* the later call wins */
        break;
    case K_LONG:
        memset(text, 'a', sizeof text - 1);
        text[sizeof text - 1] = '\0';
        tp_exit(ctx, TP_REASON_ERROR(7, text));
        break;
    }
    return TP_HANDLED;
}

static int reasons_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int *downs = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        tp_spawn_opts o = {.state_free = count_end};
        for (int k = 0; k < K_N; k++) {
            kids[k].kind = k;
            EXPECT_EQ(tp_spawn(ctx, reason_child, &kids[k], &o,
                               &kids[k].spawned),
                      0);
            EXPECT_EQ(tp_monitor(ctx, kids[k].spawned, &kids[k].mon), 0);
            if (k == K_KILLED) /* exit(Pid, kill) */
                EXPECT_EQ(tp_kill(ctx, kids[k].spawned), 0);
            else
                EXPECT_EQ(tp_send(ctx, kids[k].spawned, TAG_GO, NULL, 0), 0);
        }
    } else if (tp_msg_tag(msg) == TP_TAG_DOWN) {
        for (int k = 0; k < K_N; k++) {
            if (tp_msg_ref(msg) != kids[k].mon)
                continue;
            child_rec *c = &kids[k];
            c->downs++;
            EXPECT_EQ(tp_msg_from(msg), c->spawned);
            EXPECT_EQ(tp_msg_reason(msg, &c->why), 0);
            if (c->why.text) {
                c->text_len = strlen(c->why.text);
                snprintf(c->text, sizeof c->text, "%s", c->why.text);
            }
        }
        if (++*downs == K_N)
            tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* Erlang exit(Reason): normal, shutdown, {error, ...}; a behavior's
 * negative return is an error exit; the last tp_exit of a turn wins; the
 * reason text is copied and capped at TP_REASON_TEXT_MAX; exit(Pid, kill)
 * ends the target as killed. state_free runs once for each. */
static void test_spawn_self_and_exit_reasons(void **unused)
{
    static int downs;
    tpt_result r;
    downs = 0;
    memset(kids, 0, sizeof kids);
    atomic_store(&ended, 0);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, reasons_root, &downs, NULL, &r), 0);
    TPT_CHECK();
    for (int k = 0; k < K_N; k++) {
        assert_true(kids[k].spawned != TP_PID_NONE);
        assert_true(kids[k].self == kids[k].spawned);
        assert_int_equal(kids[k].downs, 1);
        for (int j = 0; j < k; j++)
            assert_true(kids[j].spawned != kids[k].spawned);
    }
    assert_int_equal(kids[K_NORMAL].why.kind, TP_EXIT_NORMAL);
    assert_int_equal(kids[K_SHUTDOWN].why.kind, TP_EXIT_SHUTDOWN);
    assert_int_equal(kids[K_ERROR].why.kind, TP_EXIT_ERROR);
    assert_int_equal(kids[K_ERROR].why.code, 42);
    assert_string_equal(kids[K_ERROR].text, "boom");
    assert_int_equal(kids[K_RETURN].why.kind, TP_EXIT_ERROR);
    assert_int_equal(kids[K_RETURN].why.code, TP_ENOENT);
    assert_int_equal(kids[K_OVERRIDE].why.kind, TP_EXIT_NORMAL);
    assert_int_equal(kids[K_LONG].why.kind, TP_EXIT_ERROR);
    assert_int_equal(kids[K_LONG].text_len, TP_REASON_TEXT_MAX);
    assert_int_equal(kids[K_KILLED].why.kind, TP_EXIT_KILLED);
    assert_int_equal(atomic_load(&ended), K_N);
    assert_int_equal(r.stats.actors_alive, 0);
}

/* ------------------------------------------------------------- stale pid */

#define MAX_HOLDERS 200000

typedef struct stale {
    tp_pid old, match;
    tp_pid *holders;
    int nholders;
    uint64_t dl_before, dl_after;
    int send_rc;
} stale;

static atomic_int wrong_delivery;

static int holder(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TAG_DATA)
        atomic_fetch_add(&wrong_delivery, 1);
    else if (tp_msg_tag(msg) == TAG_FIN)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int exit_on_go(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TAG_GO)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int stale_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    stale *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_spawn(ctx, exit_on_go, NULL, NULL, &s->old), 0);
        EXPECT_EQ(tp_monitor(ctx, s->old, &(tp_ref){0}), 0);
        EXPECT_EQ(tp_send(ctx, s->old, TAG_GO, NULL, 0), 0);
        return TP_HANDLED;
    case TP_TAG_DOWN: /* the old actor has ended: fill slots until reuse */
    case TAG_CONT:
        for (int k = 0; k < 1000 && s->nholders < MAX_HOLDERS; k++) {
            tp_pid p;
            EXPECT_EQ(tp_spawn(ctx, holder, NULL, NULL, &p), 0);
            s->holders[s->nholders++] = p;
            if ((uint32_t)p == (uint32_t)s->old) {
                s->match = p;
                break;
            }
        }
        if (!s->match && s->nholders < MAX_HOLDERS) {
            EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_CONT, NULL, 0), 0);
            return TP_HANDLED;
        }
        break;
    default: return TP_HANDLED;
    }
    tp_stats st;
    tp_runtime_stats(tp_ctx_runtime(ctx), &st);
    s->dl_before = st.dead_letters;
    /* FIFO: if this reached the new actor, it would arrive before FIN */
    s->send_rc = tp_send_int(ctx, s->old, TAG_DATA, 1);
    tp_runtime_stats(tp_ctx_runtime(ctx), &st);
    s->dl_after = st.dead_letters;
    for (int i = 0; i < s->nholders; i++)
        EXPECT_EQ(tp_send(ctx, s->holders[i], TAG_FIN, NULL, 0), 0);
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* Pids carry a generation: a message to an ended actor is a counted dead
 * letter, never delivered to the later actor reusing its slot. */
static void test_stale_pid_never_reaches_new_actor(void **unused)
{
    static stale s;
    tpt_result r;
    memset(&s, 0, sizeof s);
    s.holders = calloc(MAX_HOLDERS, sizeof *s.holders);
    atomic_store(&wrong_delivery, 0);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, stale_root, &s, NULL, &r), 0);
    free(s.holders);
    TPT_CHECK();
    assert_true(s.match != TP_PID_NONE); /* the slot was reused */
    assert_true(s.match != s.old);
    assert_int_equal(s.send_rc, 0); /* not an error for the sender */
    assert_true(s.dl_after == s.dl_before + 1);
    assert_int_equal(atomic_load(&wrong_delivery), 0);
    assert_true(r.stats.dead_letters >= 1);
}

/* -------------------------------------------------------- registered names */

typedef struct names {
    tp_pid worker;
    int steps;
} names;

static int named_child(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    char long_name[80];
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_register(ctx, "root"), TP_EEXIST); /* taken */
        memset(long_name, 'n', 64);
        long_name[64] = '\0'; /* 64 bytes: one too many */
        EXPECT(tp_register(ctx, long_name) < 0);
        EXPECT(tp_register(ctx, NULL) < 0);
        EXPECT_EQ(tp_register(ctx, "worker"), 0);
        EXPECT_EQ(tp_send(ctx, tp_whereis(tp_ctx_runtime(ctx), "root"),
                          TAG_READY, NULL, 0),
                  0);
    } else if (tp_msg_tag(msg) == TAG_GO) {
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int names_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    names *n = state;
    tp_runtime *rt = tp_ctx_runtime(ctx);
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_register(ctx, "root"), 0);
        EXPECT_EQ(tp_whereis(rt, "root"), tp_self(ctx));
        EXPECT_EQ(tp_register(ctx, "other"), TP_EEXIST); /* has a name */
        EXPECT_EQ(tp_unregister(ctx, "nope"), TP_ENOENT);
        EXPECT_EQ(tp_whereis(rt, "missing"), TP_PID_NONE);
        EXPECT_EQ(tp_whereis(rt, NULL), TP_PID_NONE);
        EXPECT_EQ(tp_spawn(ctx, named_child, NULL, NULL, &n->worker), 0);
        EXPECT_EQ(tp_monitor(ctx, n->worker, &(tp_ref){0}), 0);
        n->steps++;
        break;
    case TAG_READY:
        EXPECT_EQ(tp_whereis(rt, "worker"), n->worker);
        EXPECT_EQ(tp_unregister(ctx, "worker"), TP_ENOENT); /* not ours */
        EXPECT_EQ(tp_send(ctx, n->worker, TAG_GO, NULL, 0), 0);
        n->steps++;
        break;
    case TP_TAG_DOWN: /* the worker's name was released when it ended */
        EXPECT_EQ(tp_whereis(rt, "worker"), TP_PID_NONE);
        EXPECT_EQ(tp_unregister(ctx, "root"), 0);
        EXPECT_EQ(tp_whereis(rt, "root"), TP_PID_NONE);
        EXPECT_EQ(tp_register(ctx, "worker"), 0);
        EXPECT_EQ(tp_whereis(rt, "worker"), tp_self(ctx));
        n->steps++;
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* A slot's generations wrap after 2^23 actors: the slot is then retired,
 * so a pid of its first actor never names a later one. The slot is set
 * two generations short of the wrap instead of 8 million spawns; one
 * thread, so the slot a death frees is the next one taken. Before, the
 * actor after the wrap got exactly the first actor's pid. */
typedef struct wrap {
    tp_pid first, last, after;
    int phase;
} wrap;

static int wrap_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    wrap *w = state;
    if (tp_msg_tag(msg) != TP_TAG_START && tp_msg_tag(msg) != TP_TAG_DOWN)
        return TP_HANDLED;
    tp_runtime *rt = tp_ctx_runtime(ctx);
    switch (w->phase++) {
    case 0: /* the slot's first actor */
        EXPECT_EQ(tp_spawn(ctx, exit_on_go, NULL, NULL, &w->first), 0);
        break;
    case 1: { /* its last generation before the wrap */
        tpi_actor *a = tpi_table_at(rt->table, tpi_pid_index(w->first));
        tpi_slot_set_gen(a, TPI_GEN_MASK - 1);
        EXPECT_EQ(tp_spawn(ctx, exit_on_go, NULL, NULL, &w->last), 0);
        break;
    }
    default: /* after the wrap */
        EXPECT_EQ(tp_spawn(ctx, exit_on_go, NULL, NULL, &w->after), 0);
        EXPECT_EQ(tp_send(ctx, w->after, TAG_GO, NULL, 0), 0);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    tp_pid p = w->phase == 1 ? w->first : w->last;
    EXPECT_EQ(tp_monitor(ctx, p, NULL), 0);
    EXPECT_EQ(tp_send(ctx, p, TAG_GO, NULL, 0), 0);
    return TP_HANDLED;
}

static void test_generation_wrap_retires_slot(void **unused)
{
    (void)unused;
    static wrap w;
    memset(&w, 0, sizeof w);
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = 1;
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, wrap_root, &w, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal((uint32_t)w.last, (uint32_t)w.first); /* same slot */
    assert_int_equal(w.last >> 32, TPI_GEN_MASK);
    assert_true(w.after != TP_PID_NONE);
    assert_true(w.after != w.first);
}

/* Erlang register/whereis/unregister; a name dies with its actor. */
static void test_registered_names(void **unused)
{
    static names n;
    memset(&n, 0, sizeof n);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, names_root, &n, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(n.steps, 3);
}

/* ------------------------------------------------------ a million actors */

#define MILLION 1000000
#define WAVE 1000
/* Waves overlap when several threads run them (a spawn never waits), so
 * the bound is generous; reuse still keeps it far below a million. */
#define SLOT_BOUND (256 * 1024)

typedef struct spawner {
    long spawned;
    uint64_t peak_slots, peak_alive;
} spawner;

static int exit_at_start(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int spawner_b(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    spawner *s = state;
    tp_spawn_opts o = {.state_free = count_end};
    tp_stats st;
    for (int k = 0; k < WAVE && s->spawned < MILLION; k++, s->spawned++)
        EXPECT_EQ(tp_spawn(ctx, exit_at_start, &ended, &o, NULL), 0);
    tp_runtime_stats(tp_ctx_runtime(ctx), &st);
    if (st.slots > s->peak_slots)
        s->peak_slots = st.slots;
    if (st.actors_alive > s->peak_alive)
        s->peak_alive = st.actors_alive;
    if (s->spawned < MILLION)
        EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_CONT, NULL, 0), 0);
    else
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* Lightweight processes: 1,000,000 actors spawned in waves of 1000 and
 * ended. The table reuses slots (stays bounded), nothing stays alive, and
 * every state_free ran (ASan builds check that nothing leaks). */
static void test_million_actors(void **unused)
{
    static spawner s;
    tpt_result r;
    memset(&s, 0, sizeof s);
    atomic_store(&ended, 0);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, spawner_b, &s, NULL, &r), 0);
    TPT_CHECK();
    print_message("1M actors: %.0f ms, peak slots %llu, peak alive %llu, "
                  "final slots %llu\n",
                  r.elapsed_ms, (unsigned long long)s.peak_slots,
                  (unsigned long long)s.peak_alive,
                  (unsigned long long)r.stats.slots);
    assert_int_equal(atomic_load(&ended), MILLION);
    assert_int_equal(r.stats.actors_alive, 0);
    assert_int_equal(r.stats.actors_spawned, MILLION + 1);
    assert_int_equal(r.stats.actors_exited, MILLION + 1);
    assert_true(s.peak_slots <= SLOT_BOUND);
    assert_true(r.stats.slots <= SLOT_BOUND);
}

/* ------------------------------------------------------ inline state */

#define INL_WAVES 5
#define INL_EACH 1000

typedef struct inl_state {
    tp_pid parent;
    int64_t id;
    int64_t got;   /* TAG_DATA messages seen */
    char name[16]; /* a copy of the spawner's text */
} inl_state;

static struct {
    int wave, live;
    int64_t sum;          /* of the children's answers */
    atomic_long bad;      /* a child saw a state it should not have */
    atomic_long freed_ok; /* state_free calls with the slot's pointer */
} INL;

static void inl_free(void *state)
{
    inl_state *st = state;
    /* Called once, before the memory goes back with the slot. */
    if (st->got == 2 && (uintptr_t)st % 16 == 0)
        atomic_fetch_add(&INL.freed_ok, 1);
}

static int inl_child(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    inl_state *st = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        if (st->parent != tp_msg_from(msg) || st->got != 0 ||
            strcmp(st->name, "inline") != 0 || (uintptr_t)st % 16 != 0)
            atomic_fetch_add(&INL.bad, 1);
        return TP_HANDLED;
    case TAG_DATA: /* twice: the state is the actor's own, across calls */
        if (++st->got == 2) {
            EXPECT_EQ(tp_send_int(ctx, st->parent, TAG_FIN, st->id), 0);
            tp_exit(ctx, TP_REASON_NORMAL);
        }
        return TP_HANDLED;
    default: return TP_HANDLED;
    }
}

static int inl_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TAG_FIN) {
        int64_t v;
        EXPECT_EQ(tp_msg_int(msg, &v), 0);
        INL.sum += v;
        if (--INL.live > 0)
            return TP_HANDLED;
    } else if (tp_msg_tag(msg) != TP_TAG_START) {
        return TP_HANDLED;
    }
    if (INL.wave == INL_WAVES) {
        tp_exit(ctx, TP_REASON_NORMAL);
        return TP_HANDLED;
    }
    /* A wave of children, spawned after the last one ended: their slots,
     * and so their state blocks, are the last wave's, reused. */
    tp_spawn_opts o = {.state_free = inl_free};
    inl_state init = {.parent = tp_self(ctx)};
    strcpy(init.name, "inline");
    for (int i = 0; i < INL_EACH; i++) {
        tp_pid p;
        init.id = (int64_t)INL.wave * INL_EACH + i;
        EXPECT_EQ(tp_spawn_inline(ctx, inl_child, &init, sizeof init, &o, &p),
                  0);
        EXPECT_EQ(tp_send(ctx, p, TAG_DATA, NULL, 0), 0);
        EXPECT_EQ(tp_send(ctx, p, TAG_DATA, NULL, 0), 0);
    }
    INL.live = INL_EACH;
    INL.wave++;
    /* Bad sizes spawn nothing. */
    char big[TP_INLINE_STATE_MAX + 1] = {0};
    EXPECT_EQ(tp_spawn_inline(ctx, inl_child, big, sizeof big, NULL, NULL),
              TP_EINVAL);
    EXPECT_EQ(tp_spawn_inline(ctx, inl_child, NULL, 8, NULL, NULL), TP_EINVAL);
    return TP_HANDLED;
}

/* tp_spawn_inline: each child gets its own copy of the initial state in
 * its slot (aligned, private, kept across messages), state_free sees it
 * once at the end, and later waves reuse the slots and their blocks. */
static void test_spawn_inline_state(void **unused)
{
    tpt_result r;
    memset(&INL, 0, sizeof INL);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, inl_root, NULL, NULL, &r), 0);
    TPT_CHECK();
    int64_t n = (int64_t)INL_WAVES * INL_EACH;
    assert_int_equal(atomic_load(&INL.bad), 0);
    assert_int_equal(INL.sum, n * (n - 1) / 2);
    assert_int_equal(atomic_load(&INL.freed_ok), n);
    assert_int_equal(r.stats.actors_alive, 0);
    assert_true(r.stats.slots <= 2 * INL_EACH + 64);
    assert_int_equal(tp_spawn_inline(NULL, inl_child, NULL, 0, NULL, NULL),
                     TP_ESTATE);
}

/* --------------------------------------------------------- run waits */

#define TREE_DEPTH 4 /* 1 + 3 + 9 + 27 + 81 = 121 nodes */
#define TREE_NODES 121

static atomic_int tree_spawned;

static void node_free(void *state)
{
    free(state);
    atomic_fetch_add(&ended, 1);
}

static int tree_node(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int *n = state; /* n[0] depth, n[1] index among its level */
    if (tp_msg_tag(msg) == TAG_GO) {
        if (n[1] % 3 == 1)
            return TP_EPROTO; /* an error exit */
        tp_exit(ctx, TP_REASON_NORMAL);
        return TP_HANDLED;
    }
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    if (n[0] < TREE_DEPTH) {
        tp_spawn_opts o = {.state_free = node_free};
        for (int i = 0; i < 3; i++) {
            int *c = malloc(2 * sizeof *c);
            c[0] = n[0] + 1;
            c[1] = n[1] * 3 + i;
            EXPECT_EQ(tp_spawn(ctx, tree_node, c, &o, NULL), 0);
            atomic_fetch_add(&tree_spawned, 1);
        }
        tp_exit(ctx, TP_REASON_NORMAL); /* parents end before children */
        return TP_HANDLED;
    }
    switch (n[1] % 3) { /* leaves: timer then normal, timer then error, */
    case 0:             /* or an error at once */
    case 1:
        EXPECT_EQ(tp_send_after(ctx, 10u + 10u * (unsigned)(n[1] % 6), TAG_GO,
                                NULL, 0, &(tp_timer){0}),
                  0);
        return TP_HANDLED;
    default: tp_exit(ctx, TP_REASON_ERROR(3, "leaf failed")); return TP_HANDLED;
    }
}

/* tokio::run blocks until every spawned task, at any depth, terminated:
 * a tree whose parents end first and whose leaves end later by timers or
 * errors; tp_run returns only after the last one (timers up to 50 ms). */
static void test_run_waits_for_whole_tree(void **unused)
{
    tpt_result r;
    int *root = malloc(2 * sizeof *root);
    root[0] = root[1] = 0;
    atomic_store(&ended, 0);
    atomic_store(&tree_spawned, 0);
    tpt_reset();
    tp_spawn_opts o = {.state_free = node_free};
    assert_int_equal(tpt_run(NULL, tree_node, root, &o, &r), 0);
    TPT_CHECK();
    assert_int_equal(atomic_load(&tree_spawned), TREE_NODES - 1);
    assert_int_equal(atomic_load(&ended), TREE_NODES);
    assert_true(r.elapsed_ms >= 50.0); /* the longest leaf timer */
    assert_int_equal(r.stats.actors_alive, 0);
    assert_int_equal(r.stats.actors_exited, TREE_NODES);
}

/* A run whose root ends at once (nothing spawned) returns at once. */
static void test_run_returns_at_once(void **unused)
{
    tpt_result r;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, quit_root, NULL, NULL, &r), 0);
    assert_true(r.elapsed_ms < 1000.0);
    assert_int_equal(r.stats.actors_spawned, 1);
    assert_int_equal(r.stats.actors_alive, 0);
}

/* -------------------------------------------------------- exit status */

static int ending_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    switch ((int)(intptr_t)state) {
    case 0: tp_exit(ctx, TP_REASON_NORMAL); break;
    case 1: tp_exit(ctx, TP_REASON_SHUTDOWN); break;
    case 2: tp_exit(ctx, TP_REASON_ERROR(5, "bad root")); break;
    case 3: return TP_ENOMEM;
    case 4: tp_kill(ctx, tp_self(ctx)); break;
    }
    return TP_HANDLED;
}

/* Like a process exit code: 0 for normal/shutdown, 1 otherwise; the root's
 * reason is kept. A runtime runs once. */
static void test_run_status_and_root_reason(void **unused)
{
    static const struct {
        int status;
        tp_exit_kind kind;
        int code;
    } want[] = {{0, TP_EXIT_NORMAL, 0},
                {0, TP_EXIT_SHUTDOWN, 0},
                {1, TP_EXIT_ERROR, 5},
                {1, TP_EXIT_ERROR, TP_ENOMEM},
                {1, TP_EXIT_KILLED, 0}};
    for (int i = 0; i < 5; i++) {
        tpt_result r;
        tpt_reset();
        assert_int_equal(tpt_run(NULL, ending_root, (void *)(intptr_t)i, NULL,
                                 &r),
                         want[i].status);
        assert_int_equal(r.reason.kind, want[i].kind);
        if (want[i].kind == TP_EXIT_ERROR)
            assert_int_equal(r.reason.code, want[i].code);
        if (i == 2)
            assert_string_equal(r.reason_text, "bad root");
    }
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    assert_int_equal(tp_run(rt, quit_root, NULL, NULL), 0);
    atomic_store(&ended, 0);
    tp_spawn_opts o = {.state_free = count_end};
    assert_true(tp_run(rt, quit_root, &ended, &o) < 0); /* runs once */
    assert_int_equal(atomic_load(&ended), 0);           /* state not taken */
    tp_runtime_free(rt);
}

/* --------------------------------------------------------------- bad input */

typedef struct bad {
    int next;  /* the receiver's next expected value */
    int extra; /* anything it did not expect */
    int unissued_rc;
} bad;

static int good_receiver(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    bad *b = state;
    int64_t v;
    if (tp_msg_tag(msg) == TP_TAG_START)
        return TP_HANDLED;
    if (tp_msg_tag(msg) != TAG_DATA || tp_msg_int(msg, &v) != 0 ||
        v != b->next) {
        b->extra++;
        return TP_HANDLED;
    }
    if (++b->next == 6)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int bad_input_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    bad *b = state;
    tp_pid p;
    static char big[2000];
    void *buf;
    size_t len;
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    b->next = 1;
    EXPECT_EQ(tp_spawn(ctx, good_receiver, b, NULL, &p), 0);
    EXPECT_EQ(tp_send_int(ctx, p, TAG_DATA, 1), 0);
    EXPECT_EQ(tp_send(ctx, p, TAG_DATA, "\xc1", 1), TP_EINVAL);
    EXPECT_EQ(tp_send(ctx, p, TAG_DATA, "\x92\x01", 2), TP_EINVAL);
    EXPECT_EQ(tp_send_int(ctx, p, TAG_DATA, 2), 0);
    EXPECT_EQ(tp_send(ctx, p, TAG_DATA, "\x01\x02", 2), TP_EINVAL);
    EXPECT_EQ(tp_send(ctx, p, TAG_DATA, "\xdd\xff\x00\x00\x00", 5), TP_EINVAL);
    EXPECT_EQ(tp_send(ctx, p, TAG_DATA, NULL, 5), TP_EINVAL);
    EXPECT_EQ(tp_send_int(ctx, p, TAG_DATA, 3), 0);
    EXPECT_EQ(tp_send_int(ctx, p, -1, 0), TP_EINVAL);
    EXPECT_EQ(tp_send_int(ctx, p, TP_TAG_REPLY, 0), TP_EINVAL);
    EXPECT_EQ(tp_send_int(ctx, TP_PID_NONE, TAG_DATA, 0), TP_EINVAL);
    EXPECT_EQ(tp_packf(&buf, &len, "y", big, sizeof big), 0);
    EXPECT_EQ(tp_send(ctx, p, TAG_DATA, buf, len), TP_E2BIG);      /* > 1024 */
    EXPECT_EQ(tp_send_move(ctx, p, TAG_DATA, buf, len), TP_E2BIG); /* freed */
    EXPECT_EQ(tp_send_int(ctx, p, TAG_DATA, 4), 0);
    /* a pid never issued: slot far beyond the table */
    b->unissued_rc =
        tp_send_int(ctx, ((tp_pid)77 << 32) | 0x7ffffff0u, TAG_DATA, 0);
    EXPECT(tp_spawn(ctx, NULL, NULL, NULL, NULL) == TP_EINVAL);
    EXPECT(tp_sendf(ctx, p, TAG_DATA, "[i", 1) < 0);
    EXPECT(tp_monitor(ctx, TP_PID_NONE, &(tp_ref){0}) == TP_EINVAL);
    EXPECT(tp_link(ctx, TP_PID_NONE) == TP_EINVAL);
    EXPECT_EQ(tp_send_int(ctx, p, TAG_DATA, 5), 0);
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* Bad pids, tags, payloads (not exactly one well-formed msgpack object) and
 * sizes give a clear TP_E* code at the call; the good messages sent around
 * them still arrive, in order, and nothing else does. */
static void test_bad_input_in_actor(void **unused)
{
    static bad b;
    tpt_result r;
    tp_config cfg;
    memset(&b, 0, sizeof b);
    tp_config_init(&cfg);
    assert_int_equal(cfg.mailbox_capacity, TP_MAILBOX_DEFAULT);
    cfg.max_payload = 1024;
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, bad_input_root, &b, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(b.next, 6);
    assert_int_equal(b.extra, 0);
    assert_true(b.unissued_rc == 0 || b.unissued_rc == TP_EINVAL);
    assert_int_equal(r.stats.dead_letters, b.unissued_rc == 0 ? 1 : 0);
}

/* Pids never handed out (a free slot's next generations, a slot of a
 * chunk that no spawn reached yet, even generations) are dead pids like
 * any other: sends are dead letters, links and monitors answer noproc,
 * signals go nowhere. Before the generation parity such a pid reached a
 * slot being set up or never set up, and crashed the sender. */
typedef struct forged {
    tp_pid child;
    int downs, noproc_downs, noproc_exits, sends;
} forged;

static int ends_at_once(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static int forged_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    forged *f = state;
    tp_reason r;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        tp_trap_exit(ctx, true);
        EXPECT_EQ(tp_spawn(ctx, ends_at_once, NULL, NULL, &f->child), 0);
        EXPECT_EQ(tp_monitor(ctx, f->child, &(tp_ref){0}), 0);
        return TP_HANDLED;
    case TP_TAG_DOWN:
        EXPECT_EQ(tp_msg_reason(msg, &r), 0);
        if (f->downs++ > 0) { /* one of the forged monitors below */
            f->noproc_downs += r.kind == TP_EXIT_NOPROC;
            break;
        }
        /* The child's slot is free now; its index + 49 was never used. */
        uint32_t gen = (uint32_t)(f->child >> 32), idx = (uint32_t)f->child;
        tp_pid fake[] = {
            ((tp_pid)(gen + 1) << 32) | idx, /* free slot, even gen */
            ((tp_pid)(gen + 2) << 32) | idx, /* its next spawn's pid */
            ((tp_pid)1 << 32) | (idx + 49),  /* slot never used */
            ((tp_pid)0 << 32) | (idx + 49),  /* generation 0 */
        };
        for (size_t i = 0; i < sizeof fake / sizeof fake[0]; i++) {
            EXPECT_EQ(tp_send_int(ctx, fake[i], TAG_DATA, 1), 0);
            f->sends++;
            EXPECT_EQ(tp_link(ctx, fake[i]), 0);
            EXPECT_EQ(tp_monitor(ctx, fake[i], &(tp_ref){0}), 0);
            EXPECT_EQ(tp_exit_signal(ctx, fake[i], TP_REASON_NORMAL), 0);
            EXPECT_EQ(tp_kill(ctx, fake[i]), 0);
        }
        break;
    case TP_TAG_EXIT:
        EXPECT_EQ(tp_msg_reason(msg, &r), 0);
        f->noproc_exits += r.kind == TP_EXIT_NOPROC;
        break;
    }
    if (f->noproc_downs == 4 && f->noproc_exits == 4)
        return tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static void test_forged_pids(void **unused)
{
    static forged f;
    tpt_result r;
    memset(&f, 0, sizeof f);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, forged_root, &f, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(f.noproc_downs, 4);
    assert_int_equal(f.noproc_exits, 4);
    assert_int_equal(r.stats.dead_letters, (uint64_t)f.sends);
}

static int immortal(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    return TP_HANDLED; /* never exits by itself */
}

/* The runtime handle refuses NULL and invalid arguments and stays usable. */
static void test_bad_input_runtime(void **unused)
{
    tp_runtime *rt = NULL;
    tp_pid p;
    assert_int_equal(tp_runtime_new(NULL, NULL), TP_EINVAL);
    assert_int_equal(tp_run(NULL, quit_root, NULL, NULL), TP_EINVAL);
    assert_int_equal(tp_runtime_spawn(NULL, quit_root, NULL, NULL, &p),
                     TP_EINVAL);
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    assert_int_equal(tp_runtime_spawn(rt, NULL, NULL, NULL, &p), TP_EINVAL);
    tp_spawn_opts link = {.flags = TP_SPAWN_LINK}; /* no spawner to link */
    assert_int_equal(tp_runtime_spawn(rt, quit_root, NULL, &link, &p),
                     TP_EINVAL);
    assert_int_equal(tp_runtime_send(rt, TP_PID_NONE, 1, NULL, 0), TP_EINVAL);
    assert_int_equal(tp_runtime_try_send(rt, TP_PID_NONE, 1, NULL, 0),
                     TP_EINVAL);
    assert_int_equal(tp_runtime_spawn(rt, immortal, NULL, NULL, &p), 0);
    assert_int_equal(tp_runtime_send(rt, p, -7, NULL, 0), TP_EINVAL);
    assert_int_equal(tp_runtime_send(rt, p, 1, "\xc1", 1), TP_EINVAL);
    assert_int_equal(tp_runtime_try_send(rt, p, 1, "\x92\x01", 2), TP_EINVAL);
    assert_int_equal(tp_runtime_send(rt, p, 1, NULL, 3), TP_EINVAL);
    assert_int_equal(tp_run(rt, NULL, NULL, NULL), TP_EINVAL);
    assert_int_equal(tp_whereis(rt, NULL), TP_PID_NONE);
    /* an actor spawned but never run is ended by tp_runtime_free */
    atomic_store(&ended, 0);
    tp_spawn_opts o = {.state_free = count_end};
    assert_int_equal(tp_runtime_spawn(rt, immortal, &ended, &o, &p), 0);
    tp_runtime_free(rt);
    assert_int_equal(atomic_load(&ended), 1);
    /* issue 5: at most 64 scheduler threads; no spawn after the run */
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = 65;
    assert_int_equal(tp_runtime_new(&cfg, &rt), TP_EINVAL);
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    assert_int_equal(tp_run(rt, quit_root, NULL, NULL), 0);
    assert_int_equal(tp_runtime_spawn(rt, immortal, NULL, NULL, &p), TP_ESTATE);
    tp_runtime_free(rt);
}

/* ---------------------------------------------- foreign threads, no leak */

#define LK_THREADS 32
#define LK_WAVE 8    /* threads at a time */
#define LK_MSGS 1000 /* messages per thread */

/* A counting allocator hook: blocks allocated through it, not freed yet. */
static _Atomic long lk_live;

static void *lk_alloc(size_t n)
{
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&lk_live, 1);
    return p;
}

static void *lk_realloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&lk_live, 1);
    return q;
}

static void lk_free(void *p)
{
    if (p)
        atomic_fetch_sub(&lk_live, 1);
    free(p);
}

static struct {
    tp_runtime *rt;
    tp_pid to;
    pthread_t coord;
    int coord_rc;
    atomic_int send_rc; /* the first failure of any sender */
    long got;
} LK;

static void *lk_sender(void *arg)
{
    int idx = (int)(intptr_t)arg;
    for (int i = 0; i < LK_MSGS; i++) {
        char b[1] = {(char)(idx & 0x7f)}; /* one positive fixint */
        int rc = tp_runtime_send(LK.rt, LK.to, TAG_DATA, b, 1);
        if (rc) {
            int zero = 0;
            atomic_compare_exchange_strong(&LK.send_rc, &zero, rc);
            break;
        }
    }
    return NULL;
}

/* Short-lived senders, a wave at a time: the later ones start while the
 * receiver's thread has recycled the earlier ones' message nodes. */
static void *lk_coordinator(void *arg)
{
    (void)arg;
    for (int w = 0; w < LK_THREADS; w += LK_WAVE) {
        pthread_t th[LK_WAVE];
        for (int i = 0; i < LK_WAVE; i++)
            if (pthread_create(&th[i], NULL, lk_sender,
                               (void *)(intptr_t)(w + i)) != 0) {
                LK.coord_rc = -1;
                return NULL;
            }
        for (int i = 0; i < LK_WAVE; i++)
            pthread_join(th[i], NULL);
    }
    return NULL;
}

static int lk_receiver(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    if (tp_msg_tag(msg) == TAG_DATA && ++LK.got == LK_THREADS * LK_MSGS)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int lk_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    LK.rt = tp_ctx_runtime(ctx);
    EXPECT_EQ(tp_spawn(ctx, lk_receiver, NULL, NULL, &LK.to), 0);
    EXPECT_EQ(pthread_create(&LK.coord, NULL, lk_coordinator, NULL), 0);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

/* Every block allocated through the allocator hook is given back by
 * tp_runtime_free, also when 32 short-lived threads outside the runtime
 * sent 1,000 messages each: no thread that exits keeps message nodes. */
static void test_foreign_senders_leak_nothing(void **unused)
{
    (void)unused;
    memset(&LK, 0, sizeof LK);
    tpt_reset();
    atomic_store(&lk_live, 0);
    tp_set_allocator(lk_alloc, lk_realloc, lk_free);
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    tpt_watchdog(1);
    int status = tp_run(rt, lk_root, NULL, NULL);
    pthread_join(LK.coord, NULL);
    tpt_watchdog(0);
    long during = atomic_load(&lk_live);
    tp_runtime_free(rt);
    long outstanding = atomic_load(&lk_live);
    tp_set_allocator(NULL, NULL, NULL);
    print_message("foreign senders: %ld blocks live before tp_runtime_free, "
                  "%ld after\n",
                  during, outstanding);
    TPT_CHECK();
    assert_int_equal(status, 0);
    assert_int_equal(LK.coord_rc, 0);
    assert_int_equal(atomic_load(&LK.send_rc), 0);
    assert_int_equal(LK.got, LK_THREADS * LK_MSGS);
    assert_int_equal(outstanding, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawn_self_and_exit_reasons),
        cmocka_unit_test(test_stale_pid_never_reaches_new_actor),
        cmocka_unit_test(test_registered_names),
        cmocka_unit_test(test_million_actors),
        cmocka_unit_test(test_spawn_inline_state),
        cmocka_unit_test(test_run_waits_for_whole_tree),
        cmocka_unit_test(test_run_returns_at_once),
        cmocka_unit_test(test_run_status_and_root_reason),
        cmocka_unit_test(test_bad_input_in_actor),
        cmocka_unit_test(test_forged_pids),
        cmocka_unit_test(test_generation_wrap_retires_slot),
        cmocka_unit_test(test_bad_input_runtime),
        cmocka_unit_test(test_foreign_senders_leak_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
