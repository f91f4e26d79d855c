/*
 * The poller's side of the I/O layer: start and stop it, and turn its events into wakeups (the essay at
 * the top of fd.c). Any worker may poll, several at once.
 */
#include <stdint.h>

#include "core/park.h"
#include "core/wait.h"
#include "io/fd.h"
#include "io/io.h"
#include "io/poll.h"

weft__io_state weft__io;

int weft__io_poll(int64_t deadline)
{
    /* a plain load and store, not an atomic increment: a lost count does not matter, a locked
     * instruction on a line every polling worker writes would */
    atomic_store_explicit(&weft__io.polls, atomic_load_explicit(&weft__io.polls, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    weft__poll_event ev[64];
    int n = weft__poll_wait(ev, 64, deadline);
    int woken = 0;
    for (int i = 0; i < n; i++) {
        int fd = (int)(uint32_t)ev[i].key;
        uint32_t gen = (uint32_t)(ev[i].key >> 32);
        weft__pd *pd = weft__pd_find(fd);
        if (!pd)
            continue;
        weft__spin_lock(&pd->lock);
        if (atomic_load_explicit(&pd->gen, memory_order_relaxed) == gen) { /* else: an event of a closed file */
            for (int dir = 0; dir < 2; dir++) {
                if (!(ev[i].events & (dir ? WEFT__POLL_OUT : WEFT__POLL_IN)))
                    continue;
                if (dir == 0 && (ev[i].events & WEFT__POLL_END))
                    atomic_store_explicit(&pd->ended, true, memory_order_relaxed);
                atomic_fetch_add_explicit(&pd->seq[dir], 1, memory_order_release);
                woken += weft__pd_wake_dir(pd, dir);
            }
        }
        weft__spin_unlock(&pd->lock);
    }
    return woken;
}

uint64_t weft__io_polls(void)
{
    return atomic_load_explicit(&weft__io.polls, memory_order_relaxed);
}

int64_t weft__io_waiting(void)
{
    return atomic_load_explicit(&weft__io.waiting, memory_order_seq_cst);
}

void weft__io_interrupt(void)
{
    weft__poll_interrupt();
}

int weft__io_start(void)
{
    int r = weft__poll_open();
    if (r < 0)
        return r;
    atomic_fetch_add_explicit(&weft__io.epoch, 1, memory_order_relaxed);
    atomic_store_explicit(&weft__io.running, 1, memory_order_release);
    return 0;
}

void weft__io_stop(void)
{
    atomic_store_explicit(&weft__io.running, 0, memory_order_release);
    weft__poll_close();
}
