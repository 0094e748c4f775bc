// arm64 Image header and entry, per the Linux boot protocol: x0 = DTB,
// MMU off, EL1. Relocates itself (PIE) and zeroes BSS on the boot CPU.
.section .text.head, "ax"
.global _start
_start:
    b       primary
    .long   0
    .quad   0                   // text_offset
    .quad   __image_size
    .quad   0xa                 // LE, 4K, anywhere
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0

primary:
    msr     daifset, #0xf
    mov     x19, x0
    adr     x20, _start         // load address (linked at 0)
    mov     x21, #0             // relocations applied
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
1:  cmp     x1, x2
    b.hs    2f
    ldp     x3, x4, [x1], #16
    ldr     x5, [x1], #8
    cmp     w4, #1027
    b.ne    1b
    add     x5, x5, x20
    str     x5, [x20, x3]
    add     x21, x21, #1
    b       1b
2:  adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
3:  cmp     x1, x2
    b.hs    4f
    stp     xzr, xzr, [x1], #16
    b       3b
4:  adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, #16384
    mov     sp, x1
    adrp    x1, vectors
    add     x1, x1, :lo12:vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    mov     x1, x20
    mov     x2, x21
    bl      guest_main
5:  wfi
    b       5b

// Secondary vCPUs: x0 = context id = stack slot index (1..7); anything
// else has no stack and parks.
.global secondary
secondary:
    msr     daifset, #0xf
    sub     x1, x0, #1
    cmp     x1, #6
    b.hi    6f
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    mov     x2, #16384
    add     x3, x0, #1
    madd    x1, x2, x3, x1
    mov     sp, x1
    adrp    x1, vectors
    add     x1, x1, :lo12:vectors
    msr     vbar_el1, x1
    isb
    bl      secondary_main
6:  wfi
    b       6b

// EL1 vectors: only "current EL with SP_ELx" synchronous exceptions and
// IRQs (the `irqs` tests; PSTATE.I is clear only while they wait) are
// expected.
.balign 0x800
vectors:
    .rept 4
    .balign 0x80
    b       unexpected
    .endr
    .balign 0x80
    b       sync_spx
    .balign 0x80
    b       irq_spx
    .rept 10
    .balign 0x80
    b       unexpected
    .endr

// Caller-saved registers around a call into Rust (which keeps x19-x29).
.macro save_regs
    sub     sp, sp, #(32 * 8)
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    str     x18, [sp, #144]
    str     x30, [sp, #152]
.endm

.macro restore_regs
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldr     x18, [sp, #144]
    ldr     x30, [sp, #152]
    add     sp, sp, #(32 * 8)
.endm

sync_spx:
    save_regs
    bl      on_sync_exception
    restore_regs
    eret

irq_spx:
    save_regs
    bl      on_irq
    restore_regs
    eret

unexpected:
    bl      on_unexpected_exception
7:  wfi
    b       7b
