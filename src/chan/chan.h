/*
 * A channel's insides, for chan.c and for select.c, which does channel cases without a call through
 * their face (core/wait.h): channels are select's own case, as in Go, and the one it is timed on.
 * What must stay true is chan.c's.
 */
#ifndef WEFT_CHAN_CHAN_H
#define WEFT_CHAN_CHAN_H

#include <string.h>

#include "core/park.h"
#include "core/wait.h"

struct weft_chan {
    weft__spinlock lock;
    bool closed;          /* protected by lock */
    size_t head;          /* slot of the oldest buffered element; protected by lock */
    _Atomic size_t len;   /* elements buffered; written under lock, read without it by weft_chan_len */
    size_t cap;           /* fixed */
    size_t esize;         /* fixed */
    weft__wlist recvq;    /* protected by lock */
    weft__wlist sendq;    /* protected by lock */
    unsigned char buf[];  /* cap * esize bytes; protected by lock */
};

static inline void chan_lock(weft_chan_t *c)
{
    weft__spin_lock(&c->lock);
}

static inline void chan_unlock(weft_chan_t *c)
{
    weft__spin_unlock(&c->lock);
}

/* Copy one element, under the lock: the common sizes as single moves (a call to memcpy for 8 bytes was
 * 4-7% of a contended channel's time, all of it while the lock was held) */
static inline void chan_copy_elem(void *to, const void *from, size_t n)
{
    switch (n) {
    case 1: memcpy(to, from, 1); break;
    case 2: memcpy(to, from, 2); break;
    case 4: memcpy(to, from, 4); break;
    case 8: memcpy(to, from, 8); break;
    case 16: memcpy(to, from, 16); break;
    default: memcpy(to, from, n); break;
    }
}

static inline unsigned char *chan_slot(weft_chan_t *c, size_t i)
{
    /* i < 2 * cap: the head plus at most cap */
    return c->buf + (i >= c->cap ? i - c->cap : i) * c->esize;
}

/* The first waiter in q whose claim we win, unlinked: ours to complete. NULL if there is none. */
static inline weft__wnode *chan_dequeue(weft__wlist *q)
{
    for (weft__wnode *n = q->head; n; n = n->next) {
        if (weft__wnode_claim(n)) {
            weft__wlist_remove(q, n);
            return n;
        }
        /* decided: another case of its select happened, or its owner is leaving; the owner takes it
         * out (6) */
    }
    return NULL;
}

/* Complete a dequeued waiter: publish the result, then `done` as the last touch of its record. */
static inline weft__wakeup chan_finish(weft__wnode *n, int result)
{
    n->w->result = result;
    return weft__wait_finish(n->w);
}

/* Under c's lock. 1: sent (*k may name a receiver to wake), 0: it would have to wait, -EPIPE. */
static inline __attribute__((always_inline)) int chan_try_send(weft_chan_t *c, const void *elem, weft__wakeup *k)
{
    if (c->closed)
        return -EPIPE;
    weft__wnode *r = chan_dequeue(&c->recvq);
    if (r) {
        /* a receiver waits, so the buffer is empty (5): hand the element over */
        if (r->elem)
            chan_copy_elem(r->elem, elem, c->esize);
        *k = chan_finish(r, 0);
        return 1;
    }
    size_t len = atomic_load_explicit(&c->len, memory_order_relaxed);
    if (len < c->cap) {
        chan_copy_elem(chan_slot(c, c->head + len), elem, c->esize);
        atomic_store_explicit(&c->len, len + 1, memory_order_relaxed);
        return 1;
    }
    return 0;
}

/* Under c's lock. 1: received (*k may name a sender to wake), 0: it would have to wait, -EPIPE
 * (closed and drained). */
static inline __attribute__((always_inline)) int chan_try_recv(weft_chan_t *c, void *elem, weft__wakeup *k)
{
    size_t len = atomic_load_explicit(&c->len, memory_order_relaxed);
    if (len > 0) {
        if (elem)
            chan_copy_elem(elem, chan_slot(c, c->head), c->esize);
        c->head = c->head + 1 == c->cap ? 0 : c->head + 1;
        len--;
        /* a sender waits only while the buffer is full (5): its element goes into the slot just
         * freed, behind everything buffered */
        weft__wnode *s = chan_dequeue(&c->sendq);
        if (s) {
            chan_copy_elem(chan_slot(c, c->head + len), s->elem, c->esize);
            len++;
            *k = chan_finish(s, 0);
        }
        atomic_store_explicit(&c->len, len, memory_order_relaxed);
        return 1;
    }
    if (c->closed)
        return -EPIPE;
    weft__wnode *s = chan_dequeue(&c->sendq);
    if (s) {
        if (elem)
            chan_copy_elem(elem, s->elem, c->esize);
        *k = chan_finish(s, 0);
        return 1;
    }
    return 0;
}

/* ---- select's cases on channels (core/wait.h): send true for a send ---- */

static inline __attribute__((always_inline)) int chan_sel_poll(weft__sel_case *cs, weft__wakeup *k, bool send)
{
    int r = send ? chan_try_send(cs->obj, cs->elem, k) : chan_try_recv(cs->obj, cs->elem, k);
    cs->result = r < 0 ? r : 0;
    return r != 0;
}

static inline __attribute__((always_inline)) void chan_sel_enqueue(weft__sel_case *cs, bool send)
{
    weft_chan_t *c = cs->obj;
    cs->node.elem = cs->elem;
    weft__wlist_push(send ? &c->sendq : &c->recvq, &cs->node);
}

/* A case that did not happen: its node is still queued (1), so the channel is still there. */
static inline __attribute__((always_inline)) void chan_sel_disarm(weft__sel_case *cs, bool send)
{
    weft_chan_t *c = cs->obj;
    chan_lock(c);
    weft__wlist_remove(send ? &c->sendq : &c->recvq, &cs->node);
    chan_unlock(c);
}

/* The winning waker copied the element and set the result: nothing is left to do but read it. */
static inline void chan_sel_complete(weft__sel_case *cs)
{
    cs->result = cs->node.w->result;
}

#endif /* WEFT_CHAN_CHAN_H */
