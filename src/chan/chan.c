/*
 * Channels (Go's chan, runtime/chan.go); select is in select.c, over channels and every other wait.
 *
 * The job. A channel moves fixed-size elements from senders to receivers, each element exactly once,
 * in order; senders wait while there is no room, receivers while there is nothing; close lets
 * receivers drain what is buffered and then fails everything. select waits on several channel
 * operations at once and does exactly one of them. Any caller may be a fiber or a thread (weft__park
 * serves both), and any wait may end early (deadline, cancel, deadlock report) without losing an
 * element.
 *
 * Glossary.
 *   waiter   a blocked send, receive or select: one weft__wait record (core/wait.h, the one waiter
 *            every wait in weft parks through) on the blocked caller's stack
 *   node     a waiter's entry in one channel's queue (weft__wnode, also on its stack): a send or a
 *            receive has one, a select one per case
 *   waker    whoever completes a waiter: a send or select that finds a waiting receiver, a receive
 *            that finds a waiting sender, a close
 *   claim    the word in a waiter's record that decides who settles it: one waker, or the waiter
 *            itself when its wait ends early
 *
 * The approach (Go's). Each channel has one spinlock, held only for short stretches that never park,
 * over everything in it: the ring buffer, the closed flag, the queues of waiting senders and receivers.
 * A send first looks for a waiting receiver and copies the element straight into the receiver's
 * destination; then for room in the buffer; then it queues and parks. A receive takes the buffer's
 * head if there is one, and if a sender waits (the buffer is full), moves that sender's element into
 * the slot just freed, so the buffer stays in send order; with an empty buffer it takes straight from
 * a waiting sender. The copies are done under the lock: a waker never touches a waiter after it let
 * go of the channel, except in close (below). There is no allocation and no system call on these
 * paths; the only ones are those of weft__unpark when a waiter must be woken (and the allocation of a
 * thread's descriptor on its first wait).
 *
 * select (select.c) locks every distinct object of its cases in address order (so two selects, or a
 * select and a send, never wait on each other's locks in a cycle: the others hold only one), polls the
 * cases in a random order (fairness: of the ready cases each is equally likely), and does the first
 * ready one. If none is ready it queues one node per case, all pointing at one record, lets go of the
 * locks and parks. A select whose send and receive cases name the same channel never meets itself:
 * matching is done only by a caller that is running, and a select's nodes are queued only while it is
 * not. Its channel cases use this file's insides (chan.h) without a call through a face.
 *
 * The claim. Every waiter's record has one word, `claim`, that decides who settles it: a waker that
 * finds a node in its queue completes it only if it turns the claim from NONE to the node's case + 1,
 * under that channel's lock; a waiter whose wait ended early turns it from NONE to SELF. Exactly one of
 * them wins (one CAS). A select has one record for all its nodes, so at most one case happens. A plain
 * send or receive goes through the same CAS, so that it can settle a timeout without looking at the
 * channel, which may be gone by then (6): the waits of src/sync call off under their object's lock and
 * so are won with a plain store (core/wait.h, solo waits), a channel's cannot be.
 *
 * Rejected: a lock-free fast path for buffered channels (Go has one only for the non-blocking checks
 * of select with default, and its correctness argument is subtle; the uncontended locked path is an
 * exchange and a store). A lock per queue instead of per channel: a send must look at the receivers
 * and the buffer in one atomic step. Copying outside the lock for big elements: the waiter's record
 * would then need a second hand-off state on every path, for a case (kilobyte elements) that is
 * better served by sending pointers. Go's lazy removal of a select's other nodes by the wakers that
 * lose the claim: here a loser leaves them where they are, for the reason in 6.
 *
 * What must stay true, and the memory-ordering protocol.
 *  1. A node is in its channel's queue exactly while `queued` says so; both change only under that
 *     channel's lock. A node leaves its queue only by the hand of the waker that won its claim (which
 *     then completes that node's operation) or of its owner (below). A waker that cannot win a node
 *     skips it.
 *  2. Every waiter's record and nodes live on its stack and are gone once it returns. A waker reads
 *     what it needs (fiber, token) and then stores `done` with release as its very last touch of the
 *     record; the waiter's acquire load of `done` orders every write the waker made (the element
 *     copied in, the result) before its return, for TSan too. The waker's weft__unpark comes after
 *     and touches only the fiber descriptor, which is never freed.
 *  3. A waiter whose park returned 0 was woken by the waker that won its claim, after `done`. Any
 *     other return (-ETIMEDOUT, -ECANCELED, -EDEADLK, -ENOMEM) races with the wakers and the claim
 *     decides. The waiter wins it (SELF): nobody completed anything and nobody will; it takes its
 *     nodes out of their queues and returns the error. A waker won it: that operation happened (the
 *     element was copied in or out), so the waiter waits for `done` and returns success. A value is
 *     never lost to a timeout or a cancel.
 *  4. Senders and receivers complete each other under the lock and store `done` before they unlock;
 *     close wins its waiters under the lock but wakes them after, so that a channel with many waiters
 *     is not locked across many futex calls: that is why a waiter whose claim was won may still have
 *     to wait (briefly) for `done`.
 *  5. Live waiting senders exist only while the buffer is full, live waiting receivers only while it
 *     is empty and the channel open. (Nodes whose claim is already decided may sit in a queue until
 *     their owner takes them out; they are skipped.) So handing an element to a waiting receiver never
 *     overtakes a buffered one.
 *  6. weft_chan_free refuses a channel with any node in a queue, and takes the lock, so it comes after
 *     every waker's unlock. A waiter touches a channel after its park only to take out its own nodes,
 *     which are still queued (1), so the channel is still there: a plain send or receive whose claim
 *     a waker won touches the channel no more, and a select takes the locks only of the channels that
 *     still hold one of its nodes. So a channel may be freed as soon as the calls that used it
 *     returned, even while the other side of the last hand-off is still on its way out; that is also
 *     why a losing waker must not take a node out of its queue: its owner may still need it there.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "chan/chan.h"
#include "obs/sanitize.h"

static inline void chan_wake(weft__wakeup k)
{
    weft__wakeup_run(k, true); /* a hand-off: the woken one runs next here */
}

/* Under c's lock, which it lets go: queue on q, park, and settle the race with wakers (3). */
static int block(weft_chan_t *c, weft__wlist *q, void *elem, weft__fiber *self, unsigned reason, int64_t deadline)
{
    weft__wait w;
    weft__wnode n;
    /* not a solo wait: a waker that won it may be the channel's last user, and the channel may be gone
     * once that waker's call returned (6), so the wait is called off without the lock (the claim's CAS) */
    weft__wait_begin(&w, self, reason, c);
    weft__wnode_init(&n, &w, 0);
    n.elem = elem;
    weft__wlist_push(q, &n);
    chan_unlock(c);

    int r = weft__park(self, w.tok, deadline);
    if (weft__wait_end(&w, r) < 0) {
        /* nobody completed it, nobody will; our node is still queued, so c is still there (6) */
        chan_lock(c);
        weft__wlist_remove(q, &n);
        chan_unlock(c);
        return r;
    }
    /* a waker won us: the element moved (after an early end too) */
    return w.result;
}

int weft_chan_new(weft_chan_t **out, size_t elem_size, size_t capacity)
{
    if (!out || elem_size == 0)
        return -EINVAL;
    size_t max = (size_t)PTRDIFF_MAX - sizeof(weft_chan_t);
    if (capacity > max / elem_size)
        return -EINVAL;
    weft_chan_t *c = malloc(sizeof *c + elem_size * capacity);
    if (!c)
        return -ENOMEM;
    memset(c, 0, sizeof *c);
    atomic_init(&c->lock.v, 0);
    atomic_init(&c->len, 0);
    c->cap = capacity;
    c->esize = elem_size;
    *out = c;
    return 0;
}

int weft_chan_free(weft_chan_t *c)
{
    if (!c)
        return 0;
    /* the lock orders every earlier call's last touch before the free */
    chan_lock(c);
    bool busy = c->recvq.head || c->sendq.head;
    chan_unlock(c);
    if (busy)
        return -EBUSY;
    free(c);
    return 0;
}

size_t weft_chan_len(weft_chan_t *c)
{
    return c ? atomic_load_explicit(&c->len, memory_order_relaxed) : 0; /* a snapshot; nothing to order */
}

size_t weft_chan_cap(weft_chan_t *c)
{
    return c ? c->cap : 0;
}

/* A send (elem is what goes) or a receive (elem is where it goes, or NULL), waiting until deadline. One
 * body for both: each caller passes a constant `send`, and the two copies compile apart. */
static inline __attribute__((always_inline)) int chan_op(weft_chan_t *c, void *elem, int64_t deadline, bool send)
{
    for (;;) {
        weft__wakeup k = {NULL, 0};
        chan_lock(c);
        int r = send ? chan_try_send(c, elem, &k) : chan_try_recv(c, elem, &k);
        if (r != 0) {
            chan_unlock(c);
            chan_wake(k);
            return r < 0 ? r : 0;
        }
        if (deadline == WEFT_NOWAIT) {
            chan_unlock(c);
            return -ETIMEDOUT;
        }
        weft__fiber *self = weft__self_if_any();
        if (self)
            return send ? block(c, &c->sendq, elem, self, WEFT__WAIT_CHAN_SEND, deadline)
                        : block(c, &c->recvq, elem, self, WEFT__WAIT_CHAN_RECV, deadline);
        /* a thread's first wait: its descriptor is allocated, not under the lock; then look again */
        chan_unlock(c);
        if (!weft__self())
            return -ENOMEM;
    }
}

int weft_chan_send(weft_chan_t *c, const void *elem, int64_t deadline)
{
    if (!c || !elem)
        return -EINVAL;
    return chan_op(c, (void *)elem, deadline, true); /* a send only reads elem */
}

int weft_chan_recv(weft_chan_t *c, void *elem, int64_t deadline)
{
    if (!c)
        return -EINVAL;
    return chan_op(c, elem, deadline, false);
}

int weft_chan_close(weft_chan_t *c)
{
    if (!c)
        return -EINVAL;
    chan_lock(c);
    if (c->closed) {
        chan_unlock(c);
        return -EPIPE;
    }
    c->closed = true;
    /* every waiter goes: receivers wait only on an empty buffer (5), so all of them see the close */
    weft__wnode *list = NULL, **tail = &list, *n;
    while ((n = chan_dequeue(&c->recvq))) {
        *tail = n;
        tail = &n->wake_next;
    }
    while ((n = chan_dequeue(&c->sendq))) {
        *tail = n;
        tail = &n->wake_next;
    }
    *tail = NULL;
    chan_unlock(c);
    /* wake them outside the lock (4); each node is valid until its record says done */
    for (weft__wnode *next; list; list = next) {
        next = list->wake_next;
        weft__wakeup_run(chan_finish(list, -EPIPE), false);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* select's cases on channels (core/wait.h, select.c)                                                */

static uint64_t chan_face_lock(void *obj)
{
    chan_lock(obj);
    return 0;
}

static void chan_face_unlock(void *obj, uint64_t s)
{
    (void)s;
    chan_unlock(obj);
}

static int chan_face_poll_send(weft__sel_case *cs, weft__wakeup *k)
{
    return chan_sel_poll(cs, k, true);
}

static int chan_face_poll_recv(weft__sel_case *cs, weft__wakeup *k)
{
    return chan_sel_poll(cs, k, false);
}

static int chan_face_enqueue_send(weft__sel_case *cs)
{
    chan_sel_enqueue(cs, true);
    return WEFT__ARM_QUEUED;
}

static int chan_face_enqueue_recv(weft__sel_case *cs)
{
    chan_sel_enqueue(cs, false);
    return WEFT__ARM_QUEUED;
}

static void chan_face_disarm_send(weft__sel_case *cs)
{
    chan_sel_disarm(cs, true);
}

static void chan_face_disarm_recv(weft__sel_case *cs)
{
    chan_sel_disarm(cs, false);
}

const weft__sel_ops weft__sel_chan_send = {chan_face_lock,        chan_face_unlock,      chan_face_poll_send,
                                           chan_face_enqueue_send, chan_face_disarm_send, chan_sel_complete,
                                           NULL};
const weft__sel_ops weft__sel_chan_recv = {chan_face_lock,        chan_face_unlock,      chan_face_poll_recv,
                                           chan_face_enqueue_recv, chan_face_disarm_recv, chan_sel_complete,
                                           NULL};
