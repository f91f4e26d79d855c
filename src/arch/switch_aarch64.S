/*
 * New contexts for aarch64, AAPCS64; the switch itself is inline (switch_aarch64.h), and this frame is
 * the one it expects at a suspended context's stack pointer:
 *   +0  x29   +8  where it resumes   +16 FPCR   +24 spare
 * A new context resumes at weft__ctx_start, which finds its entry function and argument just above.
 */

    .text

/*
 * First code a new context runs, jumped to by the switch with sp at the entry function (+0) and its
 * argument (+8).
 */
    .globl  weft__ctx_start
    .hidden weft__ctx_start
    .type   weft__ctx_start, %function
    .p2align 4
weft__ctx_start:
    .cfi_startproc
    .cfi_undefined x30
    ldp     x9, x0, [sp], #16
    mov     x30, xzr
    blr     x9
    brk     #0
    .cfi_endproc
    .size   weft__ctx_start, .-weft__ctx_start

/* void *weft__ctx_make(void *stack_hi, void (*entry)(void *), void *arg) */
    .globl  weft__ctx_make
    .hidden weft__ctx_make
    .type   weft__ctx_make, %function
    .p2align 4
weft__ctx_make:
    .cfi_startproc
    and     x0, x0, #~15
    sub     x0, x0, #64             /* 32-byte frame, entry and arg, 16 spare */
    adrp    x11, weft__ctx_start
    add     x11, x11, :lo12:weft__ctx_start
    stp     xzr, x11, [x0, #0]      /* fp = 0 ends backtraces; resume at weft__ctx_start */
    stp     xzr, xzr, [x0, #16]     /* FPCR = 0: round to nearest, no traps */
    stp     x1, x2, [x0, #32]       /* entry, arg */
    ret
    .cfi_endproc
    .size   weft__ctx_make, .-weft__ctx_make

    .section .note.GNU-stack,"",%progbits
