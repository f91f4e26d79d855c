/*
 * Telling ASan, TSan and Valgrind about fibers (docs/design.md, decision 8).
 *
 * A fiber switch moves the CPU to another stack behind the tools' backs. Each tool has its own way to be
 * told, and each must be told at every switch, or it reports false errors (ASan: "stack-buffer-underflow"
 * after a noreturn call on a fiber stack; Valgrind: "client switching stacks?"; TSan: a corrupted shadow
 * stack) and misses real ones.
 *
 *  - ASan: __sanitizer_start_switch_fiber() just before the switch, naming the stack we go to, and
 *    __sanitizer_finish_switch_fiber() just after we arrive. A fiber that is leaving for good passes NULL
 *    as its fake-stack slot so ASan frees its fake stack.
 *  - TSan: one TSan fiber per weft fiber, switched with __tsan_switch_to_fiber(.., no_sync). "no sync"
 *    is deliberate: two fibers of one worker are as concurrent as two threads, and TSan must see a race
 *    between them. The runtime's own bookkeeping, which different fibers of one worker touch in turn, is
 *    hidden from TSan (weft__tsan_internal_begin/end: neither its accesses nor its atomics are seen), and
 *    the happens-before edges that weft promises (spawn -> child start, exit -> join, unpark -> resume,
 *    wait group done -> wait) are stated explicitly with weft__tsan_release/acquire.
 *  - Valgrind: every stack is registered with VALGRIND_STACK_REGISTER while it exists.
 *
 * In a build without the tool, each of these is an empty inline function.
 */
#ifndef WEFT_OBS_SANITIZE_H
#define WEFT_OBS_SANITIZE_H

#include <stddef.h>

#ifndef __has_feature
#define __has_feature(x) 0
#endif

#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define WEFT_ASAN 1
#include <sanitizer/common_interface_defs.h>
#else
#define WEFT_ASAN 0
#endif

#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
#define WEFT_TSAN 1
#include <sanitizer/tsan_interface.h>
/* Exported by the TSan runtime (tsan_interface.cpp, tsan_interface_ann.cpp); no header declares them. */
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
void AnnotateIgnoreSyncBegin(const char *file, int line);
void AnnotateIgnoreSyncEnd(const char *file, int line);
#else
#define WEFT_TSAN 0
#endif

#if defined(WEFT_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#define WEFT_VALGRIND 1
#else
#define WEFT_VALGRIND 0
#endif

/* For code that must not be instrumented by TSan (a signal handler reading runtime state). */
#if WEFT_TSAN
#define WEFT__NO_TSAN __attribute__((no_sanitize("thread")))
#else
#define WEFT__NO_TSAN
#endif

/* Stacks under a sanitizer need room for its redzones and bigger frames. */
#if WEFT_ASAN || WEFT_TSAN
#define WEFT_SAN_STACK_FACTOR 4
#else
#define WEFT_SAN_STACK_FACTOR 1
#endif

/* ---- ASan ---- */

static inline void weft__asan_start_switch(void **fake_stack_save, const void *bottom, size_t size)
{
#if WEFT_ASAN
    __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
    (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

static inline void weft__asan_finish_switch(void *fake_stack_save, const void **bottom_old,
                                            size_t *size_old)
{
#if WEFT_ASAN
    __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
    (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

/* ---- TSan ---- */

static inline void *weft__tsan_current(void)
{
#if WEFT_TSAN
    return __tsan_get_current_fiber();
#else
    return NULL;
#endif
}

static inline void *weft__tsan_create(void)
{
#if WEFT_TSAN
    return __tsan_create_fiber(0);
#else
    return NULL;
#endif
}

static inline void weft__tsan_destroy(void *fiber)
{
#if WEFT_TSAN
    __tsan_destroy_fiber(fiber);
#else
    (void)fiber;
#endif
}

static inline void weft__tsan_switch(void *fiber)
{
#if WEFT_TSAN
    __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync);
#else
    (void)fiber;
#endif
}

static inline void weft__tsan_set_name(void *fiber, const char *name)
{
#if WEFT_TSAN
    __tsan_set_fiber_name(fiber, name);
#else
    (void)fiber, (void)name;
#endif
}

static inline void weft__tsan_release(void *addr)
{
#if WEFT_TSAN
    __tsan_release(addr);
#else
    (void)addr;
#endif
}

static inline void weft__tsan_acquire(void *addr)
{
#if WEFT_TSAN
    __tsan_acquire(addr);
#else
    (void)addr;
#endif
}

/* Hide the runtime's own bookkeeping from TSan (see above). Nests; each context balances its own. */
static inline void weft__tsan_internal_begin(void)
{
#if WEFT_TSAN
    __tsan_ignore_thread_begin();
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
#endif
}

static inline void weft__tsan_internal_end(void)
{
#if WEFT_TSAN
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    __tsan_ignore_thread_end();
#endif
}

/* ---- Valgrind ---- */

static inline unsigned weft__vg_stack_register(void *lo, void *hi)
{
#if WEFT_VALGRIND
    return VALGRIND_STACK_REGISTER(lo, hi);
#else
    (void)lo, (void)hi;
    return 0;
#endif
}

static inline void weft__vg_stack_deregister(unsigned id)
{
#if WEFT_VALGRIND
    VALGRIND_STACK_DEREGISTER(id);
#else
    (void)id;
#endif
}

#endif /* WEFT_OBS_SANITIZE_H */
