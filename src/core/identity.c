/*
 * Identity: the calling fiber's or thread's descriptor (a foreign thread gets one on its first wait),
 * handles' state, id and name.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/desc.h"
#include "core/internal.h"
#include "core/wait.h"
#include "obs/sanitize.h"

/* A foreign thread's descriptor goes back when the thread ends, by the destructor of this key. */
static pthread_key_t foreign_key;
static pthread_mutex_t foreign_key_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic bool foreign_key_made;

static void foreign_exit(void *p)
{
    weft__fiber *f = p;
    weft__locals_destroy(f);
    if (weft__tls_self == f)
        weft__tls_self = NULL;
    weft__tsan_release(f); /* this thread's use of f happens before the next owner's (weft__self) */
    weft__desc_free(NULL, f);
}

/* Made on first use, and tried again on a later one if the system had no key to spare then. */
static bool foreign_key_get(void)
{
    if (WEFT__LIKELY(atomic_load_explicit(&foreign_key_made, memory_order_acquire)))
        return true;
    pthread_mutex_lock(&foreign_key_lock);
    if (!atomic_load_explicit(&foreign_key_made, memory_order_relaxed) &&
        pthread_key_create(&foreign_key, foreign_exit) == 0)
        atomic_store_explicit(&foreign_key_made, true, memory_order_release);
    pthread_mutex_unlock(&foreign_key_lock);
    return atomic_load_explicit(&foreign_key_made, memory_order_relaxed);
}

weft__fiber *weft__self(void)
{
    weft__tsan_internal_begin();
    weft__fiber *f = weft__self_if_any();
    if (WEFT__UNLIKELY(!f)) {
        /* without the key, or without room for this thread's value of it (the C library allocates past
         * the first 32 keys), the descriptor would never go back: no record, as with no memory for one */
        f = foreign_key_get() ? weft__desc_alloc_inline(NULL) : NULL;
        if (f && pthread_setspecific(foreign_key, f) != 0) {
            weft__desc_free_inline(NULL, f);
            f = NULL;
        }
        if (f) {
            f->kind = WEFT__KIND_FOREIGN;
            f->flags = 0;
            atomic_store_explicit(&f->state, WEFT_RUNNING, memory_order_relaxed);
            weft__tls_self = f;
        }
        weft__tsan_internal_end();
        if (f)
            weft__tsan_acquire(f); /* the descriptor's last owner is done with it (foreign_exit) */
        return f;
    }
    weft__tsan_internal_end();
    return f;
}

/* The caller's descriptor if it is a fiber or a weft thread. Call inside a hidden stretch. */
static weft__fiber *self_named(void)
{
    weft__fiber *f = weft__self_if_any();
    if (!f || (f->kind != WEFT__KIND_FIBER && f->kind != WEFT__KIND_THREAD))
        return NULL;
    return f;
}

weft_fiber_t weft_self(void)
{
    weft__tsan_internal_begin();
    const weft__fiber *f = self_named();
    weft_fiber_t h = f ? weft__handle(f) : WEFT_FIBER_NONE;
    weft__tsan_internal_end();
    return h;
}

uint64_t weft_self_id(void)
{
    weft__tsan_internal_begin();
    const weft__fiber *f = self_named();
    uint64_t id = f ? f->id : 0;
    weft__tsan_internal_end();
    return id;
}

const char *weft_self_name(void)
{
    weft__tsan_internal_begin();
    const weft__fiber *f = self_named();
    const char *n = f ? weft__name(f) : "";
    weft__tsan_internal_end();
    return n;
}

int weft_set_name(const char *name)
{
    weft__tsan_internal_begin();
    weft__fiber *f = self_named();
    if (f) {
        weft__set_name(f, name);
        if (f->tsan_fiber && (f->flags & WEFT__F_NAMED))
            weft__tsan_set_name(f->tsan_fiber, f->name);
    }
    weft__tsan_internal_end();
    return f ? 0 : -EPERM;
}

int weft_in_fiber(void)
{
    weft__tsan_internal_begin();
    weft__fiber *f = weft__self_if_any();
    int r = f && (f->kind == WEFT__KIND_FIBER || (f->flags & WEFT__F_ORPHAN));
    weft__tsan_internal_end();
    return r;
}

int weft_fiber_state(weft_fiber_t h)
{
    weft__fiber *f = weft__desc_lookup(h);
    if (!f)
        return -ESRCH;
    int s = (int)atomic_load_explicit(&f->state, memory_order_relaxed);
    if (s == WEFT_DONE) {
        /* the fiber stores DONE just before it publishes its end to the join word: until then it is
         * still finishing, and a detach would not free it (it frees itself an instant later); so DONE
         * is told only once a join or a detach would collect it at once */
        uintptr_t j = atomic_load_explicit(&f->join, memory_order_acquire);
        if (j != WEFT__JW_DONE && j != WEFT__JW_CLAIMED)
            s = WEFT_RUNNING;
    }
    return atomic_load_explicit(&f->gen, memory_order_acquire) == (uint32_t)(h.handle_ >> 32) ? s : -ESRCH;
}

uint64_t weft_fiber_id(weft_fiber_t h)
{
    weft__fiber *f = weft__desc_lookup(h);
    if (!f)
        return 0;
    weft__tsan_internal_begin();
    uint64_t id = f->id;
    weft__tsan_internal_end();
    return atomic_load_explicit(&f->gen, memory_order_acquire) == (uint32_t)(h.handle_ >> 32) ? id : 0;
}

int weft_fiber_name(weft_fiber_t h, char *buf, size_t len)
{
    weft__fiber *f = weft__desc_lookup(h);
    if (!f)
        return -ESRCH;
    char tmp[sizeof f->name];
    weft__tsan_internal_begin();
    memcpy(tmp, weft__name(f), f->flags & WEFT__F_NAMED ? sizeof tmp : 1);
    weft__tsan_internal_end();
    tmp[sizeof tmp - 1] = '\0';
    if (atomic_load_explicit(&f->gen, memory_order_acquire) != (uint32_t)(h.handle_ >> 32))
        return -ESRCH;
    size_t n = strlen(tmp);
    if (buf && len) {
        size_t c = n < len - 1 ? n : len - 1;
        memcpy(buf, tmp, c);
        buf[c] = '\0';
    }
    return (int)n;
}


void weft__set_name(weft__fiber *f, const char *name)
{
    if (!name || !*name) {
        f->flags &= (uint8_t)~WEFT__F_NAMED;
        return;
    }
    size_t n = strnlen(name, sizeof f->name - 1);
    memcpy(f->name, name, n);
    f->name[n] = '\0';
    f->flags |= WEFT__F_NAMED;
}

int weft__label(const weft__fiber *f, char *buf, size_t len)
{
    if (f->flags & WEFT__F_NAMED)
        return snprintf(buf, len, "\"%.31s\" (id %llu)", f->name, (unsigned long long)f->id);
    return snprintf(buf, len, "%llu", (unsigned long long)f->id);
}
