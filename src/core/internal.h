/*
 * The runtime's internal structures, shared by src/core, src/sync and src/obs. Nothing here is public.
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

#include "obs/sanitize.h"
#include "platform/prim.h"
#include "weft.h"

/* The most workers a runtime runs (weft_start caps them): per-worker tables may be sized by it. */
#define WEFT__MAX_WORKERS 1024

#ifndef WEFT_DEBUG
#define WEFT_DEBUG 0
#endif

/* A broken invariant: print what and where, then abort (Go's throw). Never for caller errors. */
_Noreturn void weft__panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define weft__assert(cond)                                                                          \
    do {                                                                                            \
        if (WEFT__UNLIKELY(!(cond)))                                                                \
            weft__panic("weft: assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__);          \
    } while (0)
#if WEFT_DEBUG >= 2
#define weft__dassert(cond) weft__assert(cond)
#else
#define weft__dassert(cond) ((void)0)
#endif
/* WEFT_DEBUG 3: full invariant checks (mimalloc's _mi_page_is_valid): a checker walks a whole
 * structure (a waiter list, a timer heap, an fd's descriptor) after each change to it and aborts with
 * what it found broken. Costly (a walk per change); `make test` runs the stress tests with them on. */
#if WEFT_DEBUG >= 3
#define weft__check(valid) weft__assert(valid)
#else
#define weft__check(valid) ((void)(0 && (valid))) /* never run; its checker counts as used */
#endif
/* A checker walks at most this many entries of a long structure, so the stress tests stay quick. */
#define WEFT__CHECK_MAX 4096u

/* ------------------------------------------------------------------------------------------------ */
/* Fiber descriptors                                                                                 */

enum weft__kind {
    WEFT__KIND_FIBER = 0,   /* a fiber on a worker */
    WEFT__KIND_THREAD = 1,  /* a kernel thread from weft_thread_spawn */
    WEFT__KIND_FOREIGN = 2, /* any other thread, when it needs to wait on something weft owns */
    WEFT__KIND_SCHED = 3,   /* a worker's own thread context: runs the idle loop, never user code */
    WEFT__KIND_FREE = 4,    /* in a free list: no handle names it */
};

/* Why a fiber waits, with the name dumps, traces and the deadlock report show (Go's waitReasonStrings):
 * one list, so a reason cannot lose its name. */
#define WEFT__WAIT_REASONS(X)                                                                       \
    X(NONE, "")                                                                                     \
    X(SLEEP, "sleep")                                                                               \
    X(JOIN, "join")                                                                                 \
    X(WAITGROUP, "wait group")                                                                      \
    X(SHUTDOWN, "shutdown")                                                                         \
    X(IO_READ, "IO wait (read)")                                                                    \
    X(IO_WRITE, "IO wait (write)")                                                                  \
    X(BLOCKING, "blocking call")                                                                    \
    X(MUTEX, "mutex")                                                                               \
    X(RWLOCK_READ, "rwlock (read)")                                                                 \
    X(RWLOCK_WRITE, "rwlock (write)")                                                               \
    X(COND, "condition variable")                                                                   \
    X(SEM, "semaphore")                                                                             \
    X(ONCE, "once")                                                                                 \
    X(BARRIER, "barrier")                                                                           \
    X(LATCH, "latch")                                                                               \
    X(CHAN_SEND, "chan send")                                                                       \
    X(CHAN_RECV, "chan receive")                                                                    \
    X(SELECT, "select")                                                                             \
    X(SELECT_NONE, "select (no cases)") /* a select with no case that can be ready: its deadline */

enum weft__wait_reason {
#define WEFT__WAIT_ENUM(name, text) WEFT__WAIT_##name,
    WEFT__WAIT_REASONS(WEFT__WAIT_ENUM)
#undef WEFT__WAIT_ENUM
    WEFT__WAIT_REASONS_
};
const char *weft__wait_reason_name(unsigned reason);

/*
 * The park word: one atomic uint32 per descriptor that decides every wakeup race.
 *   bits 0-1: WEFT__PW_RUNNING (not waiting), WEFT__PW_WAITING, WEFT__PW_WOKEN
 *   bits 2-3: why it was woken (WEFT__PW_OK, WEFT__PW_TIMEOUT, WEFT__PW_CANCELED, WEFT__PW_DEADLOCK)
 *   bits 4-31: a sequence number, new for every wait.
 * A waiter publishes the token (the sequence) of its wait; a waker wins the wakeup with one CAS from
 * (token, WAITING) to (token, WOKEN, why). A token from an earlier wait never matches, so a late waker
 * cannot wake an unrelated later wait, even of a reused descriptor.
 */
enum { WEFT__PW_RUNNING = 0, WEFT__PW_WAITING = 1, WEFT__PW_WOKEN = 2 };
enum { WEFT__PW_OK = 0, WEFT__PW_TIMEOUT = 1, WEFT__PW_CANCELED = 2, WEFT__PW_DEADLOCK = 3 };
#define WEFT__PW_WORD(seq, why, st) (((uint32_t)(seq) << 4) | ((uint32_t)(why) << 2) | (uint32_t)(st))
#define WEFT__PW_SEQ(w) ((w) >> 4)
#define WEFT__PW_WHY(w) (((w) >> 2) & 3u)
#define WEFT__PW_STATE(w) ((w)&3u)

/* The join word: who finishes first, the fiber or its joiner, decides with one exchange. */
#define WEFT__JW_DONE ((uintptr_t)1)     /* the fiber has finished and published its result */
#define WEFT__JW_DETACHED ((uintptr_t)2) /* nobody will join: the fiber frees itself */
#define WEFT__JW_CLAIMED ((uintptr_t)3)  /* a joiner or detach took the finished fiber */
/* any other non-zero value: the joiner's wait node (core/wait.h; aligned, so its low bits are zero) */

struct weft__worker;
struct weft__stack;

/* Descriptor flags (weft__fiber.flags). */
enum { WEFT__F_DETACHED = 1u << 0, /* spawned with WEFT_DETACHED */
       WEFT__F_NAMED = 1u << 1,     /* name[] holds its name; otherwise it has none */
       WEFT__F_ORPHAN = 1u << 2 };  /* a fiber that kept its thread after a hand-off (kind THREAD now) */

/*
 * Three cache lines, grouped by who touches them when, so that a fiber spawned on one worker and run on
 * another moves as few lines between CPUs as possible: a spawn writes line 0 only; starting, parking and
 * finishing use lines 0 and 1; line 2 is for timers, tools and names.
 */
typedef struct weft__fiber {
    /* -- line 0: spawn, queues, identity, join -- */
    _Alignas(WEFT__CACHELINE) struct weft__fiber *link; /* intrusive: ready/global queues, inbox, free lists */
    weft_fn fn;
    void *arg;
    _Atomic uintptr_t join;       /* the join word (above) */
    uint64_t id;                  /* unique in the process, from 1 */
    _Atomic uint32_t enq_seq;     /* owner's enqueue stamp: picks the older of two queues (wraps) */
    _Atomic uint32_t gen;         /* handle = (gen << 32) | index; gen changes when it is freed */
    uint32_t index;
    uint32_t stack_size;
    _Atomic uint32_t state;       /* weft_state_t, for observers; written by owner and wakers */
    uint8_t kind;                 /* enum weft__kind; fixed */
    uint8_t flags;                /* WEFT__F_* */

    /* -- line 1: running, parking, finishing (owner worker once it started) -- */
    _Alignas(WEFT__CACHELINE) void *sp; /* saved stack pointer while suspended; a weft thread's signal
                                         * stack until the thread takes it as it starts */
    struct weft__worker *worker;  /* worker it runs on; set when it starts, fixed after */
    struct weft__stack *stack;    /* NULL until it starts (stacks are allocated lazily) */
    void *result;                 /* written by the fiber before it publishes WEFT__JW_DONE */
    struct weft__local *locals;   /* fiber-local storage: lazily allocated, the fiber only */
    _Atomic uint32_t park;        /* the park word (above); futex word for thread kinds */
    uint32_t timer_idx;           /* index in the owner's timer heap, or WEFT__TIMER_NONE */
    int start_err;                /* < 0 when it could not start (no stack): joiners get it */
    uint16_t wait_reason;         /* enum weft__wait_reason; written by the fiber itself */
    uint8_t in_loop;              /* > 0 while it runs a parallel loop's body; the fiber itself */
    _Atomic uint32_t cancel_gen;  /* == gen: weft_cancel asked this fiber to stop waiting (any thread) */

    /* -- line 2: timers, tools, name -- */
    _Alignas(WEFT__CACHELINE) int64_t timer_when; /* deadline of the current wait; owner */
    const void *wait_obj;         /* what it waits on (for dumps) */
    void *asan_fake_stack;        /* ASan's fake stack while suspended */
    void *tsan_fiber;             /* TSan's fiber, created when it starts */
    char name[32];                /* valid when flags has WEFT__F_NAMED */
} weft__fiber;

_Static_assert(sizeof(weft__fiber) == 3 * WEFT__CACHELINE, "weft__fiber should be three cache lines");

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
/* weft_join, deaf to weft_cancel: for a joiner whose frame the joined fiber still uses. */
int weft__join_uncancellable(weft_fiber_t h, void **result);
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
/* The descriptor of the calling thread context: current fiber, weft thread, or a foreign descriptor
 * created on first use. NULL only when out of memory. */
weft__fiber *weft__self(void);
/* weft__self_if_any (below, inline): the same, but never allocates; NULL on plain foreign threads. */

/* ------------------------------------------------------------------------------------------------ */
/* Parking (sched.c): the primitive every blocking call is built on.                                */
/*
 *   uint32_t tok = weft__park_prepare(self, reason, obj);  // now WAITING
 *   ... publish (self, tok) where a waker finds it, release your lock ...
 *   int r = weft__park(self, tok, deadline);               // 0, -ETIMEDOUT or -ECANCELED
 *
 *   waker: weft__unpark(f, tok, WEFT__PW_OK) -> true if this call won the wakeup.
 *
 * Works for every kind: a fiber gives its worker to other fibers, a thread sleeps on a futex.
 */
/* weft__park_prepare: below, inline. */
int weft__park(weft__fiber *self, uint32_t tok, int64_t deadline);
/* The same, deaf to weft_cancel: for the rare wait that must last until its waker comes, because the
 * waker still uses the waiter's memory (a blocking call that is running). */
int weft__park_uncancellable(weft__fiber *self, uint32_t tok, int64_t deadline);
/* Whether weft_cancel has been called on f (for f itself to look at). */
static inline bool weft__cancelled(weft__fiber *f)
{
    return atomic_load_explicit(&f->cancel_gen, memory_order_relaxed) ==
           atomic_load_explicit(&f->gen, memory_order_relaxed);
}
bool weft__unpark(weft__fiber *f, uint32_t tok, unsigned why);
/* The same for a batch of wakeups (timers, wake-all): woken fibers on this worker queue in order at the
 * back of the ready queue instead of jumping ahead through runnext. */
bool weft__unpark_fifo(weft__fiber *f, uint32_t tok, unsigned why);
/* Undo a prepared wait that was never published (so nobody can have woken it). */
void weft__park_cancel(weft__fiber *self, uint32_t tok);

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
 * read as zero after a process-wide barrier (membarrier), see weft__enter.
 */
/* WEFT__M_NONE, zero as every thread-local block starts, is a thread that has no worker (a foreign thread,
 * a weft thread, a worker thread after its loop): weft__enter's fast path, which tests for OWNED, then
 * knows that the thread has a worker, and the rest go through weft__enter_slow. */
enum { WEFT__M_NONE = 0, WEFT__M_OWNED = 1, WEFT__M_REVOKING = 2, WEFT__M_LOST = 3, WEFT__M_ORPHAN = 4,
       WEFT__M_FENCED = 5 };

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
    weft__fiber *cur;                    /* running fiber, or idle */
    weft__fiber *runnext;                /* fiber just woken here: runs next (hand-off latency) */
    weft__fiber *ready_head, *ready_tail;/* started fibers ready to run, FIFO */
    weft__stack *dead_stack;             /* stack of the fiber that just finished: freed after the switch */
    void *dead_tsan;                     /* ... and its TSan fiber */
    void *dead_sp;                       /* where a finishing fiber's last switch saves its sp */
    uint32_t runnext_streak;             /* consecutive runnext picks */
    uint32_t enq_seq;
    bool spinning;                       /* counted in rt.nspinning */
    uint32_t nresident;                  /* started fibers living here, not finished: when none is
                                          * runnable, some are parked and may be woken */
    uint32_t rng;
    int index;
    weft__stack *stack_free;             /* cache of default-size stacks */
    uint32_t stack_nfree;
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

    /* -- written by the owner, read by anyone (shutdown accounting) -- */
    _Alignas(WEFT__CACHELINE) _Atomic uint64_t nspawned;
    _Atomic uint64_t nexited;

    weft__deque dq;

    /* -- wakeups from other threads: MPSC stack, the owner takes all at once -- */
    _Alignas(WEFT__CACHELINE) _Atomic(weft__fiber *) inbox;

    /* -- sleeping -- */
    _Alignas(WEFT__CACHELINE) _Atomic uint32_t sleeping; /* 1 while parked or about to park */
    _Atomic uint32_t in_poll; /* 1 while asleep in the poller: wake it through weft__poll_interrupt */
    _Atomic uint32_t futex;  /* 0 asleep; 1 woken for its inbox or a stop; 2 woken to look for work */
} weft__worker;

/* The runtime's thread-local state, in one block.
 *
 * A fiber's thread can change under it: when the monitor hands a stuck worker to a fresh thread, the
 * worker's other fibers resume there. A compiler that computed a thread-local address before a call that
 * switches (TSan builds do, for every atomic; aarch64 does for any access) may use it after, on the old
 * thread's block. So the runtime reaches its block only through weft__tls(), which reads the thread
 * pointer anew each time: a volatile asm, never merged with another or moved across a call. */
typedef struct weft__tls_rt_t {
    _Atomic uint32_t depth;   /* runtime code running on this thread (weft__enter): the nesting in the
                               * low bits (DEPTH_MASK), a count of entries in the others (DEPTH_ENTRY) */
    _Atomic uint32_t own;     /* M_*: this thread's hold on its worker (weft__enter) */
    weft__worker *worker;     /* set on worker threads only */
    weft__mthread *m;         /* ... and their thread record */
    weft__fiber *self;        /* weft threads and foreign threads */
} weft__tls_rt_t;
extern __thread weft__tls_rt_t weft__tls_rt;

#if defined(__x86_64__)
static inline weft__tls_rt_t *weft__tls(void)
{
    weft__tls_rt_t *p;
    __asm__ volatile("movq %%fs:0, %0\n\taddq weft__tls_rt@gottpoff(%%rip), %0" : "=r"(p));
    return p;
}
#elif defined(__aarch64__)
static inline weft__tls_rt_t *weft__tls(void)
{
    weft__tls_rt_t *p;
    uintptr_t off;
    __asm__ volatile("mrs %0, tpidr_el0\n\t"
                     "adrp %1, :gottprel:weft__tls_rt\n\t"
                     "ldr %1, [%1, #:gottprel_lo12:weft__tls_rt]\n\t"
                     "add %0, %0, %1"
                     : "=&r"(p), "=&r"(off));
    return p;
}
#else
weft__tls_rt_t *weft__tls(void) __attribute__((noinline)); /* sched.c: a call nothing can merge */
#endif

#define weft__tls_worker (weft__tls()->worker)
#define weft__tls_depth (weft__tls()->depth)
#define weft__tls_own (weft__tls()->own)
#define weft__tls_m (weft__tls()->m)
#define weft__tls_self (weft__tls()->self)

/* The depth word: weft__enter adds DEPTH_ENTRY + 1, weft__leave takes 1 away, so the bits above
 * DEPTH_MASK count every entry into the runtime (wrapping): the monitor tells from them that a fiber
 * which never switches still keeps calling weft (spawning in a loop, say), and so is not stuck. A
 * yield writes the word whole instead (1, then 0: sched.c, yield_enter), which starts the count again;
 * it always counts a switch, which the monitor sees as well. */
#define WEFT__DEPTH_MASK 0xffu
#define WEFT__DEPTH_ENTRY 0x100u
#define WEFT__DEPTH(word) ((word)&WEFT__DEPTH_MASK)

extern _Atomic int weft__enter_fence; /* no membarrier here: new threads start WEFT__M_FENCED (monitor.c) */
weft__worker *weft__enter_slow(weft__mthread *m) __attribute__((noinline, cold));

/*
 * Enter runtime code that uses the calling thread's worker; returns the worker, or NULL on a thread that
 * has none (foreign, weft thread, or a worker thread that lost its worker to the monitor: it then runs on
 * as a plain thread). Every weft__enter is paired with a weft__leave, nested pairs are fine.
 *
 * The protocol with the monitor (monitor.c, revoke): this thread stores depth and then loads `own`; the
 * monitor stores own = REVOKING, runs membarrier (a full barrier on every thread of the process, itself
 * included), and then loads depth. So either the monitor sees a depth word other than the one it judged
 * (in runtime code now, or it entered since) and gives up, or this thread sees REVOKING and waits for
 * the verdict. A compiler barrier is all this side needs.
 */
static inline weft__worker *weft__enter(void)
{
    /* Hidden from TSan, as all bookkeeping is: after a hand-off a fiber runs on a thread whose start it
     * has no happens-before edge with, and TSan would take that thread's own words for shared data. */
    weft__tsan_internal_begin();
    /* on threads without a worker, depth counts too, harmlessly, and own is NONE */
    weft__tls_rt_t *t = weft__tls();
    weft__worker *w;
    uint32_t d = atomic_load_explicit(&t->depth, memory_order_relaxed);
    atomic_store_explicit(&t->depth, d + WEFT__DEPTH_ENTRY + 1, memory_order_relaxed);
    if (WEFT__LIKELY(WEFT__DEPTH(d) == 0)) {
        atomic_signal_fence(memory_order_seq_cst);
        if (WEFT__UNLIKELY(atomic_load_explicit(&t->own, memory_order_relaxed) != WEFT__M_OWNED)) {
            w = weft__enter_slow(t->m);
            weft__tsan_internal_end();
            return w;
        }
    }
    w = t->worker;
    weft__tsan_internal_end();
    return w;
}

static inline void weft__leave(void)
{
    weft__tsan_internal_begin();
    /* release: what the runtime did here is visible to whoever takes the worker after reading 0 */
    weft__tls_rt_t *t = weft__tls();
    uint32_t d = atomic_load_explicit(&t->depth, memory_order_relaxed);
    atomic_store_explicit(&t->depth, d - 1, memory_order_release);
    weft__tsan_internal_end();
}

/* Is the caller running on a worker (a fiber, or the idle loop)? */
static inline bool weft__on_worker(void)
{
    weft__tsan_internal_begin();
    bool on = weft__enter() != NULL;
    weft__leave();
    weft__tsan_internal_end();
    return on;
}

/* The index of the worker the caller runs on, -1 on a thread that has none. Read the way the runtime reads
 * it: TSan would see the fibers of a worker share the thread's block and call it a race. */
static inline int weft__worker_index(void)
{
    weft__tsan_internal_begin();
    weft__worker *w = weft__enter();
    int i = w ? w->index : -1;
    weft__leave();
    weft__tsan_internal_end();
    return i;
}

/* The calling context's descriptor if it has one: the current fiber, or this thread's (a weft thread,
 * or a foreign thread that waited before); NULL on other plain threads. Never allocates. */
static inline weft__fiber *weft__self_if_any(void)
{
    weft__tsan_internal_begin();
    weft__worker *w = weft__enter();
    weft__fiber *f = w ? w->cur : weft__tls_self;
    weft__leave();
    weft__tsan_internal_end();
    return f;
}

/* Start a wait: the fiber is WAITING under a fresh token, which its waker must present. */
static inline uint32_t weft__park_prepare(weft__fiber *self, unsigned reason, const void *obj)
{
    weft__tsan_internal_begin();
    uint32_t pw = atomic_load_explicit(&self->park, memory_order_relaxed);
    uint32_t seq = (WEFT__PW_SEQ(pw) + 1) & 0x0fffffffu;
    self->wait_reason = (uint16_t)reason;
    self->wait_obj = obj;
    atomic_store_explicit(&self->state, WEFT_WAITING, memory_order_relaxed);
    atomic_store_explicit(&self->park, WEFT__PW_WORD(seq, WEFT__PW_OK, WEFT__PW_WAITING), memory_order_relaxed);
    weft__tsan_internal_end();
    return seq;
}

/* The runtime, one per process. */
enum { WEFT__RT_STOPPED = 0, WEFT__RT_RUNNING = 1, WEFT__RT_STOPPING = 2 };
typedef struct weft__rt {
    _Atomic int state;
    int nworkers;
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

    _Alignas(WEFT__CACHELINE) _Atomic uint64_t foreign_spawned;
    _Atomic uint64_t orphans_exited;  /* fibers that ended on a thread that had lost its worker */
    _Atomic int64_t threads_parked;   /* threads (not fibers) waiting in weft right now with no deadline:
                                       * the deadlock check counts them as idle */
    _Atomic uint64_t deadlocks;       /* deadlocks reported since the runtime started */
    _Atomic int64_t foreign_inflight; /* spawns from outside the runtime between their state check and
                                       * their count: shutdown waits for them (weft__foreign_enter) */
    _Atomic uint32_t quiesce_futex;  /* bumped when the last fiber may have finished */
    _Atomic int quiesce_wanted;      /* weft_shutdown is waiting */
    _Atomic int stop;                /* workers: leave your loop */
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
bool weft__quiescent(void); /* no fiber lives and no spawn from outside is under way */
int64_t weft__live_fibers(void);
void weft__quiesce_check(void); /* from a fiber: pokes a waiting shutdown when nothing is left */
void weft__quiesce_poke(void);  /* wake a waiting shutdown so that it counts again */
/* A thread outside the runtime is about to spawn: start the runtime if it is stopped, and hold off a
 * shutdown until weft__foreign_leave. -ESHUTDOWN while a shutdown waits, unless `live`: the caller is a
 * fiber that the shutdown waits for (one that kept its thread after a hand-off), which may spawn as
 * every fiber may. */
int weft__foreign_enter(bool live);
void weft__foreign_leave(void);

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
