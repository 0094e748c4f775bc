// dtvisor image entry: the arm64 Image header, which is also a PE/COFF
// header (so the same file is booted by booti and started as an EFI
// application, as Linux's Image is), self-relocation, BSS, stack,
// exception vectors, then Rust. primary_entry runs with the MMU off;
// efi_pe_entry is the EFI entry (src/efi.rs).

// Applies the image's R_AARCH64_RELATIVE relocations (.rela.dyn) for
// load address \base: *(base + r_offset) = base + r_addend. Uses the five
// scratch registers given; idempotent (the addend, not the old value).
.macro apply_relocs base, p, end, off, info, val
    adrp    \p, __rela_start
    add     \p, \p, :lo12:__rela_start
    adrp    \end, __rela_end
    add     \end, \end, :lo12:__rela_end
.Lrel\@:
    cmp     \p, \end
    b.hs    .Lrel_done\@
    ldp     \off, \info, [\p], #16    // r_offset, r_info
    ldr     \val, [\p], #8             // r_addend
    cmp     \info, #1027               // R_AARCH64_RELATIVE
    b.ne    .Lrel\@
    add     \val, \val, \base
    str     \val, [\base, \off]
    b       .Lrel\@
.Lrel_done\@:
.endm

.section .text.head, "ax"
.global _start
_start:
    .long   0xfa405a4d              // code0: "MZ", as `ccmp x18, #0, #0xd, pl` (no effect)
    b       primary_entry           // code1
    .quad   0                       // text_offset
    .quad   __image_size            // image_size: text, data, BSS and stacks
    .quad   0xa                     // flags: LE, 4K pages, place anywhere
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   pe_header - _start      // res5: the PE header's offset (PE/COFF e_lfanew)

// PE32+ for an EFI application. One section covers the image from 4 KiB
// (file offset = RVA, so the loaded image is the file, BSS and stacks
// zero-filled after it); the first 4 KiB are the headers. No base
// relocations: the EFI entry applies the image's own (.rela.dyn).
pe_header:
    .ascii  "PE\0\0"
    .short  0xaa64                  // Machine: AArch64
    .short  1                       // NumberOfSections
    .long   0                       // TimeDateStamp
    .long   0                       // PointerToSymbolTable
    .long   0                       // NumberOfSymbols
    .short  section_table - optional_header // SizeOfOptionalHeader
    .short  0x206                   // executable, no line numbers, no debug info
optional_header:
    .short  0x20b                   // PE32+
    .byte   0x02, 0x14              // linker version
    .long   __pe_raw_size           // SizeOfCode
    .long   0                       // SizeOfInitializedData
    .long   0                       // SizeOfUninitializedData
    .long   __efi_entry_rva         // AddressOfEntryPoint
    .long   0x1000                  // BaseOfCode
    .quad   0                       // ImageBase
    .long   0x1000                  // SectionAlignment
    .long   0x1000                  // FileAlignment
    .short  0, 0                    // OS version
    .short  0, 0                    // image version
    .short  0, 0                    // subsystem version
    .long   0                       // Win32VersionValue
    .long   __image_size            // SizeOfImage
    .long   0x1000                  // SizeOfHeaders
    .long   0                       // CheckSum
    .short  10                      // Subsystem: EFI application
    .short  0                       // DllCharacteristics
    .quad   0, 0, 0, 0              // stack and heap reserve/commit
    .long   0                       // LoaderFlags
    .long   6                       // NumberOfRvaAndSizes
    .quad   0, 0, 0, 0, 0, 0        // export, import, resource, exception, certificate, base relocation
section_table:
    .ascii  ".text\0\0\0"
    .long   __pe_vsize              // VirtualSize
    .long   0x1000                  // VirtualAddress
    .long   __pe_raw_size           // SizeOfRawData
    .long   0x1000                  // PointerToRawData
    .long   0, 0                    // relocations, line numbers
    .short  0, 0
    .long   0xe0000060              // code, data, execute, read, write

// The code lives in the PE section, not in the header page: EFI loaders
// need not load more of that page than the headers themselves (U-Boot's
// does not).
.section .text.boot, "ax"
.global primary_entry
primary_entry:
    msr     daifset, #0xf
    mrs     x21, cntpct_el0         // boot timestamp (system counter)
    mov     x19, x0                 // x0 = DTB physical address
    adrp    x20, _start             // load address (2 MiB aligned)

    apply_relocs x20, x1, x2, x3, x4, x5
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

// Secondary CPUs released from a spin-table enter here (the firmware
// passes no argument): MMU off. The index is the slot of SPIN_MPIDRS
// (arch/aarch64/smp.rs) holding this CPU's MPIDR affinity; a CPU that is
// not there (one sharing a release address with a CPU dtvisor wanted)
// stays parked.
.global spin_entry
spin_entry:
    msr     daifset, #0xf
    mrs     x1, mpidr_el1
    mov     x2, #0xffffff               // Aff2..Aff0
    movk    x2, #0xff, lsl #32          // Aff3
    and     x1, x1, x2
    adrp    x2, SPIN_MPIDRS
    add     x2, x2, :lo12:SPIN_MPIDRS
    mov     x0, #1
1:  cmp     x0, #{MAX_CPUS}
    b.hs    3f
    ldr     x3, [x2, x0, lsl #3]
    cmp     x3, x1
    b.eq    secondary_entry             // x0 = index
    add     x0, x0, #1
    b       1b
3:  wfe
    b       3b

// ---- EFI -----------------------------------------------------------------

.section .text.efi, "ax"
// The EFI entry: x0 = image handle, x1 = system table, MMU on (the
// firmware's identity map). Applies the image's relocations where the
// firmware loaded it (the same fix-up primary_entry makes, so doing it
// again there is harmless), then calls efi_main; its status goes back to
// the firmware if it returns. Only caller-saved registers are used.
.global efi_pe_entry
efi_pe_entry:
    stp     x29, x30, [sp, #-32]!
    mov     x29, sp
    stp     x0, x1, [sp, #16]
    adrp    x9, _start
    apply_relocs x9, x2, x3, x4, x5, x6
    ldp     x0, x1, [sp, #16]
    bl      efi_main
    ldp     x29, x30, [sp], #32
    ret

// efi_enter(entry, dtb): after ExitBootServices, the image copy's caches
// cleaned to the point of coherency: interrupts masked, EL2's MMU and
// caches off (the firmware's map is the identity, so this code keeps
// running), then the booti entry with x0 = the DTB, as a bootloader
// would enter it.
.global efi_enter
efi_enter:
    msr     daifset, #0xf
    mrs     x2, sctlr_el2
    bic     x2, x2, #(1 << 0)       // M
    bic     x2, x2, #(1 << 2)       // C
    bic     x2, x2, #(1 << 12)      // I
    msr     sctlr_el2, x2
    isb
    ic      iallu
    dsb     nsh
    isb
    mov     x3, x0
    mov     x0, x1
    mov     x1, xzr
    mov     x2, xzr
    br      x3
