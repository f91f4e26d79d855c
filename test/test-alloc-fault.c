/*
 * Allocation failure, one allocation at a time: a script that uses every part of weft runs once to
 * count the allocations it makes (K), then once for every N in 1..K with the Nth of them failing, each
 * time in a child process of its own. In every one of those runs:
 *   - the call that needed the allocation returns -ENOMEM (-EAGAIN for a thread, as documented), and
 *     no other call fails: each step of the script knows what it must have achieved and checks it (a
 *     value sent is received, a fiber that was joined ran, a reduce that failed left its result as it
 *     was). Where weft has another way to do the job (docs/errors.md) no call fails, and the outcomes
 *     show that the job was done, also the lasting ones: every worker and weft thread can still report
 *     a stack overflow, the stack guards are the ones a run with no failure gets, and what cannot be
 *     returned is said on stderr. The summary (shown with -v) lists where each failure went;
 *   - nothing crashes, hangs (the child has a time limit, and the deadlock report ends a wait that
 *     nothing can end) or aborts;
 *   - the same script then runs again in the same process, with nothing failing, and all of it works;
 *   - nothing leaks: weft's live blocks and mappings at the end are what the run with no failure left
 *     (descriptors and the fd table are kept for the life of the process, the same in every run), and
 *     under ASan, LeakSanitizer is asked explicitly, since the runner's children end with _exit, which
 *     skips the check LSan makes at exit(). A second test plants a leak to see both checks fail.
 *
 * The allocator is the C library's behind -Wl,--wrap (test/CMakeLists.txt): the wrap applies to every
 * object linked statically into this program, weft's too. It covers malloc, calloc, realloc,
 * aligned_alloc, free, mmap, munmap, pthread_create, and the calls that allocate inside the C library
 * or use up one of its resources: pthread_getattr_np, pthread_key_create, pthread_setspecific. Other
 * allocations inside the C library (a thread's stack, stdio, getaddrinfo) are out of its reach.
 *
 * The script: weft_start with one worker and no stuck-fiber monitor, so that allocations come in the
 * same order on every run; spawns and joins from a thread outside the runtime; then, in a fiber: spawn,
 * join and detach, every lock and synchronizer with deadlines, channels buffered and unbuffered and
 * select, 72 timed waits at once (past the 64 a worker's timer heap first holds), reads and writes with
 * deadlines on a socketpair and a pipe, the blocking pool, parallel loops, fiber-local storage, a
 * sharded counter, weft_thread_spawn; a plain thread that spawns, joins and waits; weft_shutdown. Then
 * each kind of timed wait once more as the first on a fresh runtime's worker, the one its timers are
 * made for (weft_run, restarted nine times). Last, weft_run on two workers with parallel loops that
 * spread, timers on both workers and a ping-pong across them: two workers make some allocations in an
 * order that varies from run to run, so there N may name a neighbour of the one it names in the run
 * that counted.
 *
 * Under TSan and qemu (WEFT_TEST_SCALE below 0.2) about 30 Ns are run, evenly spread from the first to
 * the last, not all of them: a child takes a second or more there.
 *
 * A third test fails a long run of spawns for want of memory, as a program that retries makes, and
 * checks that spawning works once memory is back.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <weft.h>

#include "core/internal.h"
#include "helpers.h"
#include "obs/sanitize.h"
#include "runner.h"

#if WEFT_ASAN
#include <sanitizer/lsan_interface.h>
#endif

/* ------------------------------------------------------------------------------------------------ */
/* The allocator that fails on cue                                                                   */

enum { EV_MALLOC, EV_CALLOC, EV_REALLOC, EV_ALIGNED_ALLOC, EV_MMAP, EV_THREAD, EV_GETATTR, EV_KEY, EV_SPECIFIC,
       EV_KINDS };
static const char *const ev_names[EV_KINDS] = {"malloc",         "calloc",     "realloc",    "aligned_alloc", "mmap",
                                               "pthread_create", "getattr_np", "key_create", "setspecific"};

#define EVENTS_MAX 4096

static struct {
    _Atomic int counting;    /* the run under test: count events, fail the chosen one */
    _Atomic int fail_all;    /* fail every allocation (not threads) while set, counting or not */
    long fail_at;            /* the event to fail, from 1; 0: none */
    bool log;                /* keep a record of every event (the counting run) */
    _Atomic long events;
    _Atomic int fired;       /* the chosen event came, and failed */
    int fired_kind, fired_step;
    size_t fired_size;
    uintptr_t fired_site;
    _Atomic long blocks;     /* live blocks and mappings made through the wrappers, always counted */
    _Atomic long maps;
} F;

static struct event {
    int kind, step;
    size_t size;
    uintptr_t site;
} evlog[EVENTS_MAX];

static _Atomic int cur_step = -1; /* the step of the script under way (below) */

extern char __executable_start[]; /* sites are printed as offsets in the program, for addr2line */

static bool fail_here(int kind, size_t size, void *site)
{
    if (atomic_load_explicit(&F.fail_all, memory_order_relaxed) && kind != EV_THREAD)
        return true;
    if (!atomic_load_explicit(&F.counting, memory_order_acquire))
        return false;
    long k = atomic_fetch_add(&F.events, 1) + 1;
    int step = atomic_load(&cur_step);
    uintptr_t off = (uintptr_t)site - (uintptr_t)__executable_start;
    if (F.log && k <= EVENTS_MAX)
        evlog[k - 1] = (struct event){kind, step, size, off};
    if (k != F.fail_at)
        return false;
    F.fired_kind = kind;
    F.fired_step = step;
    F.fired_size = size;
    F.fired_site = off;
    atomic_store(&F.fired, 1);
    return true;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
void __real_free(void *p);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __real_munmap(void *addr, size_t len);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __real_pthread_getattr_np(pthread_t t, pthread_attr_t *a);
int __real_pthread_key_create(pthread_key_t *k, void (*dtor)(void *));
int __real_pthread_setspecific(pthread_key_t k, const void *v);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n);
void __wrap_free(void *p);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __wrap_munmap(void *addr, size_t len);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_getattr_np(pthread_t t, pthread_attr_t *a);
int __wrap_pthread_key_create(pthread_key_t *k, void (*dtor)(void *));
int __wrap_pthread_setspecific(pthread_key_t k, const void *v);

void *__wrap_malloc(size_t n)
{
    if (fail_here(EV_MALLOC, n, __builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_malloc(n);
    if (p)
        atomic_fetch_add(&F.blocks, 1);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    if (fail_here(EV_CALLOC, n * size, __builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_calloc(n, size);
    if (p)
        atomic_fetch_add(&F.blocks, 1);
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    if (fail_here(EV_REALLOC, n, __builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    void *q = __real_realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&F.blocks, 1);
    return q;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    if (fail_here(EV_ALIGNED_ALLOC, n, __builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_aligned_alloc(align, n);
    if (p)
        atomic_fetch_add(&F.blocks, 1);
    return p;
}

void __wrap_free(void *p)
{
    if (p)
        atomic_fetch_sub(&F.blocks, 1);
    __real_free(p);
}

/* A fixed mapping is not failed (nor counted): weft makes one only under TSan, at every fiber start, to
 * give the stack fresh memory that TSan knows nothing of; failing it means no stack for that fiber,
 * which would then leave every fiber of the script that waits for a helper fiber waiting. */
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (!(flags & MAP_FIXED) && fail_here(EV_MMAP, len, __builtin_return_address(0))) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    void *p = __real_mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED && !(flags & MAP_FIXED)) /* a fixed mapping replaces part of one counted */
        atomic_fetch_add(&F.maps, 1);
    return p;
}

int __wrap_munmap(void *addr, size_t len)
{
    int r = __real_munmap(addr, len);
    if (r == 0)
        atomic_fetch_sub(&F.maps, 1);
    return r;
}

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    if (fail_here(EV_THREAD, 0, __builtin_return_address(0)))
        return EAGAIN;
    return __real_pthread_create(t, a, fn, arg);
}

/* It allocates inside the C library (the thread's CPU set), and fails with ENOMEM when it cannot. */
int __wrap_pthread_getattr_np(pthread_t t, pthread_attr_t *a)
{
    if (fail_here(EV_GETATTR, 0, __builtin_return_address(0)))
        return ENOMEM;
    return __real_pthread_getattr_np(t, a);
}

/* Keys run out (EAGAIN), and a thread's table of values past the first 32 keys is allocated (ENOMEM). */
int __wrap_pthread_key_create(pthread_key_t *k, void (*dtor)(void *))
{
    if (fail_here(EV_KEY, 0, __builtin_return_address(0)))
        return EAGAIN;
    return __real_pthread_key_create(k, dtor);
}

int __wrap_pthread_setspecific(pthread_key_t k, const void *v)
{
    if (fail_here(EV_SPECIFIC, 0, __builtin_return_address(0)))
        return ENOMEM;
    return __real_pthread_setspecific(k, v);
}

/* What the call that needed the failed event must return. */
static int fired_err(void)
{
    return F.fired_kind == EV_THREAD ? -EAGAIN : -ENOMEM; /* a key too: the record a thread waits with */
}

/* ------------------------------------------------------------------------------------------------ */
/* Steps                                                                                             */

#define STEPS_MAX 64
#define BAD_TWICE (-ENOTRECOVERABLE) /* a step in which two calls failed: one failed event, two errors */

static struct {
    const char *name;
    int result;
} steps[STEPS_MAX];
static int nsteps;
static _Atomic int wrong; /* outcomes that were not what they must be (each one printed) */

#define EXPECT(cond)                                                                                \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            printf("  %s:%d: expected %s\n", __func__, __LINE__, #cond);                            \
            atomic_fetch_add(&wrong, 1);                                                            \
        }                                                                                           \
    } while (0)

/* Keep a step's failure: the first one, as only one event fails. */
static void note(int *err, long r)
{
    if (r >= 0)
        return;
    *err = *err == 0 ? (int)r : BAD_TWICE;
}

/* A wait that may fail only for want of memory (its timer, or a thread's record): note that, and wait
 * again, now with nothing left to fail. */
#define WAIT_AGAIN(err, r, call_deadline, call_forever)                                             \
    do {                                                                                            \
        (r) = (call_deadline);                                                                      \
        if ((r) == -ENOMEM) {                                                                       \
            note((err), (r));                                                                       \
            (r) = (call_forever);                                                                   \
        }                                                                                           \
    } while (0)

/* A wait that must time out, or fail for want of memory for its timer. */
static void times_out(int *err, long r, int line)
{
    if (r == -ENOMEM) {
        note(err, r);
        return;
    }
    if (r != -ETIMEDOUT) {
        printf("  line %d: expected -ETIMEDOUT, got %ld (%s)\n", line, r, weft_err_name((int)r));
        atomic_fetch_add(&wrong, 1);
    }
}
#define TIMES_OUT(err, call) times_out((err), (long)(call), __LINE__)

static int run_step(const char *name, int (*fn)(void))
{
    int i = nsteps++;
    if (i >= STEPS_MAX)
        FAIL("more than %d steps", STEPS_MAX);
    steps[i].name = name;
    steps[i].result = 0;
    atomic_store(&cur_step, i);
    int r = fn();
    steps[i].result = r;
    return r;
}

static int64_t in_ms(int64_t ms)
{
    return weft_deadline_in(ms * MS);
}

#define LONG_WAIT (10 * 1000) /* ms: a liveness bound, never reached when all is well */

/* A deadline for a wait that is to time out. */
static int64_t soon(void)
{
    return weft_deadline_in(100 * 1000);
}

/* The thread we run on can report a stack overflow by name: it has its alternate signal stack. */
static bool overflow_reportable(void)
{
    stack_t ss;
    return sigaltstack(NULL, &ss) == 0 && !(ss.ss_flags & SS_DISABLE);
}

/* -- fibers ---------------------------------------------------------------------------------------- */

static _Atomic int ran[8];

static void *mark_ran(void *arg)
{
    int i = (int)(intptr_t)arg;
    atomic_fetch_add(&ran[i], 1);
    return (void *)(intptr_t)(100 + i);
}

/* Join a fiber running mark_ran(i). It ran, or it never did (no stack for it: -ENOMEM, and its handle
 * is stale). A thread outside the runtime may also get -ENOMEM for want of the record it waits with:
 * then the handle stays good and it joins again. */
static void join_mark(weft_fiber_t f, int i, int *err)
{
    void *res = (void *)-1;
    int r = weft_join(f, &res);
    if (r == -ENOMEM && weft_fiber_state(f) >= 0) {
        note(err, r);
        r = weft_join(f, &res);
    }
    if (r == 0) {
        EXPECT((intptr_t)res == 100 + i && atomic_load(&ran[i]) == 1);
        return;
    }
    note(err, r);
    EXPECT(r == -ENOMEM && res == NULL && atomic_load(&ran[i]) == 0);
    EXPECT(weft_join(f, NULL) == -ESRCH);
}

static void *wg_done_fn(void *arg)
{
    weft_wg_done(arg);
    return NULL;
}

static int step_fibers(void)
{
    int err = 0;
    for (int i = 0; i < 8; i++)
        atomic_store(&ran[i], 0);
    const weft_attr_t named = {.name = "named"}, big = {.name = "big", .stack_size = (size_t)256 << 10};
    const weft_attr_t *attr[4] = {NULL, &named, &big, NULL};
    weft_fiber_t f[4];
    bool spawned[4];
    for (int i = 0; i < 4; i++) {
        int r = weft_spawn(&f[i], attr[i], mark_ran, (void *)(intptr_t)i);
        spawned[i] = r == 0;
        note(&err, r);
    }
    for (int i = 0; i < 4; i++) {
        if (spawned[i])
            join_mark(f[i], i, &err);
        else
            EXPECT(atomic_load(&ran[i]) == 0);
    }
    /* detached once it finished */
    weft_fiber_t g;
    int r = weft_spawn(&g, NULL, mark_ran, (void *)4);
    note(&err, r);
    if (r == 0) {
        WAIT_UNTIL(weft_fiber_state(g) == WEFT_DONE);
        EXPECT(weft_detach(g) == 0);
        EXPECT(weft_fiber_state(g) == -ESRCH);
    }
    /* detached from the start */
    weft_wg_t wg = WEFT_WG_INIT;
    EXPECT(weft_wg_add(&wg, 1) == 0);
    r = weft_go(wg_done_fn, &wg);
    note(&err, r);
    if (r < 0)
        EXPECT(weft_wg_done(&wg) == 0);
    WAIT_AGAIN(&err, r, weft_wg_wait(&wg, in_ms(LONG_WAIT)), weft_wg_wait(&wg, in_ms(LONG_WAIT)));
    if (r == -ETIMEDOUT && F.fired && F.fired_step == atomic_load(&cur_step) && F.fired_kind != EV_THREAD)
        r = 0; /* it got no stack: a detached fiber says so on stderr, and never runs */
    EXPECT(r == 0);
    return err;
}

/* -- locks and synchronizers ----------------------------------------------------------------------- */

typedef struct {
    weft_mutex_t m;
    weft_cond_t cv;
    bool flag;
    weft_sem_t sem;
    weft_barrier_t bar;
    weft_latch_t latch;
    weft_wg_t wg;
} sync_objs;

static void *sync_helper(void *p)
{
    sync_objs *o = p;
    EXPECT(weft_mutex_lock(&o->m, WEFT_FOREVER) == 0);
    o->flag = true;
    EXPECT(weft_cond_signal(&o->cv) == 0);
    EXPECT(weft_mutex_unlock(&o->m) == 0);
    EXPECT(weft_sem_release(&o->sem, 1) == 0);
    int b = weft_barrier_wait(&o->bar, WEFT_FOREVER);
    EXPECT(weft_latch_count_down(&o->latch, 1) == 0);
    EXPECT(weft_wg_done(&o->wg) == 0);
    return (void *)(intptr_t)b;
}

static void once_fn(void *arg)
{
    ++*(int *)arg;
}

static int step_sync(void)
{
    int err = 0, r;
    sync_objs o = {.m = WEFT_MUTEX_INIT, .cv = WEFT_COND_INIT, .wg = WEFT_WG_INIT};
    EXPECT(weft_sem_init(&o.sem, 0) == 0);
    EXPECT(weft_barrier_init(&o.bar, 2) == 0);
    EXPECT(weft_latch_init(&o.latch, 1) == 0);
    EXPECT(weft_wg_add(&o.wg, 1) == 0);
    EXPECT(weft_mutex_lock(&o.m, WEFT_FOREVER) == 0);
    TIMES_OUT(&err, weft_mutex_lock(&o.m, soon())); /* not recursive: its holder waits too */
    weft_fiber_t h;
    r = weft_spawn(&h, NULL, sync_helper, &o);
    if (r < 0) {
        EXPECT(weft_mutex_unlock(&o.m) == 0);
        note(&err, r);
        return err;
    }
    while (!o.flag) {
        r = weft_cond_wait(&o.cv, &o.m, in_ms(LONG_WAIT));
        if (r == -ENOMEM)
            note(&err, r); /* the mutex is ours again: wait again */
        else
            EXPECT(r == 0);
    }
    EXPECT(weft_mutex_unlock(&o.m) == 0);
    WAIT_AGAIN(&err, r, weft_sem_acquire(&o.sem, in_ms(LONG_WAIT)), weft_sem_acquire(&o.sem, WEFT_FOREVER));
    EXPECT(r == 0);
    int b;
    WAIT_AGAIN(&err, b, weft_barrier_wait(&o.bar, in_ms(LONG_WAIT)), weft_barrier_wait(&o.bar, WEFT_FOREVER));
    EXPECT(b == 0 || b == WEFT_BARRIER_SERIAL);
    WAIT_AGAIN(&err, r, weft_latch_wait(&o.latch, in_ms(LONG_WAIT)), weft_latch_wait(&o.latch, WEFT_FOREVER));
    EXPECT(r == 0);
    WAIT_AGAIN(&err, r, weft_wg_wait(&o.wg, in_ms(LONG_WAIT)), weft_wg_wait(&o.wg, WEFT_FOREVER));
    EXPECT(r == 0);
    void *hb = NULL;
    EXPECT(weft_join(h, &hb) == 0);
    EXPECT((b == WEFT_BARRIER_SERIAL) + ((intptr_t)hb == WEFT_BARRIER_SERIAL) == 1);

    weft_rwlock_t rw = WEFT_RWLOCK_INIT;
    EXPECT(weft_rwlock_rdlock(&rw, WEFT_FOREVER) == 0);
    r = weft_rwlock_rdlock(&rw, in_ms(LONG_WAIT)); /* readers share: no wait */
    EXPECT(r == 0);
    TIMES_OUT(&err, weft_rwlock_wrlock(&rw, soon()));
    EXPECT(weft_rwlock_unlock(&rw) == 0);
    EXPECT(weft_rwlock_unlock(&rw) == 0);
    TIMES_OUT(&err, weft_sem_acquire(&o.sem, soon()));

    weft_once_t once = WEFT_ONCE_INIT;
    int calls = 0;
    EXPECT(weft_once(&once, once_fn, &calls) == 0);
    EXPECT(weft_once(&once, once_fn, &calls) == 0);
    EXPECT(calls == 1);

    EXPECT(weft_mutex_destroy(&o.m) == 0);
    EXPECT(weft_cond_destroy(&o.cv) == 0);
    EXPECT(weft_sem_destroy(&o.sem) == 0);
    EXPECT(weft_barrier_destroy(&o.bar) == 0);
    EXPECT(weft_latch_destroy(&o.latch) == 0);
    EXPECT(weft_wg_destroy(&o.wg) == 0);
    EXPECT(weft_rwlock_destroy(&rw) == 0);
    return err;
}

/* -- channels and select --------------------------------------------------------------------------- */

static void *producer(void *p)
{
    weft_chan_t **c = p;
    for (int i = 0; i < 8; i++) {
        int v = i;
        int r = weft_chan_send(c[0], &v, WEFT_FOREVER);
        if (r == 0) {
            v = 100 + i;
            r = weft_chan_send(c[1], &v, WEFT_FOREVER);
        }
        if (r < 0)
            return (void *)(intptr_t)r;
    }
    return NULL;
}

static int step_chan(void)
{
    int err = 0, r;
    weft_chan_t *c[2] = {NULL, NULL};
    r = weft_chan_new(&c[0], sizeof(int), 0);
    if (r < 0)
        return r;
    r = weft_chan_new(&c[1], sizeof(int), 4);
    if (r < 0) {
        EXPECT(weft_chan_free(c[0]) == 0);
        return r;
    }
    weft_fiber_t p;
    r = weft_spawn(&p, NULL, producer, c);
    if (r < 0) {
        EXPECT(weft_chan_free(c[0]) == 0 && weft_chan_free(c[1]) == 0);
        return r;
    }
    int next[2] = {0, 100};
    for (int got = 0; got < 16;) {
        int v[2] = {-1, -1};
        weft_case_t cs[2] = {{c[0], WEFT_RECV, &v[0], 1}, {c[1], WEFT_RECV, &v[1], 1}};
        int k = weft_select(cs, 2, in_ms(LONG_WAIT));
        if (k == -ENOMEM) {
            note(&err, k);
            continue;
        }
        EXPECT(k == 0 || k == 1);
        if (k < 0)
            break;
        EXPECT(cs[k].result == 0 && v[k] == next[k]);
        next[k]++;
        got++;
    }
    /* nothing comes any more: waits with deadlines time out */
    int x;
    TIMES_OUT(&err, weft_chan_recv(c[1], &x, soon()));
    weft_case_t wide[20]; /* more cases than select keeps on its stack */
    for (int i = 0; i < 20; i++)
        wide[i] = (weft_case_t){c[i % 2], WEFT_RECV, &x, 0};
    TIMES_OUT(&err, weft_select(wide, 20, soon()));
    TIMES_OUT(&err, weft_select(NULL, 0, soon()));
    for (int i = 0; i < 4; i++)
        EXPECT(weft_chan_send(c[1], &i, WEFT_NOWAIT) == 0);
    TIMES_OUT(&err, weft_chan_send(c[1], &x, soon())); /* full */
    EXPECT(weft_chan_close(c[0]) == 0 && weft_chan_close(c[1]) == 0);
    for (int i = 0; i < 4; i++)
        EXPECT(weft_chan_recv(c[1], &x, WEFT_FOREVER) == 0 && x == i);
    EXPECT(weft_chan_recv(c[1], &x, WEFT_FOREVER) == -EPIPE);
    EXPECT(weft_chan_recv(c[0], &x, WEFT_FOREVER) == -EPIPE);
    void *pr = (void *)1;
    EXPECT(weft_join(p, &pr) == 0 && pr == NULL);
    EXPECT(weft_chan_free(c[0]) == 0 && weft_chan_free(c[1]) == 0);
    return err;
}

/* -- timers ---------------------------------------------------------------------------------------- */

static void *timed_waiter(void *p)
{
    EXPECT(overflow_reportable()); /* on every worker */
    return (void *)(intptr_t)weft_sem_acquire(p, in_ms(LONG_WAIT));
}

/* n fibers wait with deadlines at the same time (the timer heaps grow), then are let go. */
static int timed_waits(int n)
{
    int err = 0, r;
    weft_sem_t go;
    EXPECT(weft_sem_init(&go, 0) == 0);
    weft_fiber_t f[160];
    int k = 0;
    for (; k < n; k++) {
        r = weft_spawn(&f[k], NULL, timed_waiter, &go);
        if (r < 0) {
            note(&err, r);
            break;
        }
    }
    /* every one waits (or has finished: no memory for its timer or its stack) before any is let go */
    for (int i = 0; i < k; i++) {
        int64_t until = weft_now() + 20 * SEC;
        for (;;) {
            int s = weft_fiber_state(f[i]);
            if (s == WEFT_WAITING || s == WEFT_DONE)
                break;
            if (weft_now() > until) {
                EXPECT(!"the timed waiters all wait");
                break;
            }
            weft_yield();
        }
    }
    EXPECT(weft_sem_release(&go, k) == 0);
    for (int i = 0; i < k; i++) {
        void *res = NULL;
        r = weft_join(f[i], &res);
        note(&err, r);
        if (r == 0) {
            note(&err, (intptr_t)res);
            EXPECT(res == NULL || (intptr_t)res == -ENOMEM);
        } else {
            EXPECT(r == -ENOMEM);
        }
    }
    EXPECT(weft_sem_destroy(&go) == 0);
    int64_t d = soon();
    r = weft_sleep_until(d);
    note(&err, r);
    EXPECT(r == -ENOMEM || (r == 0 && weft_now() >= d));
    return err;
}

static int step_timers(void)
{
    return timed_waits(72);
}

/* -- fds ------------------------------------------------------------------------------------------- */

static void *pipe_writer(void *p)
{
    weft_yield(); /* the reader waits first */
    return (void *)(intptr_t)weft_write(*(int *)p, "pipe", 4, in_ms(LONG_WAIT));
}

/* Read exactly len bytes. */
static ssize_t read_all(int fd, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = weft_read(fd, buf + got, len - got, in_ms(LONG_WAIT));
        if (n <= 0)
            return n < 0 ? n : -EPIPE;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static int step_fd(void)
{
    int err = 0, sv[2], pp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 || pipe2(pp, O_CLOEXEC) != 0) {
        EXPECT(!"a socketpair and a pipe");
        return err;
    }
    char buf[64];
    ssize_t n = weft_write(sv[0], "hello", 5, in_ms(LONG_WAIT));
    note(&err, n);
    if (!err) {
        EXPECT(n == 5);
        n = read_all(sv[1], buf, 5);
        EXPECT(n == 5 && memcmp(buf, "hello", 5) == 0);
        TIMES_OUT(&err, weft_read(sv[1], buf, sizeof buf, soon()));
    }
    if (!err) {
        struct iovec iov[20]; /* more than writev keeps on its stack */
        for (int i = 0; i < 20; i++)
            iov[i] = (struct iovec){.iov_base = (char *)"abcdefghijklmnopqrst" + i, .iov_len = 1};
        n = weft_writev(sv[0], iov, 20, in_ms(LONG_WAIT));
        note(&err, n);
        if (n >= 0) {
            EXPECT(n == 20);
            n = read_all(sv[1], buf, 20);
            EXPECT(n == 20 && memcmp(buf, "abcdefghijklmnopqrst", 20) == 0);
        }
    }
    if (!err)
        EXPECT(weft_fd_wait(sv[0], WEFT_WRITABLE, in_ms(LONG_WAIT)) == WEFT_WRITABLE);
    if (!err) {
        weft_fiber_t w;
        int r = weft_spawn(&w, NULL, pipe_writer, &pp[1]);
        note(&err, r);
        if (r == 0) {
            n = weft_read(pp[0], buf, sizeof buf, in_ms(LONG_WAIT));
            note(&err, n);
            void *wr = NULL;
            if (n == -ENOMEM) /* our timer: the writer is under way all the same */
                n = weft_read(pp[0], buf, sizeof buf, WEFT_FOREVER);
            EXPECT(n == 4 && memcmp(buf, "pipe", 4) == 0);
            EXPECT(weft_join(w, &wr) == 0 && (intptr_t)wr == 4);
        }
    }
    for (int i = 0; i < 2; i++) {
        EXPECT(weft_close(sv[i]) == 0);
        EXPECT(weft_close(pp[i]) == 0);
    }
    return err;
}

/* -- the blocking pool ----------------------------------------------------------------------------- */

/* Two calls meet on the pool's two threads before either returns: the second call makes the second
 * thread however fast the first one is, so that the pool makes the same threads on every run. */
static _Atomic int meeting;

static void *meet(void *arg)
{
    atomic_fetch_add(&meeting, 1);
    int64_t until = weft_now() + 2 * SEC; /* the other may never come (its fiber got no stack) */
    while (atomic_load(&meeting) < 2 && weft_now() < until)
        sched_yield();
    return add_one(arg);
}

static void *blocking_caller(void *arg)
{
    void *res = NULL;
    int r = weft_blocking(meet, arg, &res);
    if (r < 0)
        return (void *)(intptr_t)r;
    return res == (void *)((intptr_t)arg + 1) ? NULL : (void *)(intptr_t)-EPROTO;
}

static int step_blocking(void)
{
    int err = 0;
    void *res = NULL;
    int r = weft_blocking(add_one, (void *)41, &res);
    note(&err, r);
    EXPECT(r < 0 || res == (void *)42);
    r = weft_blocking_until(add_one, (void *)1, &res, in_ms(LONG_WAIT));
    note(&err, r);
    EXPECT(r < 0 || res == (void *)2);
    /* three at once on a pool of two threads: one queues */
    atomic_store(&meeting, 0);
    weft_fiber_t f[3];
    int k = 0;
    for (; k < 3; k++) {
        r = weft_spawn(&f[k], NULL, blocking_caller, (void *)(intptr_t)k);
        if (r < 0) {
            note(&err, r);
            break;
        }
    }
    for (int i = 0; i < k; i++) {
        void *fr = (void *)1;
        r = weft_join(f[i], &fr);
        note(&err, r);
        if (r == 0)
            note(&err, (intptr_t)fr);
        EXPECT(r == -ENOMEM || fr == NULL || (intptr_t)fr == -ENOMEM);
    }
    return err;
}

/* -- parallel loops -------------------------------------------------------------------------------- */

#define HITS 4096
static _Atomic unsigned char hits[HITS];

static void count_hits(int64_t lo, int64_t hi, void *arg)
{
    for (int64_t i = lo; i < hi; i++)
        atomic_fetch_add_explicit(&hits[i], 1, memory_order_relaxed);
}

typedef struct {
    int64_t sum;
    char pad[500]; /* past the bytes a task keeps on its stack: partial results are allocated */
} big_acc;

static void sum_body(int64_t lo, int64_t hi, void *acc, void *arg)
{
    for (int64_t i = lo; i < hi; i++)
        ((big_acc *)acc)->sum += i;
}

static void sum_join(void *into, const void *from, void *arg)
{
    ((big_acc *)into)->sum += ((const big_acc *)from)->sum;
}

/* A parallel for over [0, n) and a reduce over [0, nr), both with this grain. */
static int parallel(int64_t n, int64_t nr, int64_t grain)
{
    int err = 0;
    for (int64_t i = 0; i < n; i++)
        atomic_store(&hits[i], 0);
    int r = weft_parallel_for(0, n, grain, count_hits, NULL);
    EXPECT(r == 0); /* never -ENOMEM: a half that gets no fiber runs in its parent */
    for (int64_t i = 0; i < n; i++)
        if (atomic_load(&hits[i]) != 1) {
            EXPECT(!"every index done exactly once");
            break;
        }
    static const big_acc identity = {0};
    big_acc acc = {.sum = 7};
    r = weft_parallel_reduce(0, nr, grain, &acc, sizeof acc, &identity, sum_body, sum_join, NULL);
    note(&err, r);
    EXPECT(r == 0 ? acc.sum == 7 + nr * (nr - 1) / 2 : acc.sum == 7);
    return err;
}

static int step_parallel(void)
{
    return parallel(1000, 100, 10);
}

/* -- fiber-local storage, counters ----------------------------------------------------------------- */

static _Atomic int dtor_calls;
static int local_token;

static void local_dtor(void *v)
{
    EXPECT(v == &local_token);
    atomic_fetch_add(&dtor_calls, 1);
}

static void *use_local(void *arg)
{
    weft_key_t k = (weft_key_t)(uintptr_t)arg;
    int r = weft_local_set(k, &local_token);
    EXPECT(r < 0 || weft_local_get(k) == &local_token);
    return (void *)(intptr_t)r;
}

static int step_locals(void)
{
    int err = 0;
    weft_key_t k;
    EXPECT(weft_key_create(&k, local_dtor) == 0);
    atomic_store(&dtor_calls, 0);
    weft_fiber_t f;
    int r = weft_spawn(&f, NULL, use_local, (void *)(uintptr_t)k);
    note(&err, r);
    if (r == 0) {
        void *res = (void *)1;
        r = weft_join(f, &res);
        note(&err, r);
        note(&err, (intptr_t)res);
        EXPECT(atomic_load(&dtor_calls) == (r == 0 && res == NULL));
    }
    EXPECT(weft_key_delete(k) == 0);
    return err;
}

static int step_counter(void)
{
    weft_sharded_counter_t *c;
    int r = weft_sharded_counter_new(&c);
    if (r < 0)
        return r;
    for (int i = 0; i < 3; i++)
        weft_sharded_counter_add(c, 2);
    EXPECT(weft_sharded_counter_load(c) == 6);
    weft_sharded_counter_free(c);
    return 0;
}

/* -- kernel threads -------------------------------------------------------------------------------- */

static void *thread_body(void *p)
{
    EXPECT(overflow_reportable());
    EXPECT(weft_sleep(MS) == 0); /* a thread sleeps in the kernel: no timer */
    int v = 7;
    int r = weft_chan_send(p, &v, WEFT_FOREVER);
    return (void *)(intptr_t)(r < 0 ? r : 7);
}

static int step_thread(void)
{
    int err = 0;
    weft_chan_t *c;
    int r = weft_chan_new(&c, sizeof(int), 0);
    if (r < 0)
        return r;
    weft_fiber_t t;
    const weft_attr_t a = {.name = "thread"};
    r = weft_thread_spawn(&t, &a, thread_body, c);
    if (r < 0) {
        EXPECT(weft_chan_free(c) == 0);
        return r;
    }
    int v = 0;
    WAIT_AGAIN(&err, r, weft_chan_recv(c, &v, in_ms(LONG_WAIT)), weft_chan_recv(c, &v, WEFT_FOREVER));
    EXPECT(r == 0 && v == 7);
    void *res = NULL;
    EXPECT(weft_join(t, &res) == 0 && (intptr_t)res == 7);
    EXPECT(weft_chan_free(c) == 0);
    return err;
}

/* -- the script ------------------------------------------------------------------------------------ */

static void *driver(void *arg)
{
    run_step("spawn, join, detach", step_fibers);
    run_step("mutex, cond, sem, barrier, latch, wait group, rwlock, once", step_sync);
    run_step("channels and select", step_chan);
    run_step("72 timed waits at once, and a sleep", step_timers);
    run_step("read, write, writev, fd_wait, close", step_fd);
    run_step("the blocking pool", step_blocking);
    run_step("parallel for and reduce, one worker", step_parallel);
    run_step("fiber-local storage", step_locals);
    run_step("a sharded counter", step_counter);
    run_step("weft_thread_spawn", step_thread);
    return NULL;
}

static int step_start(void)
{
    /* one worker and no stuck-fiber monitor: the allocations come in the same order every time */
    weft_config_t c = {.workers = 1, .stuck_us = -1, .blocking_threads = 2};
    return weft_start(&c);
}

static int step_outside(void)
{
    int err = 0;
    weft_fiber_t f;
    atomic_store(&ran[6], 0);
    int r = weft_spawn(&f, NULL, mark_ran, (void *)6);
    note(&err, r);
    if (r == 0)
        join_mark(f, 6, &err);
    return err;
}

static int step_driver(void)
{
    weft_fiber_t d;
    const weft_attr_t a = {.name = "driver"};
    int r = weft_spawn(&d, &a, driver, NULL);
    if (r < 0)
        return r;
    return weft_join(d, NULL);
}

/* A plain thread (made here, not counted) spawns, joins, and waits on a channel and a wait group. */
static void *plain_thread(void *p)
{
    int *err = p;
    atomic_store(&ran[7], 0);
    weft_fiber_t f;
    int r = weft_spawn(&f, NULL, mark_ran, (void *)7);
    note(err, r);
    if (r == 0)
        join_mark(f, 7, err);
    weft_wg_t wg = WEFT_WG_INIT;
    EXPECT(weft_wg_add(&wg, 1) == 0);
    r = weft_go(wg_done_fn, &wg);
    note(err, r);
    if (r < 0)
        EXPECT(weft_wg_done(&wg) == 0);
    WAIT_AGAIN(err, r, weft_wg_wait(&wg, in_ms(LONG_WAIT)), weft_wg_wait(&wg, WEFT_FOREVER));
    EXPECT(r == 0);
    return NULL;
}

static int step_plain_thread(void)
{
    int err = 0;
    pthread_t t;
    if (__real_pthread_create(&t, NULL, plain_thread, &err) != 0) {
        EXPECT(!"a plain thread");
        return 0;
    }
    pthread_join(t, NULL);
    return err;
}

static int step_shutdown(void)
{
    return weft_shutdown();
}

static int step_par_b(void)
{
    return parallel(HITS, 256, 16);
}

static int step_timers_b(void)
{
    return timed_waits(150);
}

typedef struct {
    weft_chan_t *ping, *pong;
    int rounds;
} pingpong;

static void *ponger(void *p)
{
    pingpong *pp = p;
    int err = 0;
    for (int i = 0; i < pp->rounds; i++) {
        int v, r;
        WAIT_AGAIN(&err, r, weft_chan_recv(pp->ping, &v, in_ms(LONG_WAIT)), weft_chan_recv(pp->ping, &v, WEFT_FOREVER));
        EXPECT(r == 0 && v == i);
        v = -v;
        EXPECT(weft_chan_send(pp->pong, &v, WEFT_FOREVER) == 0);
    }
    return (void *)(intptr_t)err;
}

static int step_pingpong_b(void)
{
    int err = 0, r;
    pingpong pp = {.rounds = 50};
    if ((r = weft_chan_new(&pp.ping, sizeof(int), 0)) < 0)
        return r;
    if ((r = weft_chan_new(&pp.pong, sizeof(int), 0)) < 0) {
        EXPECT(weft_chan_free(pp.ping) == 0);
        return r;
    }
    weft_fiber_t f;
    r = weft_spawn(&f, NULL, ponger, &pp);
    note(&err, r);
    if (r == 0) {
        for (int i = 0; i < pp.rounds; i++) {
            int v = i;
            EXPECT(weft_chan_send(pp.ping, &v, WEFT_FOREVER) == 0);
            WAIT_AGAIN(&err, r, weft_chan_recv(pp.pong, &v, in_ms(LONG_WAIT)), weft_chan_recv(pp.pong, &v, WEFT_FOREVER));
            EXPECT(r == 0 && v == -i);
        }
        void *res = (void *)1;
        r = weft_join(f, &res);
        note(&err, r);
        if (r == 0)
            note(&err, (intptr_t)res);
    }
    EXPECT(weft_chan_free(pp.ping) == 0 && weft_chan_free(pp.pong) == 0);
    return err;
}

static void *main_b(void *arg)
{
    run_step("parallel for and reduce, two workers", step_par_b);
    run_step("150 timed waits on two workers", step_timers_b);
    run_step("ping-pong across workers", step_pingpong_b);
    return (void *)99;
}

static int step_run_b(void)
{
    weft_config_t c = {.workers = 2, .blocking_threads = 2};
    void *res = NULL;
    int r = weft_run(&c, main_b, NULL, &res);
    EXPECT(r < 0 || res == (void *)99);
    return r;
}

/* -- each kind of timed wait as the first on its worker: the one its worker's timers are made for ----- */

#define RESULT(err) ((void *)(intptr_t)(err))

static void *tw_mutex(void *arg)
{
    int err = 0;
    weft_mutex_t m = WEFT_MUTEX_INIT;
    EXPECT(weft_mutex_lock(&m, WEFT_FOREVER) == 0);
    TIMES_OUT(&err, weft_mutex_lock(&m, soon()));
    EXPECT(weft_mutex_unlock(&m) == 0);
    EXPECT(weft_mutex_destroy(&m) == 0); /* no waiter left behind */
    return RESULT(err);
}

static void *tw_cond(void *arg)
{
    int err = 0;
    weft_mutex_t m = WEFT_MUTEX_INIT;
    weft_cond_t c = WEFT_COND_INIT;
    EXPECT(weft_mutex_lock(&m, WEFT_FOREVER) == 0);
    TIMES_OUT(&err, weft_cond_wait(&c, &m, soon()));
    EXPECT(weft_mutex_unlock(&m) == 0); /* held again, whatever the wait returned */
    EXPECT(weft_cond_destroy(&c) == 0 && weft_mutex_destroy(&m) == 0);
    return RESULT(err);
}

static void *tw_sem(void *arg)
{
    int err = 0;
    weft_sem_t sem;
    EXPECT(weft_sem_init(&sem, 0) == 0);
    TIMES_OUT(&err, weft_sem_acquire(&sem, soon()));
    EXPECT(weft_sem_release(&sem, 1) == 0 && weft_sem_value(&sem) == 1);
    EXPECT(weft_sem_destroy(&sem) == 0);
    return RESULT(err);
}

static void *tw_rwlock(void *arg)
{
    int err = 0;
    weft_rwlock_t l = WEFT_RWLOCK_INIT;
    EXPECT(weft_rwlock_wrlock(&l, WEFT_FOREVER) == 0);
    TIMES_OUT(&err, weft_rwlock_rdlock(&l, soon()));
    EXPECT(weft_rwlock_unlock(&l) == 0);
    EXPECT(weft_rwlock_rdlock(&l, WEFT_NOWAIT) == 0 && weft_rwlock_unlock(&l) == 0);
    EXPECT(weft_rwlock_destroy(&l) == 0);
    return RESULT(err);
}

static void *tw_barrier(void *arg)
{
    int err = 0;
    weft_barrier_t b;
    EXPECT(weft_barrier_init(&b, 2) == 0);
    TIMES_OUT(&err, weft_barrier_wait(&b, soon()));
    EXPECT(weft_barrier_destroy(&b) == 0); /* the arrival was withdrawn */
    return RESULT(err);
}

static void *tw_chan(void *arg)
{
    int err = 0, x = 1;
    weft_chan_t *c;
    int r = weft_chan_new(&c, sizeof x, 0);
    if (r < 0)
        return RESULT(r);
    TIMES_OUT(&err, weft_chan_recv(c, &x, soon()));
    TIMES_OUT(&err, weft_chan_send(c, &x, soon()));
    EXPECT(weft_chan_free(c) == 0); /* nothing left queued on it */
    return RESULT(err);
}

static void *tw_select(void *arg)
{
    int err = 0, x = 1, y;
    weft_chan_t *c;
    int r = weft_chan_new(&c, sizeof x, 0);
    if (r < 0)
        return RESULT(r);
    weft_case_t cs[2] = {{c, WEFT_SEND, &x, 0}, {c, WEFT_RECV, &y, 0}}; /* a select never meets itself */
    TIMES_OUT(&err, weft_select(cs, 2, soon()));
    EXPECT(weft_chan_free(c) == 0);
    return RESULT(err);
}

static void *tw_fd(void *arg)
{
    int err = 0, sv[2];
    char b[8];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        EXPECT(!"a socketpair");
        return NULL;
    }
    TIMES_OUT(&err, weft_read(sv[0], b, sizeof b, soon()));
    EXPECT(weft_write(sv[1], "x", 1, WEFT_FOREVER) == 1);
    EXPECT(weft_read(sv[0], b, sizeof b, WEFT_FOREVER) == 1);
    EXPECT(weft_close(sv[0]) == 0 && weft_close(sv[1]) == 0);
    return RESULT(err);
}

static void *sem_waiter(void *p)
{
    return RESULT(weft_sem_acquire(p, WEFT_FOREVER));
}

static void *tw_join(void *arg)
{
    int err = 0;
    weft_sem_t sem;
    EXPECT(weft_sem_init(&sem, 0) == 0);
    weft_fiber_t f;
    int r = weft_spawn(&f, NULL, sem_waiter, &sem);
    if (r < 0)
        return RESULT(r);
    void *res = (void *)1;
    TIMES_OUT(&err, weft_join_until(f, &res, soon()));
    EXPECT(weft_sem_release(&sem, 1) == 0);
    r = weft_join(f, &res); /* still joinable */
    note(&err, r);
    EXPECT(r == -ENOMEM || (r == 0 && res == NULL)); /* -ENOMEM: it never ran */
    EXPECT(weft_sem_destroy(&sem) == 0);
    return RESULT(err);
}

static int first_timed_wait(void *(*fn)(void *))
{
    weft_config_t c = {.workers = 1, .stuck_us = -1, .blocking_threads = 2};
    void *res = NULL;
    int r = weft_run(&c, fn, NULL, &res);
    return r < 0 ? r : (int)(intptr_t)res;
}

#define FIRST_TIMED_WAIT(name)                                                                      \
    static int step_first_##name(void)                                                              \
    {                                                                                               \
        return first_timed_wait(tw_##name);                                                         \
    }
FIRST_TIMED_WAIT(mutex)
FIRST_TIMED_WAIT(cond)
FIRST_TIMED_WAIT(sem)
FIRST_TIMED_WAIT(rwlock)
FIRST_TIMED_WAIT(barrier)
FIRST_TIMED_WAIT(chan)
FIRST_TIMED_WAIT(select)
FIRST_TIMED_WAIT(fd)
FIRST_TIMED_WAIT(join)

static void script(void)
{
    nsteps = 0;
    if (run_step("weft_start", step_start) == 0) {
        run_step("spawn and join from a thread outside the runtime", step_outside);
        run_step("the rest in a fiber", step_driver);
        run_step("a plain thread spawns, joins and waits", step_plain_thread);
        run_step("weft_shutdown", step_shutdown);
    }
    run_step("a timed mutex lock, first on its worker", step_first_mutex);
    run_step("a timed cond wait, first on its worker", step_first_cond);
    run_step("a timed sem acquire, first on its worker", step_first_sem);
    run_step("a timed rwlock read lock, first on its worker", step_first_rwlock);
    run_step("a timed barrier wait, first on its worker", step_first_barrier);
    run_step("a timed receive and send, first on its worker", step_first_chan);
    run_step("a timed select, first on its worker", step_first_select);
    run_step("a timed read, first on its worker", step_first_fd);
    run_step("a timed join, first on its worker", step_first_join);
    /* last: two workers make some allocations in an order that varies, and would shift the numbers of
     * every one that came after */
    run_step("weft_run on two workers (a restart)", step_run_b);
    atomic_store(&cur_step, -1);
}

/* ------------------------------------------------------------------------------------------------ */
/* One run in a child process                                                                        */

/* What a child tells the test, in memory shared with it. */
typedef struct {
    long events;            /* the counting run: K */
    long blocks, maps;      /* the counting run: what was left live at the end */
    int guard_install;      /* the counting run: which stack guards the process uses */
    struct {
        bool fired, reported;
        int kind;
        size_t size;
        uintptr_t site;
        const char *step;   /* a string literal: the same address in the test and every child */
    } run[EVENTS_MAX + 1];
} shared_t;

static shared_t *sh;

enum { EXIT_WRONG = 1, EXIT_LEAK = 2, EXIT_LSAN = 4, EXIT_CHECKED = 16 }; /* 16 | what was wrong */

/* Check the results of the script just run: every step succeeded, but the one in which the failed
 * event came, which succeeded too (a fallback did the job) or failed with that event's error. */
static bool check_run(bool armed, long n)
{
    bool ok = atomic_exchange(&wrong, 0) == 0;
    bool fired = armed && atomic_load(&F.fired);
    for (int i = 0; i < nsteps; i++) {
        int r = steps[i].result;
        bool here = fired && F.fired_step == i;
        if (r == 0 || (here && r == fired_err()))
            continue;
        printf("  %s: step \"%s\" returned %d (%s)%s\n", armed ? "with the failure" : "with no failure",
               steps[i].name, r, r == BAD_TWICE ? "two calls failed" : weft_err_name(r),
               fired ? (here ? "" : ", but the failure came in another step") : ", and nothing failed");
        ok = false;
    }
    if (armed && n > 0) {
        sh->run[n].fired = fired;
        if (fired) {
            sh->run[n].kind = F.fired_kind;
            sh->run[n].size = F.fired_size;
            sh->run[n].site = F.fired_site;
            sh->run[n].step = F.fired_step >= 0 ? steps[F.fired_step].name : "(between steps)";
            sh->run[n].reported = F.fired_step >= 0 && steps[F.fired_step].result != 0;
        }
    }
    return ok;
}

static void print_log(long k)
{
    printf("the run with no failure made %ld allocations:\n", k);
    for (long i = 0; i < k && i < EVENTS_MAX; i++)
        printf("  %4ld  %-14s %8zu bytes  at +%#lx  in \"%s\"\n", i + 1, ev_names[evlog[i].kind], evlog[i].size,
               (unsigned long)evlog[i].site, evlog[i].step >= 0 ? steps[evlog[i].step].name : "(between steps)");
}

/* Descriptors are never freed, only reused: one that is never given back is a leak that neither the
 * block count nor LSan sees. */
static void count_in_use(weft__fiber *f, void *arg)
{
    weft__tsan_internal_begin();
    bool free_ = f->kind == WEFT__KIND_FREE;
    weft__tsan_internal_end();
    *(long *)arg += !free_;
}

static long descs_in_use(void)
{
    long n = 0;
    weft__desc_each(count_in_use, &n);
    return n;
}

static __attribute__((noinline)) void plant_leak(void)
{
    void *volatile p = malloc(48); /* through the wrapper: counted */
    (void)p;
}

static __attribute__((noinline)) void scrub_stack(void)
{
    volatile char junk[4096];
    memset((char *)junk, 0, sizeof junk);
}

/* The child: the script with event n failing (0: none, -1: none, and leak a block at the end), then
 * again with nothing failing. */
static void child(void *arg)
{
    long n = (long)(intptr_t)arg;
    F.fail_at = n > 0 ? n : 0;
    F.log = n == 0;
    int status = 0;
    atomic_store(&F.counting, 1);
    script();
    atomic_store(&F.counting, 0);
    long k = atomic_load(&F.events);
    if (!check_run(true, n))
        status |= EXIT_WRONG;
    script();
    if (!check_run(false, n))
        status |= EXIT_WRONG;
    if (n == -1) {
        plant_leak();
        scrub_stack();
    }
    /* a fallback that lasts: stack guards of the other kind for the rest of the process */
    if (n != 0 && weft__stack_guard_install_works() != sh->guard_install) {
        printf("  the stack guards are %s, where the run with no failure had %s\n",
               weft__stack_guard_install_works() ? "guard installs" : "mprotect",
               sh->guard_install ? "guard installs" : "mprotect");
        status |= EXIT_WRONG;
    }
    if (n == 0) {
        print_log(k);
        sh->guard_install = weft__stack_guard_install_works();
        sh->events = k;
        sh->blocks = atomic_load(&F.blocks);
        sh->maps = atomic_load(&F.maps);

    } else if (atomic_load(&F.blocks) != sh->blocks || atomic_load(&F.maps) != sh->maps) {
        printf("  leak: %ld blocks and %ld mappings live at the end, where the run with no failure left %ld and "
               "%ld\n",
               atomic_load(&F.blocks), atomic_load(&F.maps), sh->blocks, sh->maps);
        status |= EXIT_LEAK;
    }
    if (descs_in_use() != 1) { /* this thread's own, for its joins */
        printf("  leak: %ld descriptors in use at the end, where only this thread's own should be\n", descs_in_use());
        status |= EXIT_LEAK;
    }
#if WEFT_ASAN
    if (__lsan_do_recoverable_leak_check())
        status |= EXIT_LSAN;
#endif
    fflush(stdout);
    fflush(stderr);
    _exit(EXIT_CHECKED | status);
}

static char out[1 << 18];

#define CHILD_TIMEOUT 30
#define SAMPLED 30 /* Ns run under TSan and qemu */

static int run_child(long n)
{
    return runner_capture(child, (void *)(intptr_t)n, out, sizeof out, CHILD_TIMEOUT);
}

static const char *describe(int status)
{
    static char b[64];
    if (status < 0)
        return "could not run";
    if (WIFSIGNALED(status))
        snprintf(b, sizeof b, "%s (signal %d)", strstr(out, "[runner: killed after") ? "hung" : "crashed",
                 WTERMSIG(status));
    else if ((WEXITSTATUS(status) & ~7) != EXIT_CHECKED)
        snprintf(b, sizeof b, "exit %d", WEXITSTATUS(status)); /* an assertion, or a sanitizer's report */
    else
        snprintf(b, sizeof b, "%s%s%s", WEXITSTATUS(status) & EXIT_WRONG ? "wrong outcome " : "",
                 WEXITSTATUS(status) & EXIT_LEAK ? "leak " : "", WEXITSTATUS(status) & EXIT_LSAN ? "LSan leak " : "");
    return b;
}

static void setup_shared(void)
{
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    int st = run_child(0);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == EXIT_CHECKED))
        FAIL("the run with no failure: %s\n%s", describe(st), out);
    printf("%s", out);
}

/* The steps that must each have reported at least one failure when every N ran: so that a wrap that
 * does not reach weft, or a script that stopped allocating, cannot pass unseen. */
static const char *const must_report[] = {
    "weft_start",
    "spawn and join from a thread outside the runtime",
    "spawn, join, detach",
    "channels and select",
    "72 timed waits at once, and a sleep",
    "read, write, writev, fd_wait, close",
    "parallel for and reduce, one worker",
    "fiber-local storage",
    "a sharded counter",
    "weft_thread_spawn",
    "weft_run on two workers (a restart)",
    "a timed mutex lock, first on its worker",
    "a timed cond wait, first on its worker",
    "a timed sem acquire, first on its worker",
    "a timed rwlock read lock, first on its worker",
    "a timed barrier wait, first on its worker",
    "a timed receive and send, first on its worker",
    "a timed select, first on its worker",
    "a timed read, first on its worker",
    "a timed join, first on its worker",
};

TEST_TIMEOUT(every_failed_allocation_is_reported_and_leaks_nothing, 1200)
{
    setup_shared();
    long k = sh->events;
    ASSERT_GT(k, 40);
    ASSERT_LE(k, EVENTS_MAX);
    const char *s = getenv("WEFT_TEST_SCALE");
    double scale = s && atof(s) > 0 ? atof(s) : 1.0;
    long stride = scale >= 0.2 ? 1 : k / SAMPLED + 1;
    int failures = 0;
    for (long n = 1; n <= k && failures < 5; n = n < k && n + stride > k ? k : n + stride) {
        int st = run_child(n);
        bool said = true; /* what cannot be returned is said on stderr, by name */
        if (sh->run[n].fired && sh->run[n].kind == EV_GETATTR && strcmp(sh->run[n].step, "weft_thread_spawn") == 0)
            said = strstr(out, "weft: thread \"thread\" (id ") && strstr(out, "could not tell where its stack is");
        if (WIFEXITED(st) && WEXITSTATUS(st) == EXIT_CHECKED && said)
            continue;
        printf("failing allocation %ld of %ld: %s%s\n%s\n", n, k, describe(st), said ? "" : "no message", out);
        failures++;
    }
    printf("where each failure went (allocation, what, size, where in the program, the step it came in):\n");
    for (long n = 1; n <= k; n++) {
        if (!sh->run[n].fired)
            continue;
        printf("  %4ld  %-14s %8zu  +%#-8lx  %s: %s\n", n, ev_names[sh->run[n].kind], sh->run[n].size,
               (unsigned long)sh->run[n].site, sh->run[n].step, sh->run[n].reported ? "reported" : "absorbed");
    }
    ASSERT_EQ(failures, 0);
    if (stride == 1) {
        for (size_t i = 0; i < sizeof must_report / sizeof *must_report; i++) {
            bool seen = false;
            for (long n = 1; n <= k && !seen; n++)
                seen = sh->run[n].fired && sh->run[n].reported && strcmp(sh->run[n].step, must_report[i]) == 0;
            if (!seen)
                FAIL("no failed allocation was reported by the step \"%s\"", must_report[i]);
        }
    }
}

/* The leak checks above can fail: a block leaked at the end of a run with no failure is seen by the
 * count, and under ASan by LeakSanitizer too. */
TEST(the_leak_checks_see_a_planted_leak)
{
    setup_shared();
    int st = run_child(-1);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), EXIT_CHECKED | EXIT_LEAK | (WEFT_ASAN ? EXIT_LSAN : 0));
}

/* A long run of spawns that fail for want of a descriptor slab, as a program that retries in a loop
 * makes: once memory is back, spawning works again. */
static void spawn_after_failures(void *arg)
{
    weft_config_t c = {.workers = 1, .stuck_us = -1};
    ASSERT_OK(weft_start(&c));
    weft_fiber_t f;
    atomic_store(&F.fail_all, 1);
    for (long i = 0; i < 70000; i++) /* more than there are slab numbers (65536) */
        ASSERT_ERR(weft_spawn(&f, NULL, add_one, NULL), -ENOMEM);
    atomic_store(&F.fail_all, 0);
    void *res = NULL;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)1));
    ASSERT_OK(weft_join(f, &res));
    ASSERT_EQ((intptr_t)res, 2);
    ASSERT_OK(weft_shutdown());
}

TEST(spawns_work_again_after_a_long_run_of_failed_ones)
{
    int st = runner_capture(spawn_after_failures, NULL, out, sizeof out, CHILD_TIMEOUT);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        FAIL("%s\n%s", describe(st), out);
}
