/*
 * Context switch for aarch64, AAPCS64. See switch.h for the contract.
 *
 * Saved on the switching stack (176 bytes, keeps sp 16-byte aligned), from the saved sp upwards:
 *   +0   x19 x20   +16 x21 x22   +32 x23 x24   +48 x25 x26   +64 x27 x28
 *   +80  x29 (fp) x30 (lr)
 *   +96  d8 d9     +112 d10 d11  +128 d12 d13  +144 d14 d15
 *   +160 FPCR      +168 spare
 * x19-x28, fp, lr, sp and the low halves of v8-v15 are what AAPCS64 makes callee-saved; FPCR holds the
 * rounding mode and exception enables, which a call also preserves.
 */

    .text

    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, %function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    sub     sp, sp, #176
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8, d9, [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    mrs     x9, fpcr
    str     x9, [sp, #160]
    mov     x9, sp
    str     x9, [x0]
    mov     sp, x1
    ldr     x9, [sp, #160]
    msr     fpcr, x9
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8, d9, [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    add     sp, sp, #176
    ret
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/* First code of a new context: weft__ctx_make left entry in x20 and its argument in x19. */
    .globl  weft__ctx_start
    .hidden weft__ctx_start
    .type   weft__ctx_start, %function
    .p2align 4
weft__ctx_start:
    .cfi_startproc
    .cfi_undefined x30
    mov     x0, x19
    blr     x20
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
    sub     x0, x0, #192            /* 176-byte frame + 16 spare */
    mov     x9, #0
    mov     x10, #0
    stp     x2, x1, [x0, #0]        /* x19 = arg, x20 = entry */
    stp     x9, x10, [x0, #16]
    stp     x9, x10, [x0, #32]
    stp     x9, x10, [x0, #48]
    stp     x9, x10, [x0, #64]
    adrp    x11, weft__ctx_start
    add     x11, x11, :lo12:weft__ctx_start
    stp     x9, x11, [x0, #80]      /* fp = 0 ends backtraces, lr = weft__ctx_start */
    stp     x9, x10, [x0, #96]
    stp     x9, x10, [x0, #112]
    stp     x9, x10, [x0, #128]
    stp     x9, x10, [x0, #144]
    stp     x9, x10, [x0, #160]     /* FPCR = 0: round to nearest, no traps */
    ret
    .cfi_endproc
    .size   weft__ctx_make, .-weft__ctx_make

    .section .note.GNU-stack,"",%progbits
