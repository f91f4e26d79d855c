/*
 * The context switch: the one piece of weft written per CPU architecture.
 *
 * Contract every architecture must meet (switch_<arch>.h for the switch, switch_<arch>.S for the rest):
 *
 *   static inline void weft__ctx_switch_inline(void **save_sp, void *new_sp);
 *     Suspends the calling context: stores its stack pointer in *save_sp, with what it needs to resume
 *     saved on its own stack, loads new_sp and resumes the context saved there. It returns to its caller
 *     when some other context switches back to the stored stack pointer. Every register the platform ABI
 *     says a call preserves, and the floating-point control state, survive: the ones the compiler holds
 *     live across the switch it saves itself (the asm clobbers them), the frame pointer and the control
 *     state the switch saves.
 *
 *   void weft__ctx_switch(void **save_sp, void *new_sp);
 *     The same as an ordinary function (switch.c), for code that cannot inline it (tests, probes).
 *
 *   void *weft__ctx_make(void *stack_hi, void (*entry)(void *), void *arg);
 *     Builds, just below stack_hi, a context that, switched to, calls entry(arg) with the ABI's stack
 *     alignment, default floating-point control state and a zero frame pointer so that backtraces stop
 *     there. entry must never return.
 *
 * Why inline assembly and not a function: a switch done by calling a function returns (ret) into
 * another context, at an address the CPU's return-stack predictor never expects unless both contexts
 * suspended at the same call site; each such switch costs a mispredict (about 10 ns here). Returning
 * with an indirect jump instead leaves the predictor's stack unbalanced, and the caller's own return
 * mispredicts. Inlined, the switch has no call or return at all: it resumes with an indirect jump that
 * the branch predictor learns, and only the registers actually live at the switch are saved.
 *
 * Nothing else lives here: no scheduling, no sanitizer calls (see src/obs/sanitize.h).
 */
#ifndef WEFT_ARCH_SWITCH_H
#define WEFT_ARCH_SWITCH_H

#if defined(__x86_64__)
#include "arch/switch_x86_64.h"
#elif defined(__aarch64__)
#include "arch/switch_aarch64.h"
#else
#error "weft has no context switch for this architecture (x86_64 and aarch64 only)"
#endif

void weft__ctx_switch(void **save_sp, void *new_sp);
void *weft__ctx_make(void *stack_hi, void (*entry)(void *), void *arg);

#endif
