//! `leak`: nothing of one life of a domain reaches the next. Every life
//! first checks that the registers a hypervisor must reset read their
//! reset values, then writes known patterns into all of them and asks for
//! SYSTEM_RESET; the next life checks again. Registers by feature (from
//! the ID registers): FP/SIMD and FPCR/FPSR, SVE Z/P/FFR, SME (SVCR,
//! TPIDR2_EL0), pointer-authentication keys, MTE (GCR, RGSR, TFSR,
//! TFSRE0), the PMU, breakpoints, watchpoints and MDSCR_EL1, and the
//! EL0/EL1 thread registers.

use core::fmt::Write;

use crate::{psci, Checks, Console, SYSTEM_RESET};

macro_rules! mrs {
    ($r:literal) => {{
        let v: u64;
        // SAFETY: reading one of the guest's own system registers.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

macro_rules! msr {
    ($r:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: writing one of the guest's own system registers.
        unsafe { core::arch::asm!(concat!("msr ", $r, ", {}"), "isb", in(reg) v, options(nomem, nostack)) };
    }};
}

struct Feat {
    sve: bool,
    sme: bool,
    pauth: bool,
    mte2: bool,
    pmu: bool,
}

fn features() -> Feat {
    let pfr0 = mrs!("id_aa64pfr0_el1");
    let pfr1 = mrs!("id_aa64pfr1_el1");
    let isar1 = mrs!("id_aa64isar1_el1");
    let dfr0 = mrs!("id_aa64dfr0_el1");
    let pmuver = (dfr0 >> 8) & 0xf;
    Feat {
        sve: (pfr0 >> 32) & 0xf != 0,
        sme: (pfr1 >> 24) & 0xf != 0,
        pauth: isar1 & 0xff00_0ff0 != 0,
        mte2: (pfr1 >> 8) & 0xf >= 2,
        pmu: pmuver != 0 && pmuver != 0xf,
    }
}

/// The OR of every bit of V0..V31 (destroys them: the check comes first).
fn vector_bits() -> u64 {
    let (lo, hi): (u64, u64);
    // SAFETY: FP/SIMD is enabled (CPACR_EL1.FPEN); only vector registers
    // are changed.
    unsafe {
        core::arch::asm!(
            ".arch_extension fp", ".arch_extension simd",
            "orr v0.16b, v0.16b, v1.16b", "orr v0.16b, v0.16b, v2.16b", "orr v0.16b, v0.16b, v3.16b",
            "orr v0.16b, v0.16b, v4.16b", "orr v0.16b, v0.16b, v5.16b", "orr v0.16b, v0.16b, v6.16b",
            "orr v0.16b, v0.16b, v7.16b", "orr v0.16b, v0.16b, v8.16b", "orr v0.16b, v0.16b, v9.16b",
            "orr v0.16b, v0.16b, v10.16b", "orr v0.16b, v0.16b, v11.16b", "orr v0.16b, v0.16b, v12.16b",
            "orr v0.16b, v0.16b, v13.16b", "orr v0.16b, v0.16b, v14.16b", "orr v0.16b, v0.16b, v15.16b",
            "orr v0.16b, v0.16b, v16.16b", "orr v0.16b, v0.16b, v17.16b", "orr v0.16b, v0.16b, v18.16b",
            "orr v0.16b, v0.16b, v19.16b", "orr v0.16b, v0.16b, v20.16b", "orr v0.16b, v0.16b, v21.16b",
            "orr v0.16b, v0.16b, v22.16b", "orr v0.16b, v0.16b, v23.16b", "orr v0.16b, v0.16b, v24.16b",
            "orr v0.16b, v0.16b, v25.16b", "orr v0.16b, v0.16b, v26.16b", "orr v0.16b, v0.16b, v27.16b",
            "orr v0.16b, v0.16b, v28.16b", "orr v0.16b, v0.16b, v29.16b", "orr v0.16b, v0.16b, v30.16b",
            "orr v0.16b, v0.16b, v31.16b",
            "umov {lo}, v0.d[0]", "umov {hi}, v0.d[1]",
            lo = out(reg) lo, hi = out(reg) hi,
            options(nomem, nostack)
        )
    };
    lo | hi
}

/// SVE: active elements of P1..P15 and FFR, and any bit of Z0's full
/// width (with P0 as an all-true governing predicate afterwards).
fn sve_bits() -> (u64, u64) {
    let (p, z): (u64, u64);
    // SAFETY: SVE enabled at EL1 (CPACR_EL1.ZEN); only SVE registers and
    // the scratch registers named are changed.
    unsafe {
        core::arch::asm!(
            ".arch_extension sve",
            ".arch_extension simd",
            "cntp {p}, p0, p0.b",
            "cntp {t}, p1, p1.b", "add {p}, {p}, {t}", "cntp {t}, p2, p2.b", "add {p}, {p}, {t}",
            "cntp {t}, p3, p3.b", "add {p}, {p}, {t}", "cntp {t}, p4, p4.b", "add {p}, {p}, {t}",
            "cntp {t}, p5, p5.b", "add {p}, {p}, {t}", "cntp {t}, p6, p6.b", "add {p}, {p}, {t}",
            "cntp {t}, p7, p7.b", "add {p}, {p}, {t}", "cntp {t}, p8, p8.b", "add {p}, {p}, {t}",
            "cntp {t}, p9, p9.b", "add {p}, {p}, {t}", "cntp {t}, p10, p10.b", "add {p}, {p}, {t}",
            "cntp {t}, p11, p11.b", "add {p}, {p}, {t}", "cntp {t}, p12, p12.b", "add {p}, {p}, {t}",
            "cntp {t}, p13, p13.b", "add {p}, {p}, {t}", "cntp {t}, p14, p14.b", "add {p}, {p}, {t}",
            "cntp {t}, p15, p15.b", "add {p}, {p}, {t}",
            "rdffr p1.b", "cntp {t}, p1, p1.b", "add {p}, {p}, {t}",
            "ptrue p0.b",
            "orv b1, p0, z0.b", "umov {z:w}, v1.b[0]",
            p = out(reg) p, t = out(reg) _, z = out(reg) z,
            options(nomem, nostack)
        )
    };
    (p, z)
}

fn pauth_keys() -> u64 {
    mrs!("s3_0_c2_c1_0")
        | mrs!("s3_0_c2_c1_1")
        | mrs!("s3_0_c2_c1_2")
        | mrs!("s3_0_c2_c1_3")
        | mrs!("s3_0_c2_c2_0")
        | mrs!("s3_0_c2_c2_1")
        | mrs!("s3_0_c2_c2_2")
        | mrs!("s3_0_c2_c2_3")
        | mrs!("s3_0_c2_c3_0")
        | mrs!("s3_0_c2_c3_1")
}

fn check(f: &Feat, c: &mut Checks) {
    c.check(
        vector_bits() == 0,
        format_args!("leak fp/simd registers zero"),
    );
    // FPCR and FPSR by encoding (the assembler knows their names only
    // with FP enabled for it).
    let (fpcr, fpsr) = (mrs!("s3_3_c4_c4_0"), mrs!("s3_3_c4_c4_1"));
    c.check(
        fpcr == 0 && fpsr == 0,
        format_args!("leak fpcr {fpcr:#x} fpsr {fpsr:#x}"),
    );
    let t = (
        mrs!("tpidr_el0"),
        mrs!("tpidrro_el0"),
        mrs!("contextidr_el1"),
    );
    c.check(
        t == (0, 0, 0),
        format_args!("leak thread and context ids {t:x?}"),
    );
    if f.sve {
        let (p, z) = sve_bits();
        c.check(
            p == 0 && z == 0,
            format_args!("leak sve predicates {p} active, z0 {z:#x}"),
        );
    }
    if f.sme {
        let (svcr, tpidr2) = (mrs!("s3_3_c4_c2_2"), mrs!("s3_3_c13_c0_5"));
        c.check(
            svcr == 0 && tpidr2 == 0,
            format_args!("leak sme svcr {svcr:#x} tpidr2 {tpidr2:#x}"),
        );
    }
    if f.pauth {
        c.check(
            pauth_keys() == 0,
            format_args!("leak pointer authentication keys zero"),
        );
    }
    if f.mte2 {
        let m = (
            mrs!("s3_0_c1_c0_6"),
            mrs!("s3_0_c1_c0_5"),
            mrs!("s3_0_c5_c6_0"),
            mrs!("s3_0_c5_c6_1"),
        );
        c.check(
            m == (0, 0, 0, 0),
            format_args!("leak mte gcr rgsr tfsr tfsre0 {m:x?}"),
        );
    }
    if f.pmu {
        msr!("pmselr_el0", 0);
        let p = (
            mrs!("pmcntenset_el0"),
            mrs!("pmintenset_el1"),
            mrs!("pmuserenr_el0"),
            mrs!("pmccfiltr_el0"),
            mrs!("pmxevtyper_el0"),
            mrs!("pmccntr_el0"),
            mrs!("pmcr_el0") & 0xff,
        );
        c.check(
            p == (0, 0, 0, 0, 0, 0, 0),
            format_args!("leak pmu enables, filters, counter, pmcr {p:x?}"),
        );
    }
    let d = (
        mrs!("mdscr_el1") & 0xf001,
        mrs!("dbgbvr0_el1"),
        mrs!("dbgbcr0_el1"),
        mrs!("dbgwvr0_el1"),
        mrs!("dbgwcr0_el1"),
    );
    c.check(
        d == (0, 0, 0, 0, 0),
        format_args!("leak debug mdscr, breakpoint 0, watchpoint 0 {d:x?}"),
    );
}

fn plant(f: &Feat) {
    // SAFETY: the guest's own FP/SIMD registers.
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "movi v0.16b, #0xa5",
            "movi v7.16b, #0xa5",
            "movi v15.16b, #0xa5",
            "movi v31.16b, #0xa5",
            options(nomem, nostack)
        )
    };
    msr!("s3_3_c4_c4_0", 0x03c0_0000); // FPCR: RMode, FZ, DN
    msr!("s3_3_c4_c4_1", 0x9f); // FPSR: the cumulative exception bits
    msr!("tpidr_el0", 0x7e57_0001);
    msr!("tpidrro_el0", 0x7e57_0002);
    msr!("contextidr_el1", 0x42);
    if f.sve {
        // SAFETY: the guest's own SVE registers.
        unsafe {
            core::arch::asm!(
                ".arch_extension sve",
                "ptrue p3.b",
                "ptrue p15.b",
                "setffr",
                "dup z0.b, #0x5a",
                options(nomem, nostack)
            )
        };
    }
    if f.pauth {
        msr!("s3_0_c2_c1_0", 0x1111_2222_3333_4444);
        msr!("s3_0_c2_c2_1", 0x5555_6666_7777_8888);
        msr!("s3_0_c2_c3_0", 0x9999_aaaa_bbbb_cccc);
    }
    if f.mte2 {
        msr!("s3_0_c1_c0_6", 0x1_00ff); // GCR_EL1: RRND, excluded tags
        msr!("s3_0_c1_c0_5", 0x12_3405); // RGSR_EL1
        msr!("s3_0_c5_c6_0", 1); // TFSR_EL1.TF0
        msr!("s3_0_c5_c6_1", 1); // TFSRE0_EL1.TF0
    }
    if f.pmu {
        msr!("pmselr_el0", 0);
        msr!("pmxevtyper_el0", 0x11); // CPU_CYCLES
        msr!("pmselr_el0", 3);
        msr!("pmccfiltr_el0", 1 << 31);
        msr!("pmuserenr_el0", 0xf);
        msr!("pmcntenset_el0", 1 << 31);
        msr!("pmcr_el0", 1); // counting
    }
    msr!("dbgbvr0_el1", 0x4000_1000);
    msr!("dbgwvr0_el1", 0x4000_2000);
    msr!("mdscr_el1", 1 << 12); // TDCC
    if f.sme {
        msr!("s3_3_c13_c0_5", 0x7e57_0003); // TPIDR2_EL0
                                            // SAFETY: streaming mode and ZA on: this guest's remaining code
                                            // (printing, the reset call) uses no FP/SIMD instruction.
        unsafe { core::arch::asm!(".arch_extension sme", "smstart", options(nomem, nostack)) };
    }
}

/// The `leak` word: check, plant, SYSTEM_RESET (every life).
pub fn run() -> ! {
    let f = features();
    // FP/SIMD, SVE and SME at EL1 and EL0 not trapped (CPACR_EL1 FPEN,
    // ZEN, SMEN).
    msr!(
        "cpacr_el1",
        mrs!("cpacr_el1") | (3 << 20) | (3 << 16) | (3 << 24)
    );
    let mut c = Checks { pass: 0, fail: 0 };
    check(&f, &mut c);
    say!(
        "guest: leak life checked pass={} fail={} (sve={} sme={} pauth={} mte2={} pmu={})",
        c.pass,
        c.fail,
        f.sve as u8,
        f.sme as u8,
        f.pauth as u8,
        f.mte2 as u8,
        f.pmu as u8
    );
    plant(&f);
    say!("guest: leak planted, resetting");
    psci(SYSTEM_RESET, 0, 0, 0);
    say!("guest: FAIL system_reset returned");
    crate::halt()
}
