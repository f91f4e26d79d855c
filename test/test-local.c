/*
 * Fiber-local storage: one value per fiber (or weft thread, or foreign thread) and key; destructors at
 * exit; deleted and unknown keys; the key limit.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

static weft_key_t key;

/* Sets its own value, yields so that the others set theirs, checks its own is still there. */
static void *own_value(void *arg)
{
    ASSERT_PTR_EQ(weft_local_get(key), NULL);
    ASSERT_OK(weft_local_set(key, arg));
    for (int i = 0; i < 20; i++) {
        weft_yield();
        ASSERT_PTR_EQ(weft_local_get(key), arg);
    }
    weft_sleep(100000);
    ASSERT_PTR_EQ(weft_local_get(key), arg);
    ASSERT_OK(weft_local_set(key, (char *)arg + 1));
    ASSERT_PTR_EQ(weft_local_get(key), (char *)arg + 1);
    return NULL;
}

TEST(values_are_per_fiber_on_one_worker)
{
    start_workers(1);
    ASSERT_OK(weft_key_create(&key, NULL));
    weft_fiber_t f[10];
    for (int i = 0; i < 10; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, own_value, (void *)(uintptr_t)(0x1000 * (i + 1))));
    for (int i = 0; i < 10; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(values_are_per_fiber_on_many_workers)
{
    start_workers(4);
    ASSERT_OK(weft_key_create(&key, NULL));
    ASSERT_OK(weft_local_set(key, (void *)0x77)); /* this foreign thread's value */
    enum { N = 500 };
    static weft_fiber_t f[N];
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, own_value, (void *)(uintptr_t)(0x1000 * (i + 1))));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_PTR_EQ(weft_local_get(key), (void *)0x77);
    ASSERT_OK(weft_shutdown());
}

static atomic_int destroyed;
static atomic_uintptr_t destroyed_sum;

static void count_destroy(void *v)
{
    atomic_fetch_add(&destroyed, 1);
    atomic_fetch_add(&destroyed_sum, (uintptr_t)v);
}

static void *set_and_return(void *arg)
{
    ASSERT_OK(weft_local_set(key, arg));
    weft_yield();
    return arg;
}

TEST(the_destructor_runs_at_fiber_exit_with_the_value)
{
    ASSERT_OK(weft_key_create(&key, count_destroy));
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, set_and_return, (void *)0x1234));
    ASSERT_OK(weft_join(f, NULL));
    /* it finished before its join returned, destructor included */
    ASSERT_EQ(atomic_load(&destroyed), 1);
    ASSERT_EQ(atomic_load(&destroyed_sum), 0x1234);

    enum { N = 300 };
    weft_fiber_t g[N];
    uintptr_t want = 0x1234;
    for (int i = 0; i < N; i++) {
        ASSERT_OK(weft_spawn(&g[i], NULL, set_and_return, (void *)(uintptr_t)(i + 1)));
        want += (uintptr_t)(i + 1);
    }
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(g[i], NULL));
    ASSERT_EQ(atomic_load(&destroyed), N + 1);
    ASSERT_EQ(atomic_load(&destroyed_sum), want);
    ASSERT_OK(weft_shutdown());
}

static void *set_then_clear(void *arg)
{
    ASSERT_OK(weft_local_set(key, arg));
    ASSERT_OK(weft_local_set(key, NULL));
    ASSERT_PTR_EQ(weft_local_get(key), NULL);
    return NULL;
}

static void *never_set(void *arg)
{
    (void)arg;
    ASSERT_PTR_EQ(weft_local_get(key), NULL);
    return NULL;
}

TEST(no_destructor_for_null_values)
{
    ASSERT_OK(weft_key_create(&key, count_destroy));
    weft_fiber_t f, g;
    ASSERT_OK(weft_spawn(&f, NULL, set_then_clear, (void *)0x99));
    ASSERT_OK(weft_spawn(&g, NULL, never_set, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_join(g, NULL));
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&destroyed), 0);
}

static void *detached_sets(void *arg)
{
    ASSERT_OK(weft_local_set(key, arg));
    return NULL;
}

TEST(detached_fibers_run_their_destructors)
{
    ASSERT_OK(weft_key_create(&key, count_destroy));
    for (int i = 0; i < 100; i++)
        ASSERT_OK(weft_go(detached_sets, (void *)(uintptr_t)1));
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&destroyed), 100);
}

static void *use_deleted_key(void *arg)
{
    weft_key_t k = (weft_key_t)(uintptr_t)arg;
    ASSERT_ERR(weft_local_set(k, (void *)1), -EINVAL);
    ASSERT_PTR_EQ(weft_local_get(k), NULL);
    return NULL;
}

TEST(a_deleted_key_is_einval_on_set_and_null_on_get)
{
    weft_key_t k;
    ASSERT_OK(weft_key_create(&k, count_destroy));
    ASSERT_OK(weft_local_set(k, (void *)5));
    ASSERT_OK(weft_key_delete(k));
    ASSERT_ERR(weft_local_set(k, (void *)6), -EINVAL);
    ASSERT_PTR_EQ(weft_local_get(k), NULL);
    ASSERT_ERR(weft_key_delete(k), -EINVAL);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, use_deleted_key, (void *)(uintptr_t)k));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *set_then_key_deleted(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_local_set(key, (void *)0x55));
    ASSERT_OK(weft_key_delete(key));
    return NULL;
}

TEST(values_of_a_deleted_key_are_not_destroyed)
{
    ASSERT_OK(weft_key_create(&key, count_destroy));
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, set_then_key_deleted, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&destroyed), 0);
}

static void *old_value_under_new_key(void *arg)
{
    (void)arg;
    weft_key_t k1, k2;
    ASSERT_OK(weft_key_create(&k1, NULL));
    ASSERT_OK(weft_local_set(k1, (void *)0x42));
    ASSERT_OK(weft_key_delete(k1));
    /* the next key may take the same slot: it must not see the old value */
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(weft_key_create(&k2, count_destroy));
        ASSERT_PTR_EQ(weft_local_get(k2), NULL);
        ASSERT_OK(weft_key_delete(k2));
    }
    ASSERT_OK(weft_key_create(&k2, count_destroy));
    return (void *)(uintptr_t)k2;
}

TEST(a_new_key_never_sees_a_deleted_keys_values)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, old_value_under_new_key, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&destroyed), 0); /* the old value was never handed to the new destructor */
}

TEST(key_space_runs_out_with_enospc)
{
    weft_key_t k[WEFT_KEYS_MAX];
    int have = 0;
    for (int i = 0; i < WEFT_KEYS_MAX + 10; i++) {
        weft_key_t x;
        int r = weft_key_create(&x, NULL);
        if (r == -ENOSPC)
            break;
        ASSERT_OK(r);
        for (int j = 0; j < have; j++)
            ASSERT_NE(k[j], x);
        k[have++] = x;
    }
    ASSERT_EQ(have, WEFT_KEYS_MAX);
    weft_key_t x;
    ASSERT_ERR(weft_key_create(&x, NULL), -ENOSPC);
    /* every key works */
    for (int i = 0; i < have; i++)
        ASSERT_OK(weft_local_set(k[i], (void *)(uintptr_t)(i + 1)));
    for (int i = 0; i < have; i++)
        ASSERT_PTR_EQ(weft_local_get(k[i]), (void *)(uintptr_t)(i + 1));
    /* a deleted one makes room for exactly one */
    ASSERT_OK(weft_key_delete(k[17]));
    ASSERT_OK(weft_key_create(&x, NULL));
    ASSERT_ERR(weft_key_create(&x, NULL), -ENOSPC);
    for (int i = 0; i < have; i++)
        if (i != 17)
            ASSERT_OK(weft_key_delete(k[i]));
    ASSERT_OK(weft_key_delete(x));
}

TEST(unknown_keys_are_einval)
{
    ASSERT_ERR(weft_local_set(WEFT_KEYS_MAX, (void *)1), -EINVAL);
    ASSERT_ERR(weft_local_set(0xffffffffu, (void *)1), -EINVAL);
    ASSERT_PTR_EQ(weft_local_get(WEFT_KEYS_MAX), NULL);
    ASSERT_PTR_EQ(weft_local_get(0xffffffffu), NULL);
    ASSERT_ERR(weft_key_delete(WEFT_KEYS_MAX), -EINVAL);
    ASSERT_ERR(weft_key_delete(0xffffffffu), -EINVAL);
    /* a key index that was never created */
    weft_key_t k;
    ASSERT_OK(weft_key_create(&k, NULL));
    weft_key_t other = (k + 1) % WEFT_KEYS_MAX;
    ASSERT_ERR(weft_local_set(other, (void *)1), -EINVAL);
    ASSERT_PTR_EQ(weft_local_get(other), NULL);
    ASSERT_ERR(weft_key_delete(other), -EINVAL);
}

static void *thread_locals(void *arg)
{
    ASSERT_PTR_EQ(weft_local_get(key), NULL);
    ASSERT_OK(weft_local_set(key, arg));
    ASSERT_PTR_EQ(weft_local_get(key), arg);
    return NULL;
}

TEST(weft_threads_have_their_own_values_and_destructors)
{
    ASSERT_OK(weft_key_create(&key, count_destroy));
    weft_fiber_t t[4];
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_thread_spawn(&t[i], NULL, thread_locals, (void *)(uintptr_t)(i + 10)));
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_join(t[i], NULL));
    ASSERT_EQ(atomic_load(&destroyed), 4);
    ASSERT_EQ(atomic_load(&destroyed_sum), 10 + 11 + 12 + 13);
}

static void *pthread_locals(void *arg)
{
    return thread_locals(arg);
}

TEST(foreign_threads_have_their_own_values_and_destructors)
{
    ASSERT_OK(weft_key_create(&key, count_destroy));
    ASSERT_OK(weft_local_set(key, (void *)0x5)); /* the main thread's own */
    pthread_t p[4];
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_create(&p[i], NULL, pthread_locals, (void *)(uintptr_t)(i + 100)), 0);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_join(p[i], NULL), 0);
    ASSERT_PTR_EQ(weft_local_get(key), (void *)0x5);
    /* the destructors ran when those threads ended */
    ASSERT_EQ(atomic_load(&destroyed), 4);
    ASSERT_EQ(atomic_load(&destroyed_sum), 100 + 101 + 102 + 103);
}

static void *fiber_sees_nothing_of_main(void *arg)
{
    (void)arg;
    ASSERT_PTR_EQ(weft_local_get(key), NULL);
    ASSERT_OK(weft_local_set(key, (void *)0x8));
    return NULL;
}

TEST(fibers_do_not_see_the_spawning_threads_values)
{
    ASSERT_OK(weft_key_create(&key, NULL));
    ASSERT_OK(weft_local_set(key, (void *)0x7));
    weft_fiber_t f, t;
    ASSERT_OK(weft_spawn(&f, NULL, fiber_sees_nothing_of_main, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_thread_spawn(&t, NULL, fiber_sees_nothing_of_main, NULL));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_PTR_EQ(weft_local_get(key), (void *)0x7);
    ASSERT_OK(weft_shutdown());
}

/* A fiber started on a worker that an earlier fiber (with values) finished on starts clean. */
TEST(a_reused_fiber_descriptor_starts_without_values)
{
    start_workers(1);
    ASSERT_OK(weft_key_create(&key, NULL));
    for (int i = 0; i < 200; i++) {
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, NULL, i % 2 ? never_set : detached_sets, (void *)0x31));
        ASSERT_OK(weft_join(f, NULL));
    }
    ASSERT_OK(weft_shutdown());
}
