/*
 * The park contract: the scheduler's face up, all that a layer above it (src/io, src/sync, src/chan,
 * src/par, and the one waiter, core/wait.h) may use to block and to wake, as Go's runtime/netpoll.go
 * is the face the runtime shows internal/poll. The scheduler's own insides (workers, run queues, the
 * runtime, the monitor, stacks, timers) are core/internal.h, which includes this; no file above
 * includes internal.h.
 *
 * Here: the checks every layer uses (panic, assert, check); why a fiber waits (the wait reasons); the
 * park word and the calls that park and wake through it; the fiber descriptor those calls take; the
 * calling thread's block and the enter/leave pair around runtime code; and what a layer above may ask
 * of the worker it runs on (its running fiber, its index) and of the runtime (how many workers).
 */
#ifndef WEFT_CORE_PARK_H
#define WEFT_CORE_PARK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/sanitize.h"
#include "platform/prim.h"
#include "weft.h"

/* The most workers a runtime runs (weft_start caps them): per-worker tables may be sized by it. */
#define WEFT__MAX_WORKERS 1024
/* The workers of the running runtime, 0 while it is stopped: a copy of the scheduler's count that it
 * writes at start and stop (sched.c), for the layers above, which do not see the runtime's struct. */
extern int weft__nworkers;

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

struct weft__worker;
struct weft__mthread;
struct weft__stack;
struct weft__local;

/*
 * A fiber's descriptor, which every park and wakeup takes. Here because the calls below are inline and
 * read it; its fields are the scheduler's, and a layer above reaches them through the functions in this
 * file (it reads kind, and par/ keeps in_loop, its own). The join word and the flags are internal.h's.
 *
 * Three cache lines, grouped by who touches them when, so that a fiber spawned on one worker and run on
 * another moves as few lines between CPUs as possible: a spawn writes line 0 only; starting, parking and
 * finishing use lines 0 and 1; line 2 is for timers, tools and names.
 */
typedef struct weft__fiber {
    /* -- line 0: spawn, queues, identity, join -- */
    _Alignas(WEFT__CACHELINE) struct weft__fiber *link; /* intrusive: ready/global queues, inbox, free lists */
    weft_fn fn;
    void *arg;
    _Atomic uintptr_t join;       /* the join word (internal.h) */
    uint64_t id;                  /* unique in the process, from 1 */
    _Atomic uint32_t enq_seq;     /* owner's enqueue stamp: picks the older of two queues (wraps) */
    _Atomic uint32_t gen;         /* handle = (gen << 32) | index; gen changes when it is freed */
    uint32_t index;
    uint32_t stack_size;
    _Atomic uint32_t state;       /* weft_state_t, for observers; written by owner and wakers */
    uint8_t kind;                 /* enum weft__kind; fixed */
    uint8_t flags;                /* WEFT__F_* (internal.h) */

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

/* The descriptor of the calling thread context: current fiber, weft thread, or a foreign descriptor
 * created on first use. NULL only when out of memory. */
weft__fiber *weft__self(void);
/* weft__self_if_any (below, inline): the same, but never allocates; NULL on plain foreign threads. */

/* weft_join, deaf to weft_cancel: for a joiner whose frame the joined fiber still uses. */
int weft__join_uncancellable(weft_fiber_t h, void **result);

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
/* A fiber or thread is about to park on an fd, counted among the poller's waiters (io/fd.c,
 * io/fd_select.c): the scheduler makes sure some worker will poll (sched.c). */
void weft__io_waiter_added(void);

/* ------------------------------------------------------------------------------------------------ */
/* The calling thread                                                                                */

/* This thread's hold on its worker (weft__tls_rt_t.own), which the monitor may revoke (internal.h,
 * weft__mthread). */
/* WEFT__M_NONE, zero as every thread-local block starts, is a thread that has no worker (a foreign thread,
 * a weft thread, a worker thread after its loop): weft__enter's fast path, which tests for OWNED, then
 * knows that the thread has a worker, and the rest go through weft__enter_slow. */
enum { WEFT__M_NONE = 0, WEFT__M_OWNED = 1, WEFT__M_REVOKING = 2, WEFT__M_LOST = 3, WEFT__M_ORPHAN = 4,
       WEFT__M_FENCED = 5 };

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
    struct weft__worker *worker; /* set on worker threads only */
    struct weft__mthread *m;  /* ... and their thread record */
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
 * yield writes the word whole instead (1, then 0: sched.c, weft_yield), which starts the count again;
 * it always counts a switch, which the monitor sees as well. */
#define WEFT__DEPTH_MASK 0xffu
#define WEFT__DEPTH_ENTRY 0x100u
#define WEFT__DEPTH(word) ((word)&WEFT__DEPTH_MASK)

struct weft__worker *weft__enter_slow(struct weft__mthread *m) __attribute__((noinline, cold));

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
static inline struct weft__worker *weft__enter(void)
{
    /* Hidden from TSan, as all bookkeeping is: after a hand-off a fiber runs on a thread whose start it
     * has no happens-before edge with, and TSan would take that thread's own words for shared data. */
    weft__tsan_internal_begin();
    /* on threads without a worker, depth counts too, harmlessly, and own is NONE */
    weft__tls_rt_t *t = weft__tls();
    struct weft__worker *w;
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

/*
 * The face of a worker: what a layer above may read of the worker its thread runs (weft__enter's
 * result). The scheduler's weft__worker (internal.h) begins with it, so a worker's address is its
 * face's (C11 6.7.2.1: a pointer to a structure, suitably converted, points to its first member), and
 * reading it costs what reading the worker's own field did.
 */
typedef struct weft__worker_face {
    weft__fiber *cur; /* the running fiber, or the thread's idle context; owner only */
    int index;        /* the worker's place in the runtime's table, from 0; fixed */
} weft__worker_face;

static inline weft__worker_face *weft__face(struct weft__worker *w)
{
    return (weft__worker_face *)(void *)w;
}

/* The index of the worker the caller runs on, -1 on a thread that has none. Read the way the runtime reads
 * it: TSan would see the fibers of a worker share the thread's block and call it a race. */
static inline int weft__worker_index(void)
{
    weft__tsan_internal_begin();
    struct weft__worker *w = weft__enter();
    int i = w ? weft__face(w)->index : -1;
    weft__leave();
    weft__tsan_internal_end();
    return i;
}

/* The calling context's descriptor if it has one: the current fiber, or this thread's (a weft thread,
 * or a foreign thread that waited before); NULL on other plain threads. Never allocates. */
static inline weft__fiber *weft__self_if_any(void)
{
    weft__tsan_internal_begin();
    struct weft__worker *w = weft__enter();
    weft__fiber *f = w ? weft__face(w)->cur : weft__tls_self;
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

#endif /* WEFT_CORE_PARK_H */
