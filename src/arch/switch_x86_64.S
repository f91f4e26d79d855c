/*
 * Context switch for x86-64, System V ABI. See switch.h for the contract.
 *
 * Saved on the switching stack, from the saved stack pointer upwards:
 *   +0  MXCSR (4 bytes)   +4  x87 control word (2 bytes, 2 spare)
 *   +8  r15  +16 r14  +24 r13  +32 r12  +40 rbx  +48 rbp  +56 return address
 * Those are exactly the registers the ABI makes callee-saved, plus the two floating-point control
 * registers whose state the ABI also says a call preserves. Everything else is caller-saved, so the
 * compiler has already spilled what it needs before calling us.
 */

    .text

    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, @function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    subq    $8, %rsp
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $8, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/*
 * First code a new context runs, "returned into" by weft__ctx_switch. weft__ctx_make left the entry
 * function in r13 and its argument in r12. The stack pointer is 16-byte aligned here, as a call needs.
 */
    .globl  weft__ctx_start
    .hidden weft__ctx_start
    .type   weft__ctx_start, @function
    .p2align 4
weft__ctx_start:
    .cfi_startproc
    .cfi_undefined rip
    movq    %r12, %rdi
    call    *%r13
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
    subq    $80, %rax               /* 64-byte frame + 16 spare; stays 16-byte aligned */
    movl    $0x1f80, (%rax)         /* default MXCSR: all exceptions masked, round to nearest */
    movl    $0x037f, 4(%rax)        /* default x87 control word */
    movq    $0, 8(%rax)             /* r15 */
    movq    $0, 16(%rax)            /* r14 */
    movq    %rsi, 24(%rax)          /* r13 = entry */
    movq    %rdx, 32(%rax)          /* r12 = arg */
    movq    $0, 40(%rax)            /* rbx */
    movq    $0, 48(%rax)            /* rbp = 0 ends backtraces */
    leaq    weft__ctx_start(%rip), %rcx
    movq    %rcx, 56(%rax)          /* return address */
    ret
    .cfi_endproc
    .size   weft__ctx_make, .-weft__ctx_make

    .section .note.GNU-stack,"",@progbits
