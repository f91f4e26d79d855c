/*
 * Stack overflow reports, for fibers and for weft's kernel threads.
 *
 * An overflow faults in the guard; the SIGSEGV handler runs on a per-thread alternate stack, finds the
 * stack by the fault's address (the chunk that holds it, the slot in the chunk, the header at the slot's
 * top, which names the fiber), and prints the fiber's name, id and stack size, with how to raise it, then
 * aborts. By address, not by the thread's current fiber: after the monitor hands a worker to a fresh
 * thread, the stuck fiber's thread no longer runs that worker, and in the middle of a switch the worker's
 * current fiber is already the next one. A fault anywhere else is passed on to the handler that was
 * installed before weft's.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"
#include "obs/sanitize.h"

static struct {
    pthread_mutex_t lock;
    int installed;
    struct sigaction old_segv, old_bus; /* the handlers before weft's: faults that are not ours go there */
} ov = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Bounds of a weft kernel thread's own stack, for overflow reports. */
static __thread struct {
    char *lo;
    size_t size, guard;
} tls_thread_stack __attribute__((tls_model("initial-exec")));

/* ------------------------------------------------------------------------------------------------ */
/* Overflow reports                                                                                  */

static size_t fmt_u64(char *buf, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

static size_t fmt_hex(char *buf, uintptr_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    buf[0] = '0';
    buf[1] = 'x';
    for (size_t i = 0; i < n; i++)
        buf[2 + i] = tmp[n - 1 - i];
    return n + 2;
}

typedef struct {
    char buf[1024];
    size_t len;
} msgbuf;

static void put(msgbuf *m, const char *s)
{
    while (*s && m->len < sizeof m->buf)
        m->buf[m->len++] = *s++;
}

static void put_u64(msgbuf *m, uint64_t v)
{
    char t[24];
    size_t n = fmt_u64(t, v);
    for (size_t i = 0; i < n && m->len < sizeof m->buf; i++)
        m->buf[m->len++] = t[i];
}

static void put_hex(msgbuf *m, uintptr_t v)
{
    char t[24];
    size_t n = fmt_hex(t, v);
    for (size_t i = 0; i < n && m->len < sizeof m->buf; i++)
        m->buf[m->len++] = t[i];
}

static void put_size(msgbuf *m, size_t bytes)
{
    if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) {
        put_u64(m, bytes >> 20);
        put(m, " MiB");
    } else if (bytes >= 1024 && bytes % 1024 == 0) {
        put_u64(m, bytes >> 10);
        put(m, " KiB");
    } else {
        put_u64(m, bytes);
        put(m, " bytes");
    }
}

WEFT__NO_TSAN static _Noreturn void report_overflow(const weft__fiber *f, const char *what, char *lo, size_t size,
                                      char *addr)
{
    msgbuf m = {.len = 0};
    put(&m, "weft: ");
    put(&m, what);
    put(&m, " ");
    /* named as weft__label does, which is not async-signal-safe: "name" (id 7), or 7 */
    if (f && (f->flags & WEFT__F_NAMED)) {
        put(&m, "\"");
        put(&m, f->name);
        put(&m, "\" (id ");
        put_u64(&m, f->id);
        put(&m, ") ");
    } else if (f) {
        put_u64(&m, f->id);
        put(&m, " ");
    }
    put(&m, "overflowed its stack of ");
    put_size(&m, size);
    put(&m, " (fault at ");
    put_hex(&m, (uintptr_t)addr);
    put(&m, ", ");
    put_u64(&m, (uint64_t)(lo - addr));
    put(&m, " bytes below the stack).\n");
    if (strcmp(what, "fiber") == 0)
        put(&m, "weft: give it a bigger stack: weft_attr_t.stack_size for this fiber, or "
                "weft_config_t.stack_size / WEFT_STACK_SIZE=<bytes, e.g. 1M> for every fiber.\n");
    else
        put(&m, "weft: give it a bigger stack with weft_attr_t.stack_size.\n");
    ssize_t r = write(STDERR_FILENO, m.buf, m.len);
    (void)r;
    abort();
}

static void chain(int sig, siginfo_t *si, void *uc)
{
    struct sigaction *old = sig == SIGBUS ? &ov.old_bus : &ov.old_segv;
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, si, uc);
    } else if (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN) {
        /* the default action: returning re-runs the faulting instruction, which now kills us */
        signal(sig, SIG_DFL);
    } else {
        old->sa_handler(sig);
    }
}


/* Not instrumented by TSan: it runs inside whichever fiber faulted, and only reads. */
WEFT__NO_TSAN static void on_fault(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    char *addr = si->si_addr;
    weft__stack *s = weft__stack_of_guard(addr);
    /* a fiber that overflowed is running on it: its owner's stack is this one (descriptors are
     * type-stable, so reading a stale owner is safe; a fault in the guard of a stack no fiber runs on is
     * a wild pointer, passed on) */
    if (s && s->owner && s->owner->stack == s)
        report_overflow(s->owner, "fiber", s->lo, s->cls, addr);
    weft__worker *w = weft__tls_worker;
    if (!w && tls_thread_stack.lo) {
        char *lo = tls_thread_stack.lo;
        if (addr < lo && addr >= lo - tls_thread_stack.guard)
            report_overflow(weft__tls_self, "thread", lo, tls_thread_stack.size, addr);
    }
    errno = saved;
    chain(sig, si, uc);
}

void weft__thread_stack_note(weft__fiber *f)
{
    pthread_attr_t a;
    int r = pthread_getattr_np(pthread_self(), &a);
    if (r != 0) {
        /* the C library needs memory to tell a thread where its stack is (ENOMEM), and nothing else
         * tells: the thread runs, but an overflow of its own stack would end the process as a plain
         * SIGSEGV, so say so now, by name */
        char label[64], msg[256];
        weft__tsan_internal_begin();
        weft__label(f, label, sizeof label);
        weft__tsan_internal_end();
        int n = snprintf(msg, sizeof msg,
                         "weft: thread %s: the C library could not tell where its stack is (%s): an overflow of "
                         "its stack will not be reported\n",
                         label, strerror(r));
        if (n > 0)
            fwrite(msg, 1, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1, stderr);
        return;
    }
    void *lo;
    size_t size, guard_size = 0;
    if (pthread_attr_getstack(&a, &lo, &size) == 0) {
        pthread_attr_getguardsize(&a, &guard_size);
        tls_thread_stack.lo = lo;
        tls_thread_stack.size = size;
        tls_thread_stack.guard = guard_size ? guard_size : weft__page_size();
    }
    pthread_attr_destroy(&a);
}

static size_t altstack_size(void)
{
    size_t size = 64 << 10;
    if ((size_t)SIGSTKSZ > size)
        size = SIGSTKSZ;
    return size;
}

/* Made by the thread's creator before the thread exists, so that no memory for it is the creator's
 * error to return, with nothing started: a thread that made its own could only run without one, and
 * an overflow on it would end the process as a bare SIGSEGV. */
void *weft__altstack_new(void)
{
    void *p = mmap(NULL, altstack_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void weft__altstack_install(void *mem)
{
    stack_t ss = {.ss_sp = mem, .ss_size = altstack_size(), .ss_flags = 0};
    sigaltstack(&ss, NULL); /* fails only for a bad size, or on the signal stack itself */
}

void weft__altstack_remove(void *mem)
{
    if (!mem)
        return;
    stack_t ss = {.ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    munmap(mem, altstack_size());
}

void weft__altstack_free(void *mem)
{
    if (mem)
        munmap(mem, altstack_size());
}


/* Install the handler once (every runtime start asks; the first one does it). */
void weft__overflow_install(void)
{
    pthread_mutex_lock(&ov.lock);
    if (!ov.installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &ov.old_segv);
        sigaction(SIGBUS, &sa, &ov.old_bus);
        ov.installed = 1;
    }
    pthread_mutex_unlock(&ov.lock);
}
