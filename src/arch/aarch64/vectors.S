// EL2 exception vectors. Every entry saves the general registers, ELR and
// SPSR into a TrapFrame on the current stack and calls
// el2_exception(kind, frame); if that returns, the frame is restored and
// the exception returns. An entry from a guest first runs this CPU's
// speculation mitigations (spectre.rs), before any indirect branch.

// This CPU's SPECTRE_ENTRY word (hw::spectre::Entry::bits): bits 7:0 the
// branch-history loop's count, bit 8 CLRBHB, bit 9 SMC ARCH_WORKAROUND_3,
// bit 10 SMC ARCH_WORKAROUND_1. Uses x0-x5 (saved already; an SMC may
// change x0-x3).
.macro spectre_entry
    mrs     x4, tpidr_el2
    adrp    x5, SPECTRE_ENTRY
    add     x5, x5, :lo12:SPECTRE_ENTRY
    ldr     w5, [x5, x4, lsl #2]
    cbz     w5, 9f
    ands    w4, w5, #0xff
    b.eq    2f
1:  b       . + 4
    subs    w4, w4, #1
    b.ne    1b
    dsb     nsh
    isb
2:  tbz     w5, #8, 3f
    hint    #22                     // CLRBHB
    isb
3:  tbz     w5, #9, 4f
    movz    w0, #0x3fff
    movk    w0, #0x8000, lsl #16
    smc     #0
4:  tbz     w5, #10, 9f
    movz    w0, #0x8000
    movk    w0, #0x8000, lsl #16
    smc     #0
9:
.endm

.macro save_and_call kind, guest=0
    sub     sp, sp, #(36 * 8)
    stp     x0, x1, [sp, #(0 * 8)]
    stp     x2, x3, [sp, #(2 * 8)]
    stp     x4, x5, [sp, #(4 * 8)]
    stp     x6, x7, [sp, #(6 * 8)]
    stp     x8, x9, [sp, #(8 * 8)]
    stp     x10, x11, [sp, #(10 * 8)]
    stp     x12, x13, [sp, #(12 * 8)]
    stp     x14, x15, [sp, #(14 * 8)]
    stp     x16, x17, [sp, #(16 * 8)]
    stp     x18, x19, [sp, #(18 * 8)]
    stp     x20, x21, [sp, #(20 * 8)]
    stp     x22, x23, [sp, #(22 * 8)]
    stp     x24, x25, [sp, #(24 * 8)]
    stp     x26, x27, [sp, #(26 * 8)]
    stp     x28, x29, [sp, #(28 * 8)]
    mrs     x1, elr_el2
    mrs     x2, spsr_el2
    stp     x30, x1, [sp, #(30 * 8)]
    str     x2, [sp, #(32 * 8)]
.if \guest
    spectre_entry
.endif
    mov     x0, #\kind
    mov     x1, sp
    bl      el2_exception
    b       el2_return
.endm

.macro ventry label
.balign 0x80
    b       \label
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    ventry  v_cur_sp0_sync
    ventry  v_cur_sp0_irq
    ventry  v_cur_sp0_fiq
    ventry  v_cur_sp0_serror
    ventry  v_cur_spx_sync
    ventry  v_cur_spx_irq
    ventry  v_cur_spx_fiq
    ventry  v_cur_spx_serror
    ventry  v_low64_sync
    ventry  v_low64_irq
    ventry  v_low64_fiq
    ventry  v_low64_serror
    ventry  v_low32_sync
    ventry  v_low32_irq
    ventry  v_low32_fiq
    ventry  v_low32_serror

v_cur_sp0_sync:     save_and_call 0
v_cur_sp0_irq:      save_and_call 1
v_cur_sp0_fiq:      save_and_call 2
v_cur_sp0_serror:   save_and_call 3
v_cur_spx_sync:     save_and_call 4
v_cur_spx_irq:      save_and_call 5
v_cur_spx_fiq:      save_and_call 6
v_cur_spx_serror:   save_and_call 7
v_low64_sync:       save_and_call 8, 1
v_low64_irq:        save_and_call 9, 1
v_low64_fiq:        save_and_call 10, 1
v_low64_serror:     save_and_call 11, 1
v_low32_sync:       save_and_call 12, 1
v_low32_irq:        save_and_call 13, 1
v_low32_fiq:        save_and_call 14, 1
v_low32_serror:     save_and_call 15, 1

// Restores the TrapFrame at sp and returns from the exception. Also the
// way into a guest for the first time: enter_guest points sp at a frame.
.global el2_return
el2_return:
    ldr     x2, [sp, #(32 * 8)]
    ldp     x30, x1, [sp, #(30 * 8)]
    msr     elr_el2, x1
    msr     spsr_el2, x2
    ldp     x0, x1, [sp, #(0 * 8)]
    ldp     x2, x3, [sp, #(2 * 8)]
    ldp     x4, x5, [sp, #(4 * 8)]
    ldp     x6, x7, [sp, #(6 * 8)]
    ldp     x8, x9, [sp, #(8 * 8)]
    ldp     x10, x11, [sp, #(10 * 8)]
    ldp     x12, x13, [sp, #(12 * 8)]
    ldp     x14, x15, [sp, #(14 * 8)]
    ldp     x16, x17, [sp, #(16 * 8)]
    ldp     x18, x19, [sp, #(18 * 8)]
    ldp     x20, x21, [sp, #(20 * 8)]
    ldp     x22, x23, [sp, #(22 * 8)]
    ldp     x24, x25, [sp, #(24 * 8)]
    ldp     x26, x27, [sp, #(26 * 8)]
    ldp     x28, x29, [sp, #(28 * 8)]
    add     sp, sp, #(36 * 8)
    eret

// enter_guest(frame): never returns; the frame sits at the top of this
// CPU's stack so that later traps reuse the space below it.
.global enter_guest
enter_guest:
    mov     sp, x0
    b       el2_return
