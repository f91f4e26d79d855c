/*
 * New contexts for x86-64, System V ABI; the switch itself is inline (switch_x86_64.h), and this frame
 * is the one it expects at a suspended context's stack pointer:
 *   +0  MXCSR   +4  x87 control word   +8  rbp   +16 where it resumes
 * A new context resumes at weft__ctx_start, which finds its entry function and argument just above.
 */

    .text

/*
 * First code a new context runs, jumped to by the switch with the stack pointer at the entry function
 * (+0) and its argument (+8). The stack pointer is 16-byte aligned here, as a call needs.
 */
    .globl  weft__ctx_start
    .hidden weft__ctx_start
    .type   weft__ctx_start, @function
    .p2align 4
weft__ctx_start:
    .cfi_startproc
    .cfi_undefined rip
    movq    8(%rsp), %rdi
    call    *(%rsp)
    ud2
    .cfi_endproc
    .size   weft__ctx_start, .-weft__ctx_start

/* void *weft__ctx_make(void *stack_hi, void (*entry)(void *), void *arg) */
    .globl  weft__ctx_make
    .hidden weft__ctx_make
    .type   weft__ctx_make, @function
    .p2align 4
weft__ctx_make:
    .cfi_startproc
    movq    %rdi, %rax
    andq    $-16, %rax
    subq    $56, %rax               /* frame at 8 mod 16, so that +24 is 16-byte aligned */
    movl    $0x1f80, (%rax)         /* default MXCSR: all exceptions masked, round to nearest */
    movl    $0x037f, 4(%rax)        /* default x87 control word */
    movq    $0, 8(%rax)             /* rbp = 0 ends backtraces */
    leaq    weft__ctx_start(%rip), %rcx
    movq    %rcx, 16(%rax)          /* resume at weft__ctx_start ... */
    movq    %rsi, 24(%rax)          /* ... which calls entry */
    movq    %rdx, 32(%rax)          /* with arg */
    movq    $0, 40(%rax)
    ret
    .cfi_endproc
    .size   weft__ctx_make, .-weft__ctx_make

    .section .note.GNU-stack,"",@progbits
