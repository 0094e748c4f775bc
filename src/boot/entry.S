// dtvisor image entry: the arm64 Image header, self-relocation, BSS,
// stack, exception vectors, then Rust. Runs with the MMU off.

.section .text.head, "ax"
.global _start
_start:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0                       // text_offset
    .quad   __image_size            // image_size: text, data, BSS and stacks
    .quad   0xa                     // flags: LE, 4K pages, place anywhere
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

primary_entry:
    msr     daifset, #0xf
    mrs     x21, cntpct_el0         // boot timestamp (system counter)
    mov     x19, x0                 // x0 = DTB physical address
    adrp    x20, _start             // load address (2 MiB aligned)

    // Apply R_AARCH64_RELATIVE relocations: *(base + off) = base + addend.
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
1:  cmp     x1, x2
    b.hs    2f
    ldp     x3, x4, [x1], #16       // r_offset, r_info
    ldr     x5, [x1], #8            // r_addend
    cmp     w4, #1027               // R_AARCH64_RELATIVE
    b.ne    1b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       1b
2:
    // Zero BSS (16-byte aligned bounds, see link.ld).
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
3:  cmp     x1, x2
    b.hs    4f
    stp     xzr, xzr, [x1], #16
    b       3b
4:
    // Boot CPU stack.
    adrp    x1, __boot_stack_end
    add     x1, x1, :lo12:__boot_stack_end
    mov     sp, x1

    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.eq    5f
    mov     x0, x19
    mov     x1, x20
    bl      wrong_el_entry          // prints the refusal and parks
6:  wfe
    b       6b

5:  adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    mov     x1, x20
    mov     x2, x21
    bl      primary_main
7:  wfe
    b       7b

// Secondary CPUs enter here from PSCI CPU_ON with x0 = CPU index.
// MMU off; the boot CPU has published the EL2 translation registers.
.global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    mov     x2, #{STACK_SIZE}
    madd    x1, x2, x19, x1         // top of slot idx - 1 (idx >= 1)
    mov     sp, x1
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      secondary_main
8:  wfe
    b       8b
