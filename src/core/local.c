/*
 * Fiber-local storage: keys with destructors, values per fiber (or per weft or foreign thread).
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

struct weft__local {
    uint64_t gen;
    void *value;
};

static struct {
    pthread_mutex_t lock;
    struct {
        _Atomic uint64_t gen; /* odd: in use */
        void (*destructor)(void *);
    } keys[WEFT_KEYS_MAX];
} fls = {.lock = PTHREAD_MUTEX_INITIALIZER};

int weft_key_create(weft_key_t *key, void (*destructor)(void *))
{
    if (!key)
        return -EINVAL;
    pthread_mutex_lock(&fls.lock);
    for (unsigned i = 0; i < WEFT_KEYS_MAX; i++) {
        uint64_t g = atomic_load_explicit(&fls.keys[i].gen, memory_order_relaxed);
        if (g & 1)
            continue;
        fls.keys[i].destructor = destructor;
        atomic_store_explicit(&fls.keys[i].gen, g + 1, memory_order_release);
        pthread_mutex_unlock(&fls.lock);
        *key = i;
        return 0;
    }
    pthread_mutex_unlock(&fls.lock);
    return -ENOSPC;
}

int weft_key_delete(weft_key_t key)
{
    if (key >= WEFT_KEYS_MAX)
        return -EINVAL;
    pthread_mutex_lock(&fls.lock);
    uint64_t g = atomic_load_explicit(&fls.keys[key].gen, memory_order_relaxed);
    if (!(g & 1)) {
        pthread_mutex_unlock(&fls.lock);
        return -EINVAL;
    }
    atomic_store_explicit(&fls.keys[key].gen, g + 1, memory_order_release);
    fls.keys[key].destructor = NULL;
    pthread_mutex_unlock(&fls.lock);
    return 0;
}

int weft_local_set(weft_key_t key, void *value)
{
    if (key >= WEFT_KEYS_MAX)
        return -EINVAL;
    uint64_t g = atomic_load_explicit(&fls.keys[key].gen, memory_order_acquire);
    if (!(g & 1))
        return -EINVAL;
    weft__fiber *f = weft__self();
    if (!f)
        return -ENOMEM;
    if (!f->locals) {
        if (!value)
            return 0;
        f->locals = calloc(WEFT_KEYS_MAX, sizeof *f->locals);
        if (!f->locals)
            return -ENOMEM;
    }
    f->locals[key].gen = g;
    f->locals[key].value = value;
    return 0;
}

void *weft_local_get(weft_key_t key)
{
    if (key >= WEFT_KEYS_MAX)
        return NULL;
    weft__fiber *f = weft__self_if_any();
    if (!f || !f->locals)
        return NULL;
    uint64_t g = atomic_load_explicit(&fls.keys[key].gen, memory_order_acquire);
    return f->locals[key].gen == g && (g & 1) ? f->locals[key].value : NULL;
}

void weft__locals_destroy(weft__fiber *f)
{
    if (!f->locals)
        return;
    /* destructors may set values again: repeat a few rounds, as pthreads does */
    for (int round = 0; round < 4; round++) {
        bool any = false;
        for (unsigned i = 0; i < WEFT_KEYS_MAX; i++) {
            struct weft__local *l = &f->locals[i];
            if (!l->value)
                continue;
            uint64_t g = atomic_load_explicit(&fls.keys[i].gen, memory_order_acquire);
            void (*d)(void *) = fls.keys[i].destructor;
            void *v = l->value;
            l->value = NULL;
            if (l->gen == g && (g & 1) && d) {
                d(v);
                any = true;
            }
        }
        if (!any)
            break;
    }
    free(f->locals);
    f->locals = NULL;
}
