/*
 * Register probes for test-switch.c (x86-64, System V). See that file for what they prove.
 *
 * void probe_switch(void **save_sp, void *to_sp, uint64_t out[8], uint32_t mxcsr, uint16_t x87cw)
 *   Loads known values into every callee-saved register, MXCSR and the x87 control word, switches away
 *   with weft__ctx_switch, and when switched back stores what those registers then hold into out[]:
 *   rbx r12 r13 r14 r15 rbp, then MXCSR and the x87 control word. Restores its caller's state.
 * void clobber_switch(void **save_sp, void *to_sp)
 *   Loads garbage into all of them, switches away, and restores its caller's state when resumed.
 * uintptr_t probe_caller_sp(void)
 *   The caller's stack pointer just before the call (16-byte aligned under the ABI).
 */
    .text

    .globl  probe_switch
    .type   probe_switch, @function
    .p2align 4
probe_switch:
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    subq    $40, %rsp               /* 8 + 48 + 40: the call below sees a 16-byte aligned stack */
    movq    %rdx, 0(%rsp)           /* out */
    stmxcsr 8(%rsp)                 /* the caller's MXCSR and control word, to put back */
    fnstcw  12(%rsp)
    movl    %ecx, 16(%rsp)
    ldmxcsr 16(%rsp)
    movw    %r8w, 20(%rsp)
    fldcw   20(%rsp)
    movabsq $0x1111111111111111, %rbx
    movabsq $0x1212121212121212, %r12
    movabsq $0x1313131313131313, %r13
    movabsq $0x1414141414141414, %r14
    movabsq $0x1515151515151515, %r15
    movabsq $0x1616161616161616, %rbp
    call    weft__ctx_switch
    movq    0(%rsp), %rax
    movq    %rbx, 0(%rax)
    movq    %r12, 8(%rax)
    movq    %r13, 16(%rax)
    movq    %r14, 24(%rax)
    movq    %r15, 32(%rax)
    movq    %rbp, 40(%rax)
    movq    $0, 48(%rax)
    movq    $0, 56(%rax)
    stmxcsr 48(%rax)
    fnstcw  56(%rax)
    ldmxcsr 8(%rsp)
    fldcw   12(%rsp)
    addq    $40, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .size   probe_switch, .-probe_switch

    .globl  clobber_switch
    .type   clobber_switch, @function
    .p2align 4
clobber_switch:
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    subq    $24, %rsp
    stmxcsr 0(%rsp)
    fnstcw  4(%rsp)
    movl    $0x7f80, 8(%rsp)        /* round toward zero, exceptions masked */
    ldmxcsr 8(%rsp)
    movw    $0x0f7f, 12(%rsp)       /* x87: round toward zero */
    fldcw   12(%rsp)
    movabsq $0xdeadbeefdeadbee1, %rbx
    movabsq $0xdeadbeefdeadbee2, %r12
    movabsq $0xdeadbeefdeadbee3, %r13
    movabsq $0xdeadbeefdeadbee4, %r14
    movabsq $0xdeadbeefdeadbee5, %r15
    movabsq $0xdeadbeefdeadbee6, %rbp
    call    weft__ctx_switch
    ldmxcsr 0(%rsp)
    fldcw   4(%rsp)
    addq    $24, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .size   clobber_switch, .-clobber_switch

    .globl  probe_caller_sp
    .type   probe_caller_sp, @function
    .p2align 4
probe_caller_sp:
    leaq    8(%rsp), %rax
    ret
    .size   probe_caller_sp, .-probe_caller_sp

    .section .note.GNU-stack,"",@progbits
