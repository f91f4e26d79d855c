/*
 * Register probes for test-switch.c (aarch64, AAPCS64). See that file for what they prove.
 *
 * void probe_switch(void **save_sp, void *to_sp, uint64_t out[20], uint64_t fpcr, uint64_t unused)
 *   Loads known values into every callee-saved register (x19-x28, d8-d15) and FPCR, switches away with
 *   weft__ctx_switch, and when switched back stores what those registers then hold into out[]:
 *   x19..x28, d8..d15, FPCR. Restores its caller's state.
 * void clobber_switch(void **save_sp, void *to_sp)
 *   Loads garbage into all of them, switches away, and restores its caller's state when resumed.
 * uintptr_t probe_caller_sp(void)
 *   The caller's stack pointer (16-byte aligned under the ABI).
 */
    .text

    .macro  save_callee
    stp     x29, x30, [sp, #-192]!
    mov     x29, sp
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    stp     d8, d9, [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    mrs     x9, fpcr
    str     x9, [sp, #160]
    .endm

    .macro  restore_callee
    ldr     x9, [sp, #160]
    msr     fpcr, x9
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     d8, d9, [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    ldp     x29, x30, [sp], #192
    .endm

    .macro  load_all base
    mov     x19, #(\base + 19)
    mov     x20, #(\base + 20)
    mov     x21, #(\base + 21)
    mov     x22, #(\base + 22)
    mov     x23, #(\base + 23)
    mov     x24, #(\base + 24)
    mov     x25, #(\base + 25)
    mov     x26, #(\base + 26)
    mov     x27, #(\base + 27)
    mov     x28, #(\base + 28)
    fmov    d8, x19
    fmov    d9, x20
    fmov    d10, x21
    fmov    d11, x22
    fmov    d12, x23
    fmov    d13, x24
    fmov    d14, x25
    fmov    d15, x26
    .endm

    .globl  probe_switch
    .type   probe_switch, %function
    .p2align 4
probe_switch:
    save_callee
    str     x2, [sp, #168]          /* out */
    msr     fpcr, x3
    load_all 0x1000
    bl      weft__ctx_switch
    ldr     x9, [sp, #168]
    stp     x19, x20, [x9, #0]
    stp     x21, x22, [x9, #16]
    stp     x23, x24, [x9, #32]
    stp     x25, x26, [x9, #48]
    stp     x27, x28, [x9, #64]
    stp     d8, d9, [x9, #80]
    stp     d10, d11, [x9, #96]
    stp     d12, d13, [x9, #112]
    stp     d14, d15, [x9, #128]
    mrs     x10, fpcr
    str     x10, [x9, #144]
    restore_callee
    ret
    .size   probe_switch, .-probe_switch

    .globl  clobber_switch
    .type   clobber_switch, %function
    .p2align 4
clobber_switch:
    save_callee
    mov     x9, #0xc00000           /* FPCR: round toward zero */
    msr     fpcr, x9
    load_all 0x7700
    bl      weft__ctx_switch
    restore_callee
    ret
    .size   clobber_switch, .-clobber_switch

    .globl  probe_caller_sp
    .type   probe_caller_sp, %function
    .p2align 4
probe_caller_sp:
    mov     x0, sp
    ret
    .size   probe_caller_sp, .-probe_caller_sp

    .section .note.GNU-stack,"",@progbits
