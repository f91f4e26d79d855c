/*
 * The scheduler's own insides, for src/core alone (and tests that look inside): workers, run queues,
 * the runtime, the monitor, descriptors' pool, stacks, timers, options. Nothing here is public. The
 * part a layer above may use, to park and wake, is core/park.h, which this includes.
 * Every shared field says who may touch it; "owner" means the worker the structure belongs to, running
 * any of its fibers or its scheduler context (they never run at the same time).
 */
#ifndef WEFT_CORE_INTERNAL_H
#define WEFT_CORE_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/park.h"
#include "obs/sanitize.h"
#include "platform/prim.h"
#include "weft.h"

/* ------------------------------------------------------------------------------------------------ */
/* Fiber descriptors (the descriptor itself is park.h's)                                             */

/* The join word: who finishes first, the fiber or its joiner, decides with one exchange. */
#define WEFT__JW_DONE ((uintptr_t)1)     /* the fiber has finished and published its result */
#define WEFT__JW_DETACHED ((uintptr_t)2) /* nobody will join: the fiber frees itself */
#define WEFT__JW_CLAIMED ((uintptr_t)3)  /* a joiner or detach took the finished fiber */
/* any other non-zero value: the joiner's wait node (core/wait.h; aligned, so its low bits are zero) */

/* Descriptor flags (weft__fiber.flags). */
enum { WEFT__F_DETACHED = 1u << 0, /* spawned with WEFT_DETACHED */
       WEFT__F_NAMED = 1u << 1,     /* name[] holds its name; otherwise it has none */
       WEFT__F_ORPHAN = 1u << 2 };  /* a fiber that kept its thread after a hand-off (kind THREAD now) */

static inline const char *weft__name(const weft__fiber *f)
{
    return f->flags & WEFT__F_NAMED ? f->name : "";
}

/* How a message names a fiber or weft thread, after the word "fiber" or "thread": "name" (id 7), or
 * 7 when it has no name (weft.h). Returns what snprintf returns. */
int weft__label(const weft__fiber *f, char *buf, size_t len);

#define WEFT__TIMER_NONE UINT32_MAX

/* Descriptor pool (fiber.c). Descriptors are type-stable: their memory is never returned, so a stale
 * handle always reads a descriptor whose gen has moved on. */
weft__fiber *weft__desc_alloc(struct weft__worker *w);
void weft__desc_free(struct weft__worker *w, weft__fiber *f);
weft__fiber *weft__desc_lookup(weft_fiber_t h); /* NULL for stale or invalid */
weft_fiber_t weft__handle(const weft__fiber *f);
void weft__desc_cache_flush(struct weft__worker *w);
uint64_t weft__next_id(struct weft__worker *w);
void weft__locals_destroy(weft__fiber *f);
/* Publish that f finished (result or start_err set) and wake its joiner, or free it if detached. */
void weft__fiber_publish_done(struct weft__worker *w, weft__fiber *f);
/* Call fn on every descriptor there is (type-stable: any kind, free ones too). */
void weft__desc_each(void (*fn)(weft__fiber *f, void *arg), void *arg);
/* For weft__desc_each: a fiber left behind by a shutdown after a deadlock is finished with -EDEADLK for
 * whoever joins it. */
void weft__desc_abandon(weft__fiber *f, void *unused);

/* ------------------------------------------------------------------------------------------------ */
/* Stacks (stack.c)                                                                                  */

typedef struct weft__stack {
    /* lives at the very top of its own stack memory */
    struct weft__stack *next; /* free-list link */
    char *lo;                 /* lowest usable byte; the guard lies just below */
    uint32_t cls;             /* the page-rounded size it was asked for: its pool */
    uint32_t vg_id;           /* Valgrind's id for the registration */
    struct weft__fiber *owner;/* the fiber it was last given to (start_prepare): for overflow reports */
} weft__stack;

int weft__stack_global_init(void);
void weft__stack_global_fini(void);
weft__stack *weft__stack_get(struct weft__worker *w, size_t size);
void weft__stack_put(struct weft__worker *w, weft__stack *s);
void weft__stack_cache_flush(struct weft__worker *w);
size_t weft__stack_round(size_t size);
int weft__stack_guard_install_works(void); /* 1: MADV_GUARD_INSTALL, 0: mprotect guards */
/* Per-thread alternate signal stack, so that an overflow can be reported: made by the thread's creator
 * (NULL: no memory), installed by the thread, removed (and unmapped) by the thread as it ends; freed by
 * the creator instead when the thread could not be made. */
void *weft__altstack_new(void);
void weft__altstack_install(void *mem);
void weft__altstack_remove(void *mem);
void weft__altstack_free(void *mem);
/* Note the bounds of a kernel thread's own stack for overflow reports. */
void weft__thread_stack_note(weft__fiber *f);
/* The fiber stack whose guard holds addr, or NULL: async-signal-safe, for the fault handler (stack.c). */
weft__stack *weft__stack_of_guard(char *addr);
/* The overflow report's fault handler, installed once (overflow.c). */
void weft__overflow_install(void);

/* ------------------------------------------------------------------------------------------------ */
/* Workers and the scheduler (sched.c)                                                               */

/* Work-stealing deque of fibers that have not started (Chase-Lev). Owner pushes and pops at the bottom
 * (LIFO: depth-first, small working set); thieves take from the top (FIFO: the oldest, the biggest). */
#define WEFT__DEQUE_CAP 256
typedef struct weft__deque {
    _Alignas(WEFT__CACHELINE) _Atomic int64_t top;       /* thieves CAS it */
    _Alignas(WEFT__CACHELINE) _Atomic int64_t bottom;    /* owner writes */
    _Atomic(weft__fiber *) buf[WEFT__DEQUE_CAP];
} weft__deque;

/*
 * A worker thread: the OS thread that runs a worker. One per worker for the runtime's life, unless the
 * monitor finds the worker's fiber stuck (a blocking system call, a long loop) and gives the worker to a
 * fresh thread (monitor.c); the stuck thread then keeps only the fiber it was running.
 *
 * Ownership is decided without fences on the worker's side: runtime code on the thread runs between
 * weft__enter and weft__leave, which keep `depth`; the monitor revokes only a thread whose depth it has
 * read as zero after a process-wide barrier (membarrier), see weft__enter (park.h, with the states
 * WEFT__M_* of the thread's hold on its worker).
 */
typedef struct weft__mthread {
    weft__fiber idle;                    /* this thread's own context: runs the idle loop, never user code */
    struct weft__worker *w;              /* the worker it runs (until WEFT__M_LOST) */
    /* The thread's weft__tls_depth and weft__tls_own, for the monitor: thread-local, so that weft__enter
     * reaches them in one instruction each (through this record it cost 1.5 ns more per yield round
     * trip). The monitor reads depth and writes own through these. */
    _Atomic uint32_t *_Atomic depth;     /* NULL until the thread has started */
    _Atomic uint32_t *_Atomic own;
    weft__fiber *orphan;                 /* with WEFT__M_LOST: the fiber this thread keeps (monitor writes) */
    weft__stack *dead_stack;             /* an orphan's stack, freed by the idle context after its end */
    void *dead_tsan;
    void *dead_sp;
    void *altstack;                      /* its signal stack, made with the record (weft__thread_prepare) */
    const void *stack_lo;                /* the thread's own stack, for ASan */
    size_t stack_size;
    _Atomic uint32_t gate;               /* a new thread waits here before it takes its worker */
    _Atomic int32_t tid;                 /* its kernel thread id, for the monitor (0 until it starts) */
    int stat_fd;                         /* its /proc/thread-self/stat, held for the monitor, or -1 */
} weft__mthread;

typedef struct weft__worker {
    /* -- owner only -- */
    weft__worker_face face;              /* first: cur (running fiber, or idle) and index (park.h) */
    weft__fiber *ready_head, *ready_tail;/* started fibers ready to run, FIFO */
    weft__stack *dead_stack;             /* stack of the fiber that just finished: freed after the switch */
    void *dead_tsan;                     /* ... and its TSan fiber */
    weft__fiber *runnext;                /* fiber just woken here: runs next (hand-off latency) */
    uint32_t runnext_streak;             /* consecutive runnext picks */
    uint32_t enq_seq;
    /* (the line above holds what a yield's fast path reads here but nswitch and fast_until; dead_sp,
     * written only by a finishing fiber's switch, sits below with nresident, which it writes too) */
    bool spinning;                       /* counted in rt.nspinning */
    uint32_t nresident;                  /* started fibers living here, not finished: when none is
                                          * runnable, some are parked and may be woken */
    uint32_t rng;
    uint32_t stack_nfree;                /* stacks in stack_free */
    void *dead_sp;                       /* where a finishing fiber's last switch saves its sp */
    weft__stack *stack_free;             /* cache of default-size stacks */
    weft__fiber *desc_free;              /* cache of free descriptors, for this worker's spawns */
    weft__fiber *desc_out;               /* a batch being filled for the shared pool */
    uint32_t desc_nfree, desc_nout;
    uint64_t id_next, id_end;            /* block of fiber ids */
    weft__fiber **heap;                  /* timers: min-heap on timer_when */
    uint32_t heap_len, heap_cap;
    _Atomic int64_t timer_first;         /* the heap's first deadline, -1 when empty: a copy the owner
                                          * stores for the monitor, which must not read the heap */
    weft__fiber *idle;                   /* the idle context of the thread running it (m->idle) */
    weft__mthread *m;                    /* the thread running it */
    pthread_t thread;                    /* ... joined at shutdown */
    _Atomic uint64_t nswitch;            /* switches so far: the monitor reads it to see a stuck fiber */
    uint64_t fair_at;                    /* nswitch when the next look at the global queue is due */
    uint64_t fast_until;                 /* nswitch until which a yield may skip the full pick
                                          * (sched.c, fast_refresh) */

    /* -- written by the owner, read by anyone (shutdown accounting: quiesce.c) -- */
    _Alignas(WEFT__CACHELINE) _Atomic uint64_t nspawned;
    _Atomic uint64_t nexited;

    weft__deque dq;

    /* -- wakeups from other threads: MPSC stack, the owner takes all at once -- */
    _Alignas(WEFT__CACHELINE) _Atomic(weft__fiber *) inbox;

    /* -- sleeping -- */
    _Alignas(WEFT__CACHELINE) _Atomic uint32_t sleeping; /* 1 while parked or about to park */
    _Atomic uint32_t in_poll; /* 1 while asleep in the poller: wake it through weft__io_interrupt */
    _Atomic uint32_t futex;  /* 0 asleep; 1 woken for its inbox or a stop; 2 woken to look for work */
} weft__worker;

_Static_assert(offsetof(weft__worker, face) == 0, "a worker's address is its face's (park.h)");

extern _Atomic int weft__enter_fence; /* no membarrier here: new threads start WEFT__M_FENCED (monitor.c) */

/* The runtime, one per process. */
enum { WEFT__RT_STOPPED = 0, WEFT__RT_RUNNING = 1, WEFT__RT_STOPPING = 2 };
typedef struct weft__rt {
    _Atomic int state;
    int nworkers;             /* weft__nworkers (park.h) is its copy for the layers above */
    weft__worker **workers;
    size_t stack_size;        /* default fiber stack (usable bytes, page-rounded) */
    int64_t spin_ns;

    /* global queue: spawns from outside the runtime, overflow of full deques */
    /* a ring of fiber pointers, not a linked list: taking a batch copies pointers instead of chasing
     * links through descriptors that another CPU just wrote */
    _Alignas(WEFT__CACHELINE) weft__spinlock gq_lock; /* short sections: copies in and out */
    weft__fiber **gq_ring;
    size_t gq_cap, gq_head;   /* capacity (a power of two), index of the oldest */
    _Atomic int64_t gq_len;

    _Alignas(WEFT__CACHELINE) _Atomic int nspinning;
    _Atomic int nsleeping;
    _Atomic(struct weft__worker *) poller; /* the worker asleep in the poller, if any */

    /* shutdown accounting (quiesce.c): only it and its helpers below write these five */
    _Alignas(WEFT__CACHELINE) _Atomic uint64_t foreign_spawned;
    _Atomic uint64_t orphans_exited;  /* fibers that ended on a thread that had lost its worker */
    _Atomic int64_t foreign_inflight; /* spawns from outside the runtime between their state check and
                                       * their count: shutdown waits for them (weft__foreign_enter) */
    _Atomic uint32_t quiesce_futex;   /* bumped when the last fiber may have finished */
    _Atomic int quiesce_wanted;       /* weft_shutdown is waiting */
    /* the deadlock check's, and the workers' stop */
    _Atomic int64_t threads_parked;   /* threads (not fibers) waiting in weft right now with no deadline:
                                       * the deadlock check counts them as idle */
    _Atomic uint64_t deadlocks;       /* deadlocks reported since the runtime started */
    _Atomic int stop;                 /* workers: leave your loop */
} weft__rt;

extern weft__rt weft__rt_g;

int weft__sched_start(int nworkers);
void weft__sched_stop(void);
/* A thread for worker w (NULL: a spare, given its worker before the release), waiting until
 * weft__thread_release lets it take the worker (go) or end; weft__thread_discard ends it and joins it. */
int weft__thread_prepare(weft__worker *w, weft__mthread **m, pthread_t *t);
void weft__thread_release(weft__mthread *m, pthread_t t, bool go);
void weft__thread_discard(weft__mthread *m, pthread_t t);

/* The monitor (monitor.c) */
void weft__monitor_prepare(int64_t stuck_ns); /* before the workers start (0: no stuck check) */
int weft__monitor_start(void);
void weft__monitor_stop(void);
void weft__monitor_poke(void);
void weft__monitor_worker_woke(void);  /* a worker left its sleep: the monitor may be sleeping deeply */
uint64_t weft__monitor_handoffs(void);
int weft__monitor_spares(void);        /* threads it holds for hand-offs: the deadlock check knows them */
/* A worker thread's own state file for the monitor, opened by the thread before it waits at its gate
 * (-1: none, the stuck check is off or no fd was left), and closed when it ends. */
int weft__monitor_thread_open(void);
void weft__monitor_thread_close(int fd);

/* Deadlocks (deadlock.c), for the monitor */
void weft__deadlock_start(void); /* with the monitor: what the check must hold from the start */
void weft__deadlock_stop(void);
bool weft__deadlock_check(int64_t now); /* true: reported one */
int64_t weft__deadlock_next(int64_t now); /* when to look again with every worker asleep (-1: when one wakes) */

/* Shutdown accounting (quiesce.c, whose essay says who counts what). The counters are written there
 * and by the inline helpers here, which spawn and exit call, nowhere else. */
void weft__quiesce_reset(void); /* weft_start, before any worker: nothing counted, no shutdown waiting */
/* weft_shutdown, once it stored STOPPING: wait until no fiber lives. True when it gave up instead, on
 * fibers that a deadlock reported twice left waiting for good. */
bool weft__quiesce_wait(void);
void weft__quiesce_end(void);   /* weft_shutdown, after the teardown: the wait is over */
int64_t weft__live_fibers(void);
bool weft__foreign_spawning(void); /* a spawn from outside is between its state check and its count */
void weft__quiesce_check(void); /* from a fiber: pokes a waiting shutdown when nothing is left */
void weft__quiesce_poke(void);  /* wake a waiting shutdown so that it counts again */
/* A thread that lost its worker has finished its fiber: the very last thing it does (the shutdown may
 * go on at once). */
void weft__quiesce_orphan_exited(void);
/* A thread outside the runtime is about to spawn: start the runtime if it is stopped, and hold off a
 * shutdown until weft__foreign_leave. -ESHUTDOWN while a shutdown waits, unless `live`: the caller is a
 * fiber that the shutdown waits for (one that kept its thread after a hand-off), which may spawn as
 * every fiber may. */
int weft__foreign_enter(bool live);
void weft__foreign_leave(void);

/* A fiber was spawned: w is the spawning worker (its owner, so a plain load and store), or NULL from
 * outside the runtime (inside weft__foreign_enter). */
static inline void weft__quiesce_spawned(weft__worker *w)
{
    if (w)
        atomic_store_explicit(&w->nspawned, atomic_load_explicit(&w->nspawned, memory_order_relaxed) + 1,
                              memory_order_release);
    else
        atomic_fetch_add_explicit(&weft__rt_g.foreign_spawned, 1, memory_order_seq_cst);
}

/* ... and never queued after all: the fiber never existed. */
static inline void weft__quiesce_unspawned(weft__worker *w)
{
    if (w)
        atomic_store_explicit(&w->nspawned, atomic_load_explicit(&w->nspawned, memory_order_relaxed) - 1,
                              memory_order_release);
    else
        atomic_fetch_sub_explicit(&weft__rt_g.foreign_spawned, 1, memory_order_seq_cst);
}

/* A fiber finished on w (its owner), and a waiting shutdown may have nothing left to wait for. Release,
 * not seq_cst: the shutdown counts again every 10 ms, so it cannot miss the last exit for long, and a
 * full fence on every exit would cost more than it saves. */
static inline void weft__quiesce_exited(weft__worker *w)
{
    atomic_store_explicit(&w->nexited, atomic_load_explicit(&w->nexited, memory_order_relaxed) + 1,
                          memory_order_release);
    if (WEFT__UNLIKELY(atomic_load_explicit(&weft__rt_g.quiesce_wanted, memory_order_relaxed)))
        weft__quiesce_check();
}

/* Make a waiting fiber runnable again (after its park word says WOKEN). `next`: a hand-off, it runs
 * next on its worker if that is this one; otherwise it queues at the back. */
void weft__ready(weft__fiber *f, bool next);
/* Queue a fiber that has not started yet (spawn). -ENOMEM (nothing queued) when the global queue
 * cannot grow. */
int weft__submit_new(weft__worker *w, weft__fiber *f);

/* Timers (timer.c): a min-heap per worker, owner only. */
int weft__timer_add(weft__worker *w, weft__fiber *f);
void weft__timer_del(weft__worker *w, weft__fiber *f);
int weft__timer_run(weft__worker *w, int64_t now); /* fires what is due; returns how many */
static inline int64_t weft__timer_next(const weft__worker *w)
{
    return w->heap_len ? w->heap[0]->timer_when : -1;
}
void weft__timer_fini(weft__worker *w);

/* The runtime's options (options.c): one table of field, variable, default and range. */
enum {
    WEFT__OPT_WORKERS,
    WEFT__OPT_STACK_SIZE,
    WEFT__OPT_SPIN_US,
    WEFT__OPT_BLOCKING_THREADS,
    WEFT__OPT_STUCK_US,
    WEFT__OPTIONS_
};
#define WEFT__OPT_FROM_MACHINE 0 /* a default the machine decides (the worker count) */
typedef struct {
    const char *field;                       /* in weft_config_t */
    const char *env;                         /* its environment variable */
    int64_t dflt;                            /* when neither sets it */
    int64_t min, max;                        /* an environment value outside is ignored */
    bool (*parse)(const char *s, int64_t *v); /* false: it does not parse, and is ignored */
} weft__option;
/* Option i's value: configured (the config field; 0 is unset), else the environment's, else the
 * default. */
int64_t weft__option_value(int i, int64_t configured);
/* The table's row i, or NULL past its end (for the docs test). */
const weft__option *weft__option_info(int i);
#endif /* WEFT_CORE_INTERNAL_H */
