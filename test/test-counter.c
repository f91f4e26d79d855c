/*
 * Counters: exact totals from many fibers and threads at once, for both kinds; cache-line layout;
 * the sharded counter's slots, one per worker and others for threads outside the runtime.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

#include "core/internal.h"
#include "helpers.h"
#include "par/counter.h"
#include "runner.h"

TEST(a_counter_is_one_cache_line)
{
    ASSERT_EQ(sizeof(weft_counter_t), 64);
    ASSERT_EQ(_Alignof(weft_counter_t), 64);
    weft_counter_t pair[2] = {WEFT_COUNTER_INIT, WEFT_COUNTER_INIT};
    ASSERT_EQ((uintptr_t)&pair[0] % 64, 0);
    ASSERT_EQ((uintptr_t)&pair[1] - (uintptr_t)&pair[0], 64);
    weft_counter_t *heap = aligned_alloc(64, sizeof *heap);
    ASSERT(heap);
    weft_counter_store(heap, 0);
    ASSERT_EQ(weft_counter_load(heap), 0);
    free(heap);
}

TEST(counter_add_load_store)
{
    static weft_counter_t c = WEFT_COUNTER_INIT;
    ASSERT_EQ(weft_counter_load(&c), 0);
    ASSERT_EQ(weft_counter_add(&c, 5), 5);
    ASSERT_EQ(weft_counter_add(&c, -7), -2);
    ASSERT_EQ(weft_counter_load(&c), -2);
    weft_counter_store(&c, INT64_MAX);
    ASSERT_EQ(weft_counter_load(&c), INT64_MAX);
    ASSERT_EQ(weft_counter_add(&c, 1), INT64_MIN); /* wraps, as C11 atomics do */
    weft_counter_store(&c, 0);
    ASSERT_EQ(weft_counter_add(&c, 0), 0);
}

/* ------------------------------------------------------------------------------------------------ */
/* Many adders of every kind                                                                         */

enum { FIBERS = 200, THREADS = 3, PTHREADS = 3, ADDS = 20000 };

typedef struct {
    weft_counter_t *plain;
    weft_sharded_counter_t *sharded;
    int adds;
} adders_t;

static void *add_many(void *arg)
{
    adders_t *a = arg;
    for (int i = 0; i < a->adds; i++) {
        weft_counter_add(a->plain, 1);
        weft_sharded_counter_add(a->sharded, 3);
        if (i % 1000 == 999)
            weft_yield(); /* fibers interleave on a worker */
    }
    weft_counter_add(a->plain, -1);
    weft_sharded_counter_add(a->sharded, -1);
    return NULL;
}

static void *pthread_add_many(void *arg)
{
    return add_many(arg);
}

TEST(exact_totals_from_fibers_and_threads)
{
    start_workers(2);
    static weft_counter_t plain = WEFT_COUNTER_INIT;
    weft_sharded_counter_t *sharded;
    ASSERT_OK(weft_sharded_counter_new(&sharded));
    ASSERT_EQ(weft_sharded_counter_load(sharded), 0);
    adders_t a = {&plain, sharded, ADDS};
    weft_fiber_t f[FIBERS], t[THREADS];
    pthread_t p[PTHREADS];
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, add_many, &a));
    for (int i = 0; i < THREADS; i++)
        ASSERT_OK(weft_thread_spawn(&t[i], NULL, add_many, &a));
    for (int i = 0; i < PTHREADS; i++)
        ASSERT_EQ(pthread_create(&p[i], NULL, pthread_add_many, &a), 0);
    add_many(&a); /* and this thread */
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < THREADS; i++)
        ASSERT_OK(weft_join(t[i], NULL));
    for (int i = 0; i < PTHREADS; i++)
        ASSERT_EQ(pthread_join(p[i], NULL), 0);
    int64_t adders = FIBERS + THREADS + PTHREADS + 1;
    ASSERT_EQ(weft_counter_load(&plain), adders * (ADDS - 1));
    ASSERT_EQ(weft_sharded_counter_load(sharded), adders * (3 * ADDS - 1));
    weft_sharded_counter_free(sharded);
    ASSERT_OK(weft_shutdown());
}

/* Loads while the adds go on: never below the sum before nor above the sum after (positive adds). */
typedef struct {
    weft_sharded_counter_t *c;
    atomic_int stop;
    int64_t last;
    atomic_int bad;
} watch_t;

static void *watcher(void *arg)
{
    watch_t *w = arg;
    int64_t prev = 0;
    while (!atomic_load(&w->stop)) {
        int64_t v = weft_sharded_counter_load(w->c);
        if (v < prev || v > (int64_t)(FIBERS + 1) * ADDS * 2)
            atomic_store(&w->bad, 1);
        prev = v;
        weft_yield();
    }
    return NULL;
}

static void *add_twos(void *arg)
{
    weft_sharded_counter_t *c = arg;
    for (int i = 0; i < ADDS; i++)
        weft_sharded_counter_add(c, 2);
    return NULL;
}

TEST(a_load_while_adds_go_on_sees_a_value_between)
{
    /* each load reads every slot once, and no slot goes down: loads never go down either */
    start_workers(2);
    watch_t w = {0};
    ASSERT_OK(weft_sharded_counter_new(&w.c));
    weft_fiber_t obs, f[FIBERS];
    ASSERT_OK(weft_thread_spawn(&obs, NULL, watcher, &w));
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, add_twos, w.c));
    add_twos(w.c);
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    atomic_store(&w.stop, 1);
    ASSERT_OK(weft_join(obs, NULL));
    ASSERT_EQ(atomic_load(&w.bad), 0);
    ASSERT_EQ(weft_sharded_counter_load(w.c), (int64_t)(FIBERS + 1) * ADDS * 2);
    weft_sharded_counter_free(w.c);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Slots                                                                                             */

TEST(sharded_slots_are_cache_lines_of_their_own)
{
    weft_sharded_counter_t *c;
    ASSERT_OK(weft_sharded_counter_new(&c));
    ASSERT_EQ((uintptr_t)c % 64, 0);
    ASSERT_EQ((uintptr_t)&c->nworker / 64, (uintptr_t)c / 64); /* its own line, before every slot */
    uintptr_t prev = (uintptr_t)&c->nworker;
    for (int i = 0; i < WEFT__SHARD_OTHER; i++) {
        ASSERT_EQ((uintptr_t)&c->other[i].v % 64, 0);
        ASSERT_EQ((uintptr_t)&c->other[i].v - prev, 64);
        prev = (uintptr_t)&c->other[i].v;
    }
    for (int i = 0; i < WEFT__MAX_WORKERS; i++) {
        ASSERT_EQ((uintptr_t)&c->worker[i].v % 64, 0);
        ASSERT_EQ((uintptr_t)&c->worker[i].v - prev, 64);
        prev = (uintptr_t)&c->worker[i].v;
    }
    weft_sharded_counter_free(c);
    weft_sharded_counter_free(NULL);
    ASSERT_ERR(weft_sharded_counter_new(NULL), -EINVAL);
}

enum { WORKERS = 3, PER = 300 };

typedef struct {
    weft_sharded_counter_t *c;
    atomic_long per_worker[WORKERS]; /* what the fibers added, by the worker they ran on */
    atomic_int bad;
} slots_t;

static void *add_on_worker(void *arg)
{
    slots_t *s = arg;
    for (int round = 0; round < 20; round++) {
        int w = weft__worker_index();
        _Atomic int64_t *slot = weft__sharded_counter_slot(s->c);
        if (w < 0 || w >= WORKERS || slot != &s->c->worker[w].v)
            atomic_store(&s->bad, 1);
        else
            atomic_fetch_add(&s->per_worker[w], 5);
        weft_sharded_counter_add(s->c, 5); /* no yield in between: still on worker w */
        weft_yield();
    }
    return NULL;
}

static void *other_slot_of(void *arg)
{
    return (void *)weft__sharded_counter_slot(arg);
}

TEST(each_worker_adds_to_its_own_slot_and_threads_to_the_others)
{
    start_workers(WORKERS);
    static slots_t s;
    ASSERT_OK(weft_sharded_counter_new(&s.c));
    weft_fiber_t f[PER];
    for (int i = 0; i < PER; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, add_on_worker, &s));
    for (int i = 0; i < PER; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_EQ(atomic_load(&s.bad), 0);
    int64_t total = 0;
    for (int w = 0; w < WORKERS; w++) {
        /* every add a fiber made on worker w is in w's slot, and nothing else is */
        ASSERT_EQ(atomic_load(&s.c->worker[w].v), atomic_load(&s.per_worker[w]));
        total += atomic_load(&s.per_worker[w]);
    }
    ASSERT_EQ(total, PER * 20 * 5);
    ASSERT_LE(atomic_load(&s.c->nworker), WORKERS);
    for (int i = 0; i < WEFT__SHARD_OTHER; i++)
        ASSERT_EQ(atomic_load(&s.c->other[i].v), 0);

    /* threads outside the runtime: one of the other slots, never a worker's */
    _Atomic int64_t *mine = weft__sharded_counter_slot(s.c);
    ASSERT(mine >= &s.c->other[0].v && mine <= &s.c->other[WEFT__SHARD_OTHER - 1].v);
    ASSERT_PTR_EQ(weft__sharded_counter_slot(s.c), mine); /* the same each time */
    weft_fiber_t t;
    void *theirs;
    ASSERT_OK(weft_thread_spawn(&t, NULL, other_slot_of, s.c));
    ASSERT_OK(weft_join(t, &theirs));
    ASSERT((_Atomic int64_t *)theirs >= &s.c->other[0].v &&
           (_Atomic int64_t *)theirs <= &s.c->other[WEFT__SHARD_OTHER - 1].v);
    weft_sharded_counter_add(s.c, 11);
    ASSERT_EQ(atomic_load(mine), 11);
    ASSERT_EQ(weft_sharded_counter_load(s.c), total + 11);
    weft_sharded_counter_free(s.c);
    ASSERT_OK(weft_shutdown());
}

/* Threads spread over the other slots: 16 live threads do not all land on one. (They must live at
 * once: a thread that has exited leaves its stack and TLS to the next one.) */
static pthread_barrier_t all_there;

static void *slot_of_new_thread(void *arg)
{
    void *slot = weft__sharded_counter_slot(arg);
    pthread_barrier_wait(&all_there);
    return slot;
}

TEST(threads_spread_over_the_other_slots)
{
    enum { N = 16 };
    weft_sharded_counter_t *c;
    ASSERT_OK(weft_sharded_counter_new(&c));
    ASSERT_EQ(pthread_barrier_init(&all_there, NULL, N), 0);
    pthread_t p[N];
    for (int i = 0; i < N; i++)
        ASSERT_EQ(pthread_create(&p[i], NULL, slot_of_new_thread, c), 0);
    int used[WEFT__SHARD_OTHER] = {0};
    for (int i = 0; i < N; i++) {
        void *slot;
        ASSERT_EQ(pthread_join(p[i], &slot), 0);
        ptrdiff_t k = (weft__shard *)((char *)slot - offsetof(weft__shard, v)) - c->other;
        ASSERT(k >= 0 && k < WEFT__SHARD_OTHER);
        used[k] = 1;
    }
    int distinct = 0;
    for (int i = 0; i < WEFT__SHARD_OTHER; i++)
        distinct += used[i];
    printf("%d threads on %d of %d slots\n", N, distinct, WEFT__SHARD_OTHER);
    ASSERT_GE(distinct, 3);
    weft_sharded_counter_free(c);
}

TEST(a_sharded_counter_outlives_a_runtime_and_sees_the_next)
{
    /* made before any runtime, used by two runtimes with different worker counts, then without one */
    weft_sharded_counter_t *c;
    ASSERT_OK(weft_sharded_counter_new(&c));
    weft_sharded_counter_add(c, 1);
    for (int workers = 1; workers <= 4; workers += 3) {
        start_workers(workers);
        weft_fiber_t f[50];
        for (int i = 0; i < 50; i++)
            ASSERT_OK(weft_spawn(&f[i], NULL, add_twos, c));
        for (int i = 0; i < 50; i++)
            ASSERT_OK(weft_join(f[i], NULL));
        ASSERT_OK(weft_shutdown());
    }
    weft_sharded_counter_add(c, 1);
    ASSERT_EQ(weft_sharded_counter_load(c), 2 + 2 * 50 * ADDS * 2);
    weft_sharded_counter_free(c);
}
