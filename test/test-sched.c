/*
 * The scheduler and the runtime's life: round-robin yields on one worker, parallelism and stealing on
 * several, fibers staying on their worker, the worker count, start and shutdown, an idle runtime using
 * no CPU, and fairness (no queue starves another).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft.h>

#include "core/internal.h"
#include "helpers.h"
#include "runner.h"


static void *noop(void *arg)
{
    return arg;
}

static int affinity_cpus(void)
{
    cpu_set_t s;
    if (sched_getaffinity(0, sizeof s, &s) != 0)
        FAIL("sched_getaffinity failed");
    return CPU_COUNT(&s);
}

/* ------------------------------------------------------------------------------------------------ */
/* One worker: classic N:1 coroutines                                                                */

enum { RR_FIBERS = 3, RR_ROUNDS = 10 };
static atomic_int rr_log[RR_FIBERS * RR_ROUNDS];
static atomic_int rr_len;

static void *rr_fiber(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (int i = 0; i < RR_ROUNDS; i++) {
        int at = atomic_fetch_add(&rr_len, 1);
        atomic_store(&rr_log[at], me * 100 + i);
        weft_yield();
    }
    return NULL;
}

static void *rr_main(void *arg)
{
    (void)arg;
    weft_fiber_t f[RR_FIBERS];
    for (int i = 0; i < RR_FIBERS; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, rr_fiber, (void *)(intptr_t)i));
    for (int i = 0; i < RR_FIBERS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    return NULL;
}

TEST(yields_on_one_worker_go_round_robin)
{
    start_workers(1);
    weft_fiber_t m;
    ASSERT_OK(weft_spawn(&m, NULL, rr_main, NULL));
    ASSERT_OK(weft_join(m, NULL));
    ASSERT_EQ(atomic_load(&rr_len), RR_FIBERS * RR_ROUNDS);
    char got[512];
    int len = 0;
    for (int k = 0; k < RR_FIBERS * RR_ROUNDS; k++)
        len += snprintf(got + len, sizeof got - (size_t)len, " %d", atomic_load(&rr_log[k]));
    /* the first round has each fiber once; every later round repeats its order exactly */
    int first[RR_FIBERS];
    for (int k = 0; k < RR_FIBERS; k++) {
        first[k] = atomic_load(&rr_log[k]) / 100;
        if (atomic_load(&rr_log[k]) % 100 != 0)
            FAIL("not round-robin (fiber*100 + round):%s", got);
        for (int j = 0; j < k; j++)
            if (first[j] == first[k])
                FAIL("not round-robin (fiber*100 + round):%s", got);
    }
    for (int k = 0; k < RR_FIBERS * RR_ROUNDS; k++)
        if (atomic_load(&rr_log[k]) != first[k % RR_FIBERS] * 100 + k / RR_FIBERS)
            FAIL("not round-robin (fiber*100 + round):%s", got);
    ASSERT_OK(weft_shutdown());
}

TEST(yield_outside_a_fiber_returns)
{
    ASSERT_OK(weft_yield());
    ASSERT_OK(weft_start(NULL));
    ASSERT_OK(weft_yield());
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Several workers: parallelism and stealing                                                         */

static atomic_int pair_flags[2];

/* Raises its flag, then spins (never yielding) until the other's flag is up. */
static void *spin_for_partner(void *arg)
{
    int me = (int)(intptr_t)arg;
    atomic_store(&pair_flags[me], 1);
    int64_t until = weft_now() + 20 * SEC;
    while (!atomic_load(&pair_flags[!me])) {
        if (weft_now() > until)
            FAIL("fiber %d spun alone: its partner never ran while a worker was free", me);
        cpu_relax();
    }
    return (void *)(intptr_t)(me + 10);
}

TEST(two_workers_run_two_spinning_fibers_at_once)
{
    start_workers(2);
    weft_fiber_t a, b;
    ASSERT_OK(weft_spawn(&a, NULL, spin_for_partner, (void *)0));
    ASSERT_OK(weft_spawn(&b, NULL, spin_for_partner, (void *)1));
    void *r;
    ASSERT_OK(weft_join(a, &r));
    ASSERT_EQ((intptr_t)r, 10);
    ASSERT_OK(weft_join(b, &r));
    ASSERT_EQ((intptr_t)r, 11);
    ASSERT_OK(weft_shutdown());
}

static void *spawn_spinning_pair(void *arg)
{
    (void)arg;
    weft_fiber_t a, b;
    ASSERT_OK(weft_spawn(&a, NULL, spin_for_partner, (void *)0));
    ASSERT_OK(weft_spawn(&b, NULL, spin_for_partner, (void *)1));
    ASSERT_OK(weft_join(a, NULL));
    ASSERT_OK(weft_join(b, NULL));
    return NULL;
}

TEST(an_idle_worker_steals_a_fiber_spawned_by_a_fiber)
{
    weft_config_t c = {.workers = 2, .spin_us = -1}; /* the idle worker is asleep, not spinning */
    ASSERT_OK(weft_start(&c));
    weft_fiber_t m;
    ASSERT_OK(weft_spawn(&m, NULL, spawn_spinning_pair, NULL));
    ASSERT_OK(weft_join(m, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *spawn_then_spin(void *arg)
{
    (void)arg;
    weft_fiber_t b;
    ASSERT_OK(weft_spawn(&b, NULL, spin_for_partner, (void *)1));
    spin_for_partner((void *)0); /* never yields: b must run elsewhere */
    ASSERT_OK(weft_join(b, NULL));
    return NULL;
}

TEST(a_fiber_spawned_by_a_spinning_fiber_runs_on_another_worker)
{
    for (int spin = 0; spin < 2; spin++) {
        weft_config_t c = {.workers = 2, .spin_us = spin ? 0 : -1};
        ASSERT_OK(weft_start(&c));
        atomic_store(&pair_flags[0], 0);
        atomic_store(&pair_flags[1], 0);
        weft_fiber_t m;
        ASSERT_OK(weft_spawn(&m, NULL, spawn_then_spin, NULL));
        ASSERT_OK(weft_join(m, NULL));
        ASSERT_OK(weft_shutdown());
    }
}

/* Every worker busy-waits on a barrier of all of them at once: only possible when each has a worker. */
static atomic_int all_arrived;
static int all_n;

static void *spin_barrier(void *arg)
{
    (void)arg;
    atomic_fetch_add(&all_arrived, 1);
    int64_t until = weft_now() + 20 * SEC;
    while (atomic_load(&all_arrived) < all_n) {
        if (weft_now() > until)
            FAIL("only %d of %d spinning fibers ever ran at once", atomic_load(&all_arrived), all_n);
        cpu_relax();
    }
    return NULL;
}

TEST(every_worker_takes_a_share_of_the_work)
{
    all_n = 4;
    start_workers(all_n);
    weft_fiber_t f[4];
    for (int i = 0; i < all_n; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, spin_barrier, NULL));
    for (int i = 0; i < all_n; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_shutdown());
}

static void *wg_done_fn(void *arg)
{
    ASSERT_OK(weft_wg_done(arg));
    return NULL;
}

static void *sleep_fn(void *arg)
{
    ASSERT_OK(weft_sleep((int64_t)(intptr_t)arg));
    return NULL;
}

typedef struct {
    atomic_int *moved;
    unsigned seed;
} stay_t;

static void *stay_on_worker(void *arg)
{
    stay_t *s = arg;
    pthread_t me = pthread_self();
    for (int i = 0; i < 200; i++) {
        switch (rand_r(&s->seed) % 4) {
        case 0: weft_yield(); break;
        case 1: weft_sleep((rand_r(&s->seed) % 50) * 1000); break;
        case 2: {
            /* park and be woken by a fiber that may well run on another worker */
            weft_wg_t wg = WEFT_WG_INIT;
            ASSERT_OK(weft_wg_add(&wg, 1));
            ASSERT_OK(weft_go(wg_done_fn, &wg));
            ASSERT_OK(weft_wg_wait(&wg, WEFT_FOREVER));
            ASSERT_OK(weft_wg_destroy(&wg)); /* the waker is done with it: its frame may be reused */
            break;
        }
        default: {
            weft_fiber_t c;
            ASSERT_OK(weft_spawn(&c, NULL, add_one, NULL));
            ASSERT_OK(weft_join(c, NULL));
            break;
        }
        }
        if (!pthread_equal(me, pthread_self()))
            atomic_fetch_add(s->moved, 1);
    }
    return NULL;
}

TEST(a_started_fiber_never_changes_thread)
{
    start_workers(4);
    enum { N = 64 };
    static stay_t s[N];
    static atomic_int moved;
    weft_fiber_t f[N];
    for (int i = 0; i < N; i++) {
        s[i] = (stay_t){&moved, (unsigned)i + 1};
        ASSERT_OK(weft_spawn(&f[i], NULL, stay_on_worker, &s[i]));
    }
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_EQ(atomic_load(&moved), 0);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* How many workers                                                                                  */

static void *report_workers(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)weft_workers();
}

TEST(workers_come_from_the_config_then_the_environment)
{
    ASSERT_EQ(weft_workers(), 0);
    start_workers(3);
    ASSERT_EQ(weft_workers(), 3);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, report_workers, NULL));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 3);
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(weft_workers(), 0);

    setenv("WEFT_WORKERS", "5", 1);
    ASSERT_OK(weft_start(NULL));
    ASSERT_EQ(weft_workers(), 5);
    ASSERT_OK(weft_shutdown());

    start_workers(2); /* the config wins over the environment */
    ASSERT_EQ(weft_workers(), 2);
    ASSERT_OK(weft_shutdown());

    ASSERT_OK(weft_spawn(&f, NULL, add_one, NULL)); /* an implicit start reads it too */
    ASSERT_EQ(weft_workers(), 5);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

/* The CPU quota of the cgroups this process is in, in CPUs; 0 when none. */
static double cgroup_quota(void)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return 0;
    char line[1024];
    double q = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1, *path = c2 + 1;
        int v2 = ctrls[0] == '\0';
        int v1cpu = strstr(ctrls, "cpu") != NULL && strstr(ctrls, "cpuset") == NULL;
        if (!v2 && !v1cpu)
            continue;
        char p[2048];
        snprintf(p, sizeof p, "%s", path);
        for (;;) {
            char file[4096];
            double here = 0;
            if (v2) {
                snprintf(file, sizeof file, "/sys/fs/cgroup%s/cpu.max", strcmp(p, "/") ? p : "");
                FILE *m = fopen(file, "r");
                if (m) {
                    char a[64];
                    long period;
                    if (fscanf(m, "%63s %ld", a, &period) == 2 && strcmp(a, "max") != 0 && period > 0)
                        here = atof(a) / (double)period;
                    fclose(m);
                }
            } else {
                const char *dirs[] = {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"};
                for (int d = 0; d < 2 && !here; d++) {
                    long quota = -1, period = 0;
                    snprintf(file, sizeof file, "%s%s/cpu.cfs_quota_us", dirs[d], strcmp(p, "/") ? p : "");
                    FILE *m = fopen(file, "r");
                    if (m) {
                        if (fscanf(m, "%ld", &quota) != 1)
                            quota = -1;
                        fclose(m);
                    }
                    snprintf(file, sizeof file, "%s%s/cpu.cfs_period_us", dirs[d], strcmp(p, "/") ? p : "");
                    m = fopen(file, "r");
                    if (m) {
                        if (fscanf(m, "%ld", &period) != 1)
                            period = 0;
                        fclose(m);
                    }
                    if (quota > 0 && period > 0)
                        here = (double)quota / (double)period;
                }
            }
            if (here > 0 && (q == 0 || here < q))
                q = here;
            char *slash = strrchr(p, '/');
            if (!slash || slash == p) {
                if (strcmp(p, "/") == 0 || p[0] == '\0')
                    break;
                strcpy(p, "/");
                continue;
            }
            *slash = '\0';
        }
    }
    fclose(f);
    return q;
}

TEST(the_default_worker_count_is_the_cpus_this_process_may_use)
{
    unsetenv("WEFT_WORKERS");
    ASSERT_OK(weft_start(NULL));
    int cpus = affinity_cpus();
    double q = cgroup_quota();
    if (q > 0) {
        int capped = (int)q < q ? (int)q + 1 : (int)q;
        if (capped < 1)
            capped = 1;
        ASSERT_EQ(weft_workers(), capped < cpus ? capped : cpus);
    } else {
        ASSERT_EQ(weft_workers(), cpus);
    }
    ASSERT_OK(weft_shutdown());
}

TEST(an_unusable_environment_value_falls_back_to_the_default)
{
    ASSERT_OK(weft_start(NULL));
    int dflt = weft_workers();
    ASSERT_OK(weft_shutdown());
    const char *bad[] = {"0", "-3", "abc", "4x", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("WEFT_WORKERS", bad[i], 1);
        ASSERT_OK(weft_start(NULL));
        if (weft_workers() != dflt)
            FAIL("WEFT_WORKERS=\"%s\" gave %d workers, the default is %d", bad[i], weft_workers(), dflt);
        ASSERT_OK(weft_shutdown());
    }
}

/* Every option in the runtime's table (src/core/options.c) is a row of the table in docs/runtime.md,
 * with its config field and its environment variable. */
TEST(every_option_is_documented_with_its_field_and_variable)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/docs/runtime.md", WEFT_SOURCE_DIR);
    FILE *f = fopen(path, "re");
    if (!f)
        FAIL("cannot read %s", path);
    static char doc[1 << 16];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    int rows = 0;
    for (int i = 0; weft__option_info(i); i++, rows++) {
        const weft__option *o = weft__option_info(i);
        char field[64], env[64];
        snprintf(field, sizeof field, "| `%s`", o->field);
        snprintf(env, sizeof env, "| `%s`", o->env);
        const char *row = strstr(doc, field);
        const char *eol = row ? strchr(row, '\n') : NULL;
        const char *var = row ? strstr(row, env) : NULL;
        if (!row || !var || (eol && var > eol))
            FAIL("option %s (%s) is not a row of docs/runtime.md's table", o->field, o->env);
    }
    ASSERT_EQ(rows, WEFT__OPTIONS_);
}

TEST(one_allowed_cpu_gives_one_worker)
{
    unsetenv("WEFT_WORKERS");
    cpu_set_t s;
    ASSERT_EQ(sched_getaffinity(0, sizeof s, &s), 0);
    int cpu = -1;
    for (int i = 0; i < CPU_SETSIZE && cpu < 0; i++)
        if (CPU_ISSET(i, &s))
            cpu = i;
    ASSERT_GE(cpu, 0);
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    ASSERT_EQ(sched_setaffinity(0, sizeof s, &s), 0);
    ASSERT_OK(weft_start(NULL));
    ASSERT_EQ(weft_workers(), 1);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)1));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 2);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Start and shutdown                                                                                */

TEST(start_twice_is_ealready)
{
    start_workers(2);
    weft_config_t c = {.workers = 3};
    ASSERT_ERR(weft_start(&c), -EALREADY);
    ASSERT_ERR(weft_start(NULL), -EALREADY);
    ASSERT_EQ(weft_workers(), 2);
    ASSERT_OK(weft_shutdown());
}

TEST(start_after_an_implicit_start_is_ealready)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, NULL));
    ASSERT_GT(weft_workers(), 0);
    ASSERT_ERR(weft_start(NULL), -EALREADY);
    ASSERT_ERR(weft_run(NULL, add_one, NULL, NULL), -EALREADY);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(shutdown_without_a_runtime_returns_zero)
{
    ASSERT_OK(weft_shutdown());
    ASSERT_OK(weft_shutdown());
    start_workers(1);
    ASSERT_OK(weft_shutdown());
    ASSERT_OK(weft_shutdown());
}

static atomic_long cycle_count;

static void *cycle_fiber(void *arg)
{
    intptr_t i = (intptr_t)arg;
    if (i % 3 == 0)
        weft_yield();
    if (i % 5 == 0)
        weft_sleep(100 * 1000);
    atomic_fetch_add(&cycle_count, 1);
    return (void *)(i * 2);
}

TEST(the_runtime_starts_again_after_each_shutdown)
{
    for (int cycle = 0; cycle < 12; cycle++) {
        int n = 1 + cycle % 4;
        if (cycle % 3 == 2) {
            /* an implicit start */
            char v[8];
            snprintf(v, sizeof v, "%d", n);
            setenv("WEFT_WORKERS", v, 1);
        } else {
            start_workers(n);
        }
        weft_fiber_t f[100];
        for (int i = 0; i < 100; i++) {
            if (i % 4 == 0) {
                ASSERT_OK(weft_go(cycle_fiber, (void *)(intptr_t)i));
                f[i] = WEFT_FIBER_NONE;
            } else {
                ASSERT_OK(weft_spawn(&f[i], NULL, cycle_fiber, (void *)(intptr_t)i));
            }
        }
        ASSERT_EQ(weft_workers(), n);
        for (int i = 0; i < 100; i++) {
            if (!f[i].handle_)
                continue;
            void *r;
            ASSERT_OK(weft_join(f[i], &r));
            ASSERT_EQ((intptr_t)r, 2 * i);
        }
        ASSERT_OK(weft_shutdown());
        ASSERT_EQ(weft_workers(), 0);
        ASSERT_EQ(atomic_load(&cycle_count), 100 * (cycle + 1));
        unsetenv("WEFT_WORKERS");
    }
}

static atomic_long late_count;

static void *late_grandchild(void *arg)
{
    (void)arg;
    weft_sleep(20 * MS);
    atomic_fetch_add(&late_count, 1);
    return NULL;
}

static void *sleep_then_spawn(void *arg)
{
    (void)arg;
    weft_sleep(50 * MS);
    atomic_fetch_add(&late_count, 1);
    ASSERT_OK(weft_go(late_grandchild, NULL));
    return NULL;
}

TEST(shutdown_waits_for_detached_sleeping_fibers_and_their_children)
{
    for (int i = 0; i < 100; i++)
        ASSERT_OK(weft_go(sleep_then_spawn, NULL));
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&late_count), 200);
    ASSERT_EQ(weft_workers(), 0);
}

static void *shutdown_from_fiber(void *arg)
{
    (void)arg;
    ASSERT_ERR(weft_shutdown(), -EDEADLK);
    /* the runtime still runs */
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)1));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    return r;
}

TEST(shutdown_from_a_fiber_is_edeadlk)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, shutdown_from_fiber, NULL));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 2);
    ASSERT_GT(weft_workers(), 0);
    ASSERT_OK(weft_shutdown());
}

static atomic_int foreign_refused, child_ran, fiber_spawn_result = 1;

static void *probe_foreign_spawns(void *arg)
{
    (void)arg;
    /* until the shutdown has begun, spawns work; from then on they must fail */
    int64_t until = weft_now() + 20 * SEC;
    for (;;) {
        int r = weft_spawn(NULL, NULL, noop, NULL);
        if (r == -ESHUTDOWN)
            break;
        if (r != 0)
            FAIL("a foreign spawn failed with %d", r);
        if (weft_now() > until)
            FAIL("foreign spawns never saw the shutdown");
        usleep(1000);
    }
    atomic_store(&foreign_refused, 1);
    return NULL;
}

static void *mark_child(void *arg)
{
    (void)arg;
    atomic_store(&child_ran, 1);
    return NULL;
}

static void *spawn_once_shutdown_began(void *arg)
{
    (void)arg;
    while (!atomic_load(&foreign_refused))
        weft_sleep(MS);
    weft_fiber_t c;
    int r = weft_spawn(&c, NULL, mark_child, NULL);
    atomic_store(&fiber_spawn_result, r);
    if (r == 0)
        ASSERT_OK(weft_join(c, NULL));
    return NULL;
}

TEST(during_shutdown_only_fibers_may_spawn)
{
    start_workers(2);
    ASSERT_OK(weft_go(spawn_once_shutdown_began, NULL));
    pthread_t p;
    ASSERT_EQ(pthread_create(&p, NULL, probe_foreign_spawns, NULL), 0);
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(pthread_join(p, NULL), 0);
    ASSERT_EQ(atomic_load(&foreign_refused), 1);
    ASSERT_EQ(atomic_load(&fiber_spawn_result), 0);
    ASSERT_EQ(atomic_load(&child_ran), 1);
    ASSERT_EQ(weft_workers(), 0);
}

/* ------------------------------------------------------------------------------------------------ */
/* An idle runtime uses no CPU                                                                       */

static int64_t process_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static void *burst(void *arg)
{
    intptr_t n = (intptr_t)arg;
    if (n > 0) {
        weft_fiber_t a, b;
        ASSERT_OK(weft_spawn(&a, NULL, burst, (void *)(n - 1)));
        ASSERT_OK(weft_spawn(&b, NULL, burst, (void *)(n - 1)));
        ASSERT_OK(weft_join(a, NULL));
        ASSERT_OK(weft_join(b, NULL));
    }
    return NULL;
}

/* Over 500 ms of idle wall time, a spinning worker would burn about 500 ms of CPU; allow 150. */
static void assert_idle_cpu(const char *what)
{
    int64_t c0 = process_cpu_ns();
    struct timespec ts = {0, 500 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0)
        ;
    int64_t used = process_cpu_ns() - c0;
    if (used >= 150 * MS)
        FAIL("%s: the idle runtime used %lld ms of CPU in 500 ms", what, (long long)(used / MS));
}

TEST(an_idle_runtime_uses_no_cpu)
{
    ASSERT_OK(weft_start(NULL));
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, burst, (void *)10));
    ASSERT_OK(weft_join(f, NULL));
    assert_idle_cpu("after a burst of work");
    ASSERT_OK(weft_shutdown());
}

TEST(an_idle_runtime_with_a_pending_timer_uses_no_cpu)
{
    start_workers(2);
    weft_fiber_t s;
    ASSERT_OK(weft_spawn(&s, NULL, sleep_fn, (void *)(intptr_t)(800 * MS)));
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, burst, (void *)8));
    ASSERT_OK(weft_join(f, NULL));
    assert_idle_cpu("with a fiber asleep");
    ASSERT_OK(weft_join(s, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *wait_on_group(void *arg)
{
    ASSERT_OK(weft_wg_wait(arg, WEFT_FOREVER));
    return NULL;
}

/* Workers whose own fibers are parked spin a little for their wakeups (only they can run them), then
 * must sleep like any idle worker. */
TEST(an_idle_runtime_with_fibers_parked_on_every_worker_uses_no_cpu)
{
    start_workers(2);
    enum { N = 64 };
    static weft_wg_t gate = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&gate, 1));
    weft_fiber_t f[N];
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, wait_on_group, &gate));
    for (int i = 0; i < N; i++)
        WAIT_UNTIL(weft_fiber_state(f[i]) == WEFT_WAITING);
    assert_idle_cpu("with fibers parked on a wait group");
    ASSERT_OK(weft_wg_done(&gate));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Fairness                                                                                          */

static atomic_int first_child_ran;

static void *mark_first(void *arg)
{
    (void)arg;
    atomic_store(&first_child_ran, 1);
    return NULL;
}

static void *spawn_and_yield_forever(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_go(mark_first, NULL));
    for (long i = 0; !atomic_load(&first_child_ran); i++) {
        if (i > 1000000)
            FAIL("the first child never ran while its parent kept spawning and yielding");
        ASSERT_OK(weft_go(noop, NULL));
        if (i % 3 == 0)
            ASSERT_OK(weft_go(noop, NULL));
        weft_yield();
    }
    return NULL;
}

TEST(a_fiber_that_keeps_spawning_does_not_starve_its_first_child)
{
    start_workers(1);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, spawn_and_yield_forever, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

static atomic_int fair_flag;

static void *yield_until_flag(void *arg)
{
    (void)arg;
    int64_t until = weft_now() + 20 * SEC;
    while (!atomic_load(&fair_flag)) {
        if (weft_now() > until)
            FAIL("starved: the flag was never set while this fiber yielded");
        weft_yield();
    }
    return NULL;
}

static void *set_fair_flag(void *arg)
{
    (void)arg;
    atomic_store(&fair_flag, 1);
    return NULL;
}

TEST(a_foreign_spawn_runs_while_fibers_yield_in_a_loop)
{
    start_workers(1);
    weft_fiber_t y1, y2;
    ASSERT_OK(weft_spawn(&y1, NULL, yield_until_flag, NULL));
    ASSERT_OK(weft_spawn(&y2, NULL, yield_until_flag, NULL));
    WAIT_UNTIL(weft_fiber_state(y1) == WEFT_READY || weft_fiber_state(y2) == WEFT_READY);
    ASSERT_OK(weft_spawn(NULL, NULL, set_fair_flag, NULL)); /* to the global queue */
    ASSERT_OK(weft_join(y1, NULL));
    ASSERT_OK(weft_join(y2, NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(a_foreign_spawn_runs_while_one_fiber_yields_alone)
{
    start_workers(1);
    weft_fiber_t y;
    ASSERT_OK(weft_spawn(&y, NULL, yield_until_flag, NULL));
    WAIT_UNTIL(weft_fiber_state(y) == WEFT_READY || weft_fiber_state(y) == WEFT_RUNNING);
    ASSERT_OK(weft_spawn(NULL, NULL, set_fair_flag, NULL));
    ASSERT_OK(weft_join(y, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *wait_then_flag(void *arg)
{
    ASSERT_OK(weft_wg_wait(arg, WEFT_FOREVER));
    atomic_store(&fair_flag, 1);
    return NULL;
}

TEST(a_foreign_wakeup_runs_while_fibers_yield_in_a_loop)
{
    start_workers(1);
    static weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t w, y1, y2;
    ASSERT_OK(weft_spawn(&w, NULL, wait_then_flag, &wg));
    WAIT_UNTIL(weft_fiber_state(w) == WEFT_WAITING);
    ASSERT_OK(weft_spawn(&y1, NULL, yield_until_flag, NULL));
    ASSERT_OK(weft_spawn(&y2, NULL, yield_until_flag, NULL));
    WAIT_UNTIL(weft_fiber_state(y1) == WEFT_READY || weft_fiber_state(y2) == WEFT_READY);
    ASSERT_OK(weft_wg_done(&wg)); /* from this foreign thread: through the worker's inbox */
    ASSERT_OK(weft_join(w, NULL));
    ASSERT_OK(weft_join(y1, NULL));
    ASSERT_OK(weft_join(y2, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *sleep_then_flag(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_sleep(5 * MS));
    atomic_store(&fair_flag, 1);
    return NULL;
}

static void *yielders_and_a_sleeper(void *arg)
{
    (void)arg;
    weft_fiber_t s, y1, y2;
    ASSERT_OK(weft_spawn(&s, NULL, sleep_then_flag, NULL));
    ASSERT_OK(weft_spawn(&y1, NULL, yield_until_flag, NULL));
    ASSERT_OK(weft_spawn(&y2, NULL, yield_until_flag, NULL));
    ASSERT_OK(weft_join(y1, NULL));
    ASSERT_OK(weft_join(y2, NULL));
    ASSERT_OK(weft_join(s, NULL));
    return NULL;
}

TEST(a_timer_fires_while_fibers_yield_in_a_loop)
{
    start_workers(1);
    weft_fiber_t m;
    ASSERT_OK(weft_spawn(&m, NULL, yielders_and_a_sleeper, NULL));
    ASSERT_OK(weft_join(m, NULL));
    ASSERT_OK(weft_shutdown());
}

/* Two fibers that wake each other in turn (each wakeup a direct hand-off) must not keep a third one,
 * ready to start, from running until they are done. */
enum { PINGPONG_N = 100000 };
static weft_wg_t turn[2];
static atomic_long ping_iter;
static atomic_long third_saw = -1;

static void *pingpong(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (long i = 0; i < PINGPONG_N; i++) {
        ASSERT_OK(weft_wg_wait(&turn[me], WEFT_FOREVER));
        ASSERT_OK(weft_wg_add(&turn[me], 1));
        if (me == 0)
            atomic_store(&ping_iter, i);
        ASSERT_OK(weft_wg_done(&turn[!me]));
    }
    return NULL;
}

static void *third(void *arg)
{
    (void)arg;
    atomic_store(&third_saw, atomic_load(&ping_iter));
    return NULL;
}

static void *pingpong_main(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_wg_add(&turn[1], 1)); /* turn[0] is at zero: fiber 0 goes first */
    weft_fiber_t x, y, s;
    ASSERT_OK(weft_spawn(&x, NULL, pingpong, (void *)0));
    ASSERT_OK(weft_spawn(&y, NULL, pingpong, (void *)1));
    ASSERT_OK(weft_yield()); /* both have started and hand the worker to each other from now on */
    ASSERT_OK(weft_spawn(&s, NULL, third, NULL));
    ASSERT_OK(weft_join(x, NULL));
    ASSERT_OK(weft_join(y, NULL));
    ASSERT_OK(weft_join(s, NULL));
    return NULL;
}

TEST(fibers_waking_each_other_do_not_starve_a_third)
{
    start_workers(1);
    weft_fiber_t m;
    ASSERT_OK(weft_spawn(&m, NULL, pingpong_main, NULL));
    ASSERT_OK(weft_join(m, NULL));
    long saw = atomic_load(&third_saw);
    if (saw < 0 || saw >= PINGPONG_N - 1)
        FAIL("the third fiber ran only after %ld of %d hand-offs", saw, PINGPONG_N);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* weft_run                                                                                          */

static atomic_int run_detached_done;

static void *run_detached(void *arg)
{
    (void)arg;
    weft_sleep(20 * MS);
    atomic_fetch_add(&run_detached_done, 1);
    return NULL;
}

static void *run_main(void *arg)
{
    ASSERT_STR_EQ(weft_self_name(), "main");
    ASSERT_EQ(weft_in_fiber(), 1);
    ASSERT_EQ(weft_workers(), 3);
    for (int i = 0; i < 10; i++)
        ASSERT_OK(weft_go(run_detached, NULL));
    return (void *)((intptr_t)arg * 2);
}

TEST(run_runs_main_and_returns_its_result)
{
    weft_config_t c = {.workers = 3};
    void *r = NULL;
    ASSERT_OK(weft_run(&c, run_main, (void *)21, &r));
    ASSERT_EQ((intptr_t)r, 42);
    ASSERT_EQ(atomic_load(&run_detached_done), 10); /* it waited for every fiber */
    ASSERT_EQ(weft_workers(), 0);
    /* again, without a result pointer */
    ASSERT_OK(weft_run(&c, run_main, (void *)1, NULL));
    ASSERT_EQ(atomic_load(&run_detached_done), 20);
}

TEST(run_while_running_is_ealready_and_runs_nothing)
{
    start_workers(1);
    atomic_store(&fair_flag, 0);
    ASSERT_ERR(weft_run(NULL, set_fair_flag, NULL, NULL), -EALREADY);
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&fair_flag), 0);
    ASSERT_ERR(weft_run(NULL, NULL, NULL, NULL), -EINVAL);
    ASSERT_EQ(weft_workers(), 0);
}
