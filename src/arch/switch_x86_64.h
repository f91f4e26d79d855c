/*
 * The context switch for x86-64, System V ABI (see switch.h for the contract).
 *
 * A suspended context's stack pointer points at:
 *   +0  MXCSR (4 bytes)   +4  x87 control word (2 bytes, 2 spare)   +8  rbp   +16 where it resumes
 * rbx and r12-r15, the other callee-saved registers, are clobbered: the compiler saves the ones it
 * holds live in its own frame. rbp is saved here because it may be the frame pointer, which an asm
 * cannot clobber. The ABI says a call preserves MXCSR and the x87 control word, so they travel too.
 * Every other register is caller-saved and clobbered, x87 and MMX registers included.
 *
 * The 128 bytes below the stack pointer are the red zone, where the compiler may keep values without
 * moving the stack pointer: the frame goes below it.
 */
#ifndef WEFT_ARCH_SWITCH_X86_64_H
#define WEFT_ARCH_SWITCH_X86_64_H

#if defined(__AVX512F__)
#define WEFT__CLOBBER_ZMM_HI , "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", \
    "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k1", "k2", "k3", "k4", "k5", "k6", "k7"
#else
#define WEFT__CLOBBER_ZMM_HI
#endif

static inline __attribute__((always_inline)) void weft__ctx_switch_inline(void **save_sp, void *new_sp)
{
    __asm__ volatile("leaq    -128(%%rsp), %%rsp\n\t"
                     "leaq    1f(%%rip), %%rax\n\t"
                     "pushq   %%rax\n\t"
                     "pushq   %%rbp\n\t"
                     "subq    $8, %%rsp\n\t"
                     "stmxcsr (%%rsp)\n\t"
                     "fnstcw  4(%%rsp)\n\t"
                     "movq    %%rsp, (%[save])\n\t"
                     "movq    %[to], %%rsp\n\t"
                     "ldmxcsr (%%rsp)\n\t"
                     "fldcw   4(%%rsp)\n\t"
                     "movq    8(%%rsp), %%rbp\n\t"
                     "movq    16(%%rsp), %%rax\n\t"
                     "addq    $24, %%rsp\n\t"
                     "jmp     *%%rax\n"
                     "1:\n\t"
                     "leaq    128(%%rsp), %%rsp"
                     : [save] "+D"(save_sp), [to] "+S"(new_sp)
                     :
                     : "rax", "rbx", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                       "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                       "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "st", "st(1)", "st(2)", "st(3)", "st(4)",
                       "st(5)", "st(6)", "st(7)", "mm0", "mm1", "mm2", "mm3", "mm4", "mm5", "mm6", "mm7",
                       "memory", "cc" WEFT__CLOBBER_ZMM_HI);
}

#endif
