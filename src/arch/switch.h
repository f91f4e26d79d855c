/*
 * The context switch: the one piece of weft written per CPU architecture.
 *
 * Contract every switch_<arch>.S must meet:
 *
 *   void weft__ctx_switch(void **save_sp, void *new_sp);
 *     Saves the callee-saved state of the calling context (the registers the platform ABI says a call
 *     preserves, plus the floating-point control state) on its own stack, stores the resulting stack
 *     pointer in *save_sp, loads new_sp and restores the state saved there, then returns into that context.
 *     It returns to its caller when some other context switches back to the stored stack pointer.
 *
 *   void *weft__ctx_make(void *stack_hi, void (*entry)(void *), void *arg);
 *     Builds, just below stack_hi (16-byte aligned), a frame such that weft__ctx_switch into the returned
 *     stack pointer calls entry(arg) with the ABI's stack alignment, default floating-point control state,
 *     and a zero frame pointer so that backtraces stop there. entry must never return.
 *
 * Nothing else lives here: no scheduling, no sanitizer calls (see src/obs/sanitize.h).
 */
#ifndef WEFT_ARCH_SWITCH_H
#define WEFT_ARCH_SWITCH_H

void weft__ctx_switch(void **save_sp, void *new_sp);
void *weft__ctx_make(void *stack_hi, void (*entry)(void *), void *arg);

#endif
