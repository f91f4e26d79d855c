/*
 * Nested spawns and joins: fork/join trees (regular and irregular), and long chains of fibers in which
 * each joins the one before it, several chains at once over every worker.
 * Sizes scale with WEFT_TEST_SCALE.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

#include "runner.h"

static inline uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static atomic_long nodes_run;

/* A binary tree of fibers: returns the number of nodes below and including this one. */
static void *binary(void *arg)
{
    uintptr_t depth = (uintptr_t)arg;
    atomic_fetch_add_explicit(&nodes_run, 1, memory_order_relaxed);
    if (depth == 0)
        return (void *)1;
    weft_fiber_t l, r;
    ASSERT_OK(weft_spawn(&l, NULL, binary, (void *)(depth - 1)));
    if (depth % 3 == 0)
        weft_yield();
    ASSERT_OK(weft_spawn(&r, NULL, binary, (void *)(depth - 1)));
    void *a, *b;
    ASSERT_OK(weft_join(l, &a));
    ASSERT_OK(weft_join(r, &b));
    return (void *)((uintptr_t)a + (uintptr_t)b + 1);
}

TEST_TIMEOUT(a_binary_fork_join_tree, 600)
{
    long want_nodes = runner_scaled(2000000);
    uintptr_t depth = 0;
    while (((long)2 << (depth + 1)) - 1 <= want_nodes)
        depth++;
    ASSERT_OK(weft_start(NULL));
    weft_fiber_t root;
    ASSERT_OK(weft_spawn(&root, NULL, binary, (void *)depth));
    void *r;
    ASSERT_OK(weft_join(root, &r));
    long n = ((long)2 << depth) - 1;
    ASSERT_EQ((long)(uintptr_t)r, n);
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&nodes_run), n);
    printf("%ld fibers in a tree of depth %lu\n", n, (unsigned long)depth);
}

static void *fib(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    if (n < 2)
        return (void *)n;
    weft_fiber_t a;
    ASSERT_OK(weft_spawn(&a, NULL, fib, (void *)(n - 1)));
    void *b = fib((void *)(n - 2)); /* the usual shape: one half spawned, the other done in place */
    void *ra;
    ASSERT_OK(weft_join(a, &ra));
    return (void *)((uintptr_t)ra + (uintptr_t)b);
}

TEST_TIMEOUT(parallel_fibonacci, 600)
{
    uintptr_t n = 27; /* about 300 000 fibers at full size */
    while (n > 10 && (long)(1ul << (n * 7 / 10)) > runner_scaled(1l << 19))
        n--;
    uint64_t a = 0, b = 1;
    for (uintptr_t i = 0; i < n; i++) {
        uint64_t t = a + b;
        a = b;
        b = t;
    }
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, fib, (void *)n));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((uint64_t)(uintptr_t)r, a);
    ASSERT_OK(weft_shutdown());
}

/* An irregular tree: the number of children (0-6) and what a node does come from a hash of its path. */
static long expected_size(uint64_t key, int depth)
{
    uint64_t h = mix(key);
    long n = 1;
    if (depth == 0)
        return n;
    int kids = (int)(h % 7);
    for (int i = 0; i < kids; i++)
        n += expected_size(key * 8 + (uint64_t)i + 1, depth - 1);
    return n;
}

typedef struct {
    uint64_t key;
    int depth;
} node_t;

static void *irregular(void *arg)
{
    node_t me = *(node_t *)arg;
    free(arg);
    atomic_fetch_add_explicit(&nodes_run, 1, memory_order_relaxed);
    uint64_t h = mix(me.key);
    if (me.depth == 0) {
        if ((h >> 20) % 64 == 0)
            weft_sleep((int64_t)((h >> 30) % 100) * 1000);
        return (void *)1;
    }
    int kids = (int)(h % 7);
    weft_fiber_t c[6];
    for (int i = 0; i < kids; i++) {
        node_t *n = malloc(sizeof *n);
        ASSERT(n);
        n->key = me.key * 8 + (uint64_t)i + 1;
        n->depth = me.depth - 1;
        ASSERT_OK(weft_spawn(&c[i], NULL, irregular, n));
        if ((h >> (8 + i)) & 1)
            weft_yield();
    }
    long sum = 1;
    for (int i = kids - 1; i >= 0; i--) {
        void *r;
        ASSERT_OK(weft_join(c[i], &r));
        sum += (long)(uintptr_t)r;
    }
    return (void *)(uintptr_t)sum;
}

TEST_TIMEOUT(irregular_trees_from_several_roots, 600)
{
    int depth = 12;
    while (depth > 3 && expected_size(12345, depth) > runner_scaled(100000))
        depth--;
    enum { ROOTS = 4 };
    weft_fiber_t root[ROOTS];
    long want = 0;
    for (int i = 0; i < ROOTS; i++) {
        node_t *n = malloc(sizeof *n);
        ASSERT(n);
        n->key = 12345 + (uint64_t)i * 1000003;
        n->depth = depth;
        want += expected_size(n->key, depth);
        ASSERT_OK(weft_spawn(&root[i], NULL, irregular, n));
    }
    long got = 0;
    for (int i = 0; i < ROOTS; i++) {
        void *r;
        ASSERT_OK(weft_join(root[i], &r));
        got += (long)(uintptr_t)r;
    }
    ASSERT_EQ(got, want);
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&nodes_run), want);
}

/* Chains: link i joins link i - 1 and returns its result + 1. Every link but the last is joined by its
 * successor, so a chain is a line of parked fibers waiting for the one before. */
typedef struct {
    weft_fiber_t *prev; /* NULL for the first link */
    uintptr_t salt;
} link_t;

static void *chain_link(void *arg)
{
    link_t *l = arg;
    uint64_t h = mix(l->salt);
    if (h % 8 == 0)
        weft_yield();
    if (!l->prev)
        return (void *)1;
    void *r;
    ASSERT_OK(weft_join(*l->prev, &r));
    return (void *)((uintptr_t)r + 1);
}

static void *build_chain(void *arg)
{
    long len = (long)(intptr_t)arg;
    weft_fiber_t *h = calloc((size_t)len, sizeof *h);
    link_t *l = calloc((size_t)len, sizeof *l);
    ASSERT(h && l);
    for (long i = 0; i < len; i++) {
        l[i].prev = i ? &h[i - 1] : NULL;
        l[i].salt = (uintptr_t)i ^ (uintptr_t)h;
        ASSERT_OK(weft_spawn(&h[i], NULL, chain_link, &l[i]));
        if (i % 1000 == 999)
            weft_yield(); /* let some links start (and park) while the chain grows */
    }
    void *r;
    ASSERT_OK(weft_join(h[len - 1], &r));
    for (long i = 0; i < len; i++)
        ASSERT_ERR(weft_fiber_state(h[i]), -ESRCH); /* joined, each by its successor */
    free(h);
    free(l);
    return r;
}

TEST_TIMEOUT(chains_of_fibers_joining_the_one_before, 600)
{
    enum { CHAINS = 6 };
    long len = runner_scaled(40000) / CHAINS + 2;
    weft_fiber_t c[CHAINS];
    for (int i = 0; i < CHAINS; i++)
        ASSERT_OK(weft_spawn(&c[i], NULL, build_chain, (void *)(intptr_t)len));
    for (int i = 0; i < CHAINS; i++) {
        void *r;
        ASSERT_OK(weft_join(c[i], &r));
        ASSERT_EQ((long)(uintptr_t)r, len);
    }
    ASSERT_OK(weft_shutdown());
}

/* Threads in the chain too: every tenth link is a kernel thread. */
static void *build_mixed_chain(void *arg)
{
    long len = (long)(intptr_t)arg;
    weft_fiber_t *h = calloc((size_t)len, sizeof *h);
    link_t *l = calloc((size_t)len, sizeof *l);
    ASSERT(h && l);
    for (long i = 0; i < len; i++) {
        l[i].prev = i ? &h[i - 1] : NULL;
        l[i].salt = (uintptr_t)i;
        if (i % 10 == 5)
            ASSERT_OK(weft_thread_spawn(&h[i], NULL, chain_link, &l[i]));
        else
            ASSERT_OK(weft_spawn(&h[i], NULL, chain_link, &l[i]));
    }
    void *r;
    ASSERT_OK(weft_join(h[len - 1], &r));
    free(h);
    free(l);
    return r;
}

TEST_TIMEOUT(chains_mixing_fibers_and_threads, 600)
{
    long len = runner_scaled(2000) + 2;
    weft_fiber_t c[2];
    for (int i = 0; i < 2; i++)
        ASSERT_OK(weft_spawn(&c[i], NULL, build_mixed_chain, (void *)(intptr_t)len));
    for (int i = 0; i < 2; i++) {
        void *r;
        ASSERT_OK(weft_join(c[i], &r));
        ASSERT_EQ((long)(uintptr_t)r, len);
    }
    ASSERT_OK(weft_shutdown());
}
