/*
 * Kernel threads, the texts' 1:1 model, behind the same handle as a fiber: weft_thread_spawn starts a
 * plain OS thread running fn(arg); weft_join, weft_detach, weft_fiber_state and the rest work on it
 * exactly as on a fiber, so a program switches models by changing one call.
 *
 * The thread gets a descriptor of kind THREAD. Inside it, blocking weft calls (joins, wait groups,
 * sleeps) block the thread itself, on the descriptor's park word. The pthread is created detached:
 * weft's join waits on the descriptor, not on pthread_join, so a fiber can join a thread without
 * blocking its worker.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "obs/sanitize.h"

static void *thread_main(void *arg)
{
    weft__fiber *f = arg;
    weft__tls_self = f;
    weft__tsan_internal_begin();
    void *alt = f->sp; /* our signal stack, made by weft_thread_spawn */
    f->sp = NULL;
    weft__tsan_internal_end();
    weft__altstack_install(alt);
    weft__thread_stack_note(f);
    char n[16]; /* the kernel keeps 15 bytes of a thread's name */
    weft__tsan_internal_begin();
    memcpy(n, f->name, sizeof n - 1); /* "" when unnamed: set at spawn */
    n[sizeof n - 1] = '\0';
    weft_fn fn = f->fn;
    void *fn_arg = f->arg;
    atomic_store_explicit(&f->state, WEFT_RUNNING, memory_order_relaxed);
    weft__tsan_internal_end();
    if (n[0])
        pthread_setname_np(pthread_self(), n);
    weft__tsan_acquire(f);
    void *result = fn(fn_arg);
    weft__locals_destroy(f);
    weft__tsan_release(f);
    weft__tls_self = NULL;
    weft__altstack_remove(alt);
    weft__tsan_internal_begin();
    f->result = result;
    weft__tsan_internal_end();
    weft__fiber_publish_done(NULL, f);
    return NULL;
}

int weft_thread_spawn(weft_fiber_t *out, const weft_attr_t *attr, weft_fn fn, void *arg)
{
    if (!fn)
        return -EINVAL;
    unsigned flags = attr ? attr->flags : 0;
    if (flags & ~(unsigned)WEFT_DETACHED)
        return -EINVAL;
    bool detached = (flags & WEFT_DETACHED) || !out;
    weft__stack_global_init(); /* the overflow report, for this thread too */
    pthread_attr_t pa;
    int r = pthread_attr_init(&pa);
    if (r)
        return -r;
    pthread_attr_setdetachstate(&pa, PTHREAD_CREATE_DETACHED);
    if (attr && attr->stack_size) {
        size_t size = weft__stack_round(attr->stack_size * WEFT_SAN_STACK_FACTOR);
        if (size < (size_t)PTHREAD_STACK_MIN)
            size = PTHREAD_STACK_MIN;
        if ((r = pthread_attr_setstacksize(&pa, size)) != 0) {
            pthread_attr_destroy(&pa);
            return -r;
        }
    }
    void *alt = weft__altstack_new();
    weft__fiber *f = alt ? weft__desc_alloc(NULL) : NULL;
    if (!f) {
        weft__altstack_free(alt);
        pthread_attr_destroy(&pa);
        return -ENOMEM;
    }
    weft__tsan_internal_begin();
    f->kind = WEFT__KIND_THREAD;
    f->sp = alt;
    f->fn = fn;
    f->arg = arg;
    f->id = weft__next_id(NULL);
    f->flags = (detached ? WEFT__F_DETACHED : 0) | (attr && attr->name && *attr->name ? WEFT__F_NAMED : 0);
    f->start_err = 0;
    size_t n = attr && attr->name ? strnlen(attr->name, sizeof f->name - 1) : 0;
    memcpy(f->name, n ? attr->name : "", n);
    f->name[n] = '\0';
    atomic_store_explicit(&f->join, detached ? WEFT__JW_DETACHED : 0, memory_order_relaxed);
    atomic_store_explicit(&f->state, WEFT_NEW, memory_order_relaxed);
    weft_fiber_t h = weft__handle(f);
    weft__tsan_internal_end();
    weft__tsan_release(f);
    pthread_t t;
    r = pthread_create(&t, &pa, thread_main, f);
    pthread_attr_destroy(&pa);
    if (r != 0) {
        weft__tsan_internal_begin();
        f->sp = NULL;
        weft__tsan_internal_end();
        weft__altstack_free(alt);
        weft__desc_free(NULL, f);
        return -r;
    }
    if (out)
        *out = h;
    return 0;
}
