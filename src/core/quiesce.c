/*
 * Quiescence: the accounting a shutdown waits on, to know that no fiber is left.
 *
 * THE COUNTERS
 * A shared count of live fibers would bounce between caches on every spawn and every exit, on every
 * worker. So the count is split by who bumps it, and summed only when someone asks:
 *   w->nspawned, w->nexited   fibers spawned on worker w, and fibers that finished on it. Only w's
 *                             owner writes them, a plain load and a release store (no locked
 *                             instruction), on a line of the worker of their own: weft__quiesce_spawned
 *                             and weft__quiesce_exited, inline in internal.h, since spawn and exit
 *                             are hot.
 *   rt.foreign_spawned        fibers spawned from outside the runtime (a plain thread, a weft thread, a
 *                             fiber whose thread lost its worker): rare, so one atomic, seq_cst.
 *   rt.orphans_exited         fibers that finished on a thread that had lost its worker to the monitor,
 *                             counted by that thread as the last thing it does (its fiber's spawn was
 *                             counted where it happened).
 *   rt.foreign_inflight       spawns from outside between their look at the runtime's state and their
 *                             count (weft__foreign_enter, below).
 * A worker's two start at zero with the worker (sched.c); the others, at weft_start (weft__quiesce_reset).
 * weft__live_fibers sums the exits first, then the spawns: a fiber that finished was spawned before it
 * finished, and a fiber spawned after the sums were read was spawned by a fiber that was still alive
 * then, so the difference never reads zero while any fiber lives. A spawn from outside the runtime has
 * no live fiber behind it: it holds off the shutdown on its own, through foreign_inflight.
 *
 * THE WAIT
 * weft_shutdown stores STOPPING and waits here (weft__quiesce_wait): quiesce_wanted set, it sleeps on
 * quiesce_futex until the runtime is quiescent (no fiber lives, no spawn from outside is under way).
 * Whoever may have made it so bumps the futex and wakes it (weft__quiesce_poke):
 *   - a fiber whose exit leaves none alive (weft__quiesce_exited, when quiesce_wanted is set),
 *   - a thread that lost its worker, as it ends,
 *   - the last spawn from outside to leave while a shutdown waits (weft__foreign_leave),
 *   - the deadlock report: a deadlock reported twice during the wait ends it (the fibers are left).
 * An exit stores its count with release and reads quiesce_wanted relaxed, not seq_cst: a full fence on
 * every exit would cost more than it saves, so the wait also counts again every 10 ms, and cannot miss
 * the last exit for longer.
 *
 * Only this file and the inline helpers in internal.h write these counters and quiesce_futex and
 * quiesce_wanted.
 */
#include <errno.h>
#include <stdint.h>

#include "core/internal.h"
#include "obs/sanitize.h"

#define rt (&weft__rt_g)
#define RECOUNT_NS ((int64_t)10 * 1000 * 1000)

void weft__quiesce_reset(void)
{
    atomic_store(&rt->quiesce_wanted, 0);
    atomic_store(&rt->foreign_spawned, 0);
    atomic_store(&rt->orphans_exited, 0);
}

int64_t weft__live_fibers(void)
{
    /* exits first, then spawns: a fiber counted as exited was counted as spawned, so the difference
     * never reads 0 while a fiber lives (the essay above) */
    uint64_t exited = atomic_load_explicit(&rt->orphans_exited, memory_order_seq_cst), spawned = 0;
    for (int i = 0; i < rt->nworkers; i++)
        exited += atomic_load_explicit(&rt->workers[i]->nexited, memory_order_seq_cst);
    for (int i = 0; i < rt->nworkers; i++)
        spawned += atomic_load_explicit(&rt->workers[i]->nspawned, memory_order_seq_cst);
    spawned += atomic_load_explicit(&rt->foreign_spawned, memory_order_seq_cst);
    return (int64_t)(spawned - exited);
}

bool weft__foreign_spawning(void)
{
    return atomic_load_explicit(&rt->foreign_inflight, memory_order_seq_cst) != 0;
}

/* No fiber lives and no spawn from outside is under way. */
static bool quiescent(void)
{
    /* in-flight spawns first: a spawn that leaves has counted its fiber before it leaves */
    if (weft__foreign_spawning())
        return false;
    return weft__live_fibers() == 0;
}

void weft__quiesce_poke(void)
{
    atomic_fetch_add_explicit(&rt->quiesce_futex, 1, memory_order_seq_cst);
    weft__futex_wake(&rt->quiesce_futex, 1);
}

void weft__quiesce_check(void)
{
    if (quiescent())
        weft__quiesce_poke();
}

void weft__quiesce_orphan_exited(void)
{
    atomic_fetch_add_explicit(&rt->orphans_exited, 1, memory_order_seq_cst);
    weft__quiesce_poke();
}

/*
 * A spawn from outside the runtime races a shutdown: the spawner checks that the runtime runs, then
 * counts and queues its fiber; a shutdown that read the counts in between would see no fiber, stop the
 * workers, and the fiber would be lost. So the spawner first announces itself (foreign_inflight, seq_cst)
 * and then reads the state; shutdown first stores STOPPING and then reads foreign_inflight. One of the
 * two sees the other: either the spawner sees STOPPING and refuses, or shutdown waits for it to leave,
 * by which time its fiber is counted.
 */
int weft__foreign_enter(bool live)
{
    for (;;) {
        atomic_fetch_add_explicit(&rt->foreign_inflight, 1, memory_order_seq_cst);
        int s = atomic_load_explicit(&rt->state, memory_order_seq_cst);
        if (WEFT__LIKELY(s == WEFT__RT_RUNNING) || (live && s == WEFT__RT_STOPPING))
            return 0; /* a live caller is counted: the shutdown cannot end before its fiber is too */
        weft__foreign_leave();
        if (s == WEFT__RT_STOPPING)
            return -ESHUTDOWN;
        int r = weft_start(NULL);
        if (r < 0 && r != -EALREADY)
            return r;
    }
}

void weft__foreign_leave(void)
{
    /* only poke the shutdown, which counts for itself: the workers' counters may be gone already (a
     * refused spawn leaves while the shutdown that refused it frees them) */
    if (atomic_fetch_sub_explicit(&rt->foreign_inflight, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&rt->quiesce_wanted, memory_order_seq_cst))
        weft__quiesce_poke();
}

bool weft__quiesce_wait(void)
{
    atomic_store_explicit(&rt->quiesce_wanted, 1, memory_order_seq_cst);
    /* this thread waits in weft now: the deadlock check counts it as idle */
    atomic_fetch_add_explicit(&rt->threads_parked, 1, memory_order_seq_cst);
    uint64_t deadlocks_before = atomic_load_explicit(&rt->deadlocks, memory_order_seq_cst);
    bool abandon = false;
    for (;;) {
        uint32_t v = atomic_load_explicit(&rt->quiesce_futex, memory_order_seq_cst);
        if (quiescent()) {
            weft__tsan_acquire(rt); /* every fiber's end comes before the teardown */
            break;
        }
        /* a deadlock woke every waiter with -EDEADLK; if they went back to sleep and it was reported
         * again, they will never finish: leave them */
        if (atomic_load_explicit(&rt->deadlocks, memory_order_seq_cst) - deadlocks_before >= 2) {
            abandon = true;
            break;
        }
        weft__futex_wait(&rt->quiesce_futex, v, weft__clock_ns() + RECOUNT_NS);
    }
    atomic_fetch_sub_explicit(&rt->threads_parked, 1, memory_order_seq_cst);
    return abandon;
}

void weft__quiesce_end(void)
{
    atomic_store_explicit(&rt->quiesce_wanted, 0, memory_order_seq_cst);
}
