/*
 * The context switch for aarch64, AAPCS64 (see switch.h for the contract).
 *
 * A suspended context's stack pointer points at (32 bytes, keeping sp 16-byte aligned):
 *   +0  x29 (frame pointer)   +8  where it resumes   +16 FPCR   +24 spare
 * x19-x28, the link register and v8-v15, the other registers a call preserves, are clobbered: the
 * compiler saves the ones it holds live in its own frame. x29 is saved here because it may be the frame
 * pointer, which an asm cannot clobber. FPCR holds the rounding mode and exception enables, which a
 * call also preserves. AAPCS64 on Linux has no red zone. Every other register is clobbered.
 */
#ifndef WEFT_ARCH_SWITCH_AARCH64_H
#define WEFT_ARCH_SWITCH_AARCH64_H

static inline __attribute__((always_inline)) void weft__ctx_switch_inline(void **save_sp, void *new_sp)
{
    register void **save __asm__("x0") = save_sp;
    register void *to __asm__("x1") = new_sp;
    __asm__ volatile("adr     x9, 1f\n\t"
                     "mrs     x10, fpcr\n\t"
                     "sub     sp, sp, #32\n\t"
                     "stp     x29, x9, [sp]\n\t"
                     "str     x10, [sp, #16]\n\t"
                     "mov     x9, sp\n\t"
                     "str     x9, [%[save]]\n\t"
                     "mov     sp, %[to]\n\t"
                     "ldp     x29, x9, [sp]\n\t"
                     "ldr     x10, [sp, #16]\n\t"
                     "msr     fpcr, x10\n\t"
                     "add     sp, sp, #32\n\t"
                     "br      x9\n"
                     "1:"
                     : [save] "+r"(save), [to] "+r"(to)
                     :
                     : "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15",
                       "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28",
                       "x30", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12",
                       "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25",
                       "v26", "v27", "v28", "v29", "v30", "v31", "memory", "cc");
}

#endif
