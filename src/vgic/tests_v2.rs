//! GICv2 distributor view over the vGIC core: register semantics, SGIs
//! per source, and their list registers.

use super::v2::{self, Access, Outcome};
use super::*;

/// `vcpus` vCPUs, 32 SPIs, GICv2 view.
fn gic(vcpus: usize) -> Vgic {
    let aff: alloc::vec::Vec<u64> = (0..vcpus as u64).collect();
    Vgic::new(GicVersion::V2, &aff, 32)
}

fn access(g: &mut Vgic, v: usize, off: u64, size: u8, write: Option<u64>) -> Outcome {
    v2::distributor(g, v, &Access { off, size, write })
}

fn rd(g: &mut Vgic, v: usize, off: u64, size: u8) -> u64 {
    match access(g, v, off, size, None) {
        Outcome::Done { value, .. } => value,
        Outcome::Abort => panic!("abort reading {off:#x}/{size}"),
    }
}

fn wr(g: &mut Vgic, v: usize, off: u64, size: u8, val: u64) -> VcpuMask {
    match access(g, v, off, size, Some(val)) {
        Outcome::Done { changed, .. } => changed,
        Outcome::Abort => panic!("abort writing {off:#x}/{size}"),
    }
}

/// GICD_SGIR value: filter, target list, SGI.
fn sgir(filter: u32, list: u8, sgi: u32) -> u64 {
    ((filter << 24) | ((list as u32) << 16) | sgi) as u64
}

/// Pending sources of `sgi` as vCPU `v` reads them in SPENDSGIR.
fn sources(g: &mut Vgic, v: usize, sgi: u64) -> u64 {
    rd(g, v, 0xf20 + sgi, 1)
}

fn fill(g: &mut Vgic, v: usize, n: usize) -> (alloc::vec::Vec<Lr>, Fill) {
    let mut out = alloc::vec![Lr::default(); n];
    let f = g.fill_lrs(v, &mut out);
    (out, f)
}

#[test]
fn ctlr_bit0_enables_both_groups() {
    let mut g = gic(2);
    assert_eq!(rd(&mut g, 0, 0, 4), 0);
    assert_eq!(wr(&mut g, 0, 0, 4, 1), 0b11, "every vCPU's lists");
    assert_eq!(g.groups, 3);
    assert_eq!(rd(&mut g, 1, 0, 4), 1);
    wr(&mut g, 0, 0, 4, 0xfffe);
    assert_eq!(g.groups, 0, "only bit 0 counts");
    assert_eq!(rd(&mut g, 0, 0, 4), 0);
}

#[test]
fn typer_fields() {
    let mut g = gic(3);
    let t = rd(&mut g, 0, 4, 4);
    assert_eq!(t & 0x1f, 1, "32 SPIs: ITLinesNumber 1 (64 INTIDs)");
    assert_eq!((t >> 5) & 7, 2, "CPUNumber = vCPUs - 1");
    assert_eq!(t & (1 << 10), 0, "no Security Extensions");
    assert_eq!(t >> 11, 0);
    wr(&mut g, 0, 4, 4, !0);
    assert_eq!(rd(&mut g, 0, 4, 4), t, "read-only");
    let mut big = Vgic::new(GicVersion::V2, &[0; 12], 100);
    let t = rd(&mut big, 0, 4, 4);
    assert_eq!(t & 0x1f, 4, "128 SPIs: 160 INTIDs");
    assert_eq!((t >> 5) & 7, 7, "at most 8 CPUs");
}

#[test]
fn iidr_pidr2_and_component_id() {
    let mut g = gic(1);
    assert_eq!(rd(&mut g, 0, 8, 4) & 0xfff, 0x43b);
    assert_eq!(rd(&mut g, 0, 0xfe8, 4), 0x2b);
    assert_eq!((rd(&mut g, 0, 0xfe8, 4) >> 4) & 0xf, 2, "ArchRev 2");
    let cidr: alloc::vec::Vec<u64> = (0..4).map(|n| rd(&mut g, 0, 0xff0 + 4 * n, 4)).collect();
    assert_eq!(cidr, [0x0d, 0xf0, 0x05, 0xb1]);
    for off in [0xfd0, 0xfd4, 0xfdc, 0xfe0, 0xfe4, 0xfec] {
        assert_eq!(rd(&mut g, 0, off, 4), 0, "{off:#x}");
    }
    wr(&mut g, 0, 0xfe8, 4, 0);
    assert_eq!(rd(&mut g, 0, 0xfe8, 4), 0x2b, "read-only");
}

#[test]
fn reserved_offsets_read_zero_and_ignore_writes() {
    let mut g = gic(2);
    for off in [
        0xc, 0x10, 0x20, 0x40, 0x7c, 0x7fc, 0xbfc, 0xd00, 0xe00, 0xefc, 0xf04, 0xf0c, 0xf30, 0xfcc,
        0xfd0,
    ] {
        assert_eq!(rd(&mut g, 0, off, 4), 0, "{off:#x}");
        assert_eq!(wr(&mut g, 0, off, 4, !0), 0, "{off:#x}");
        assert_eq!(rd(&mut g, 1, off, 4), 0, "{off:#x}");
    }
    assert_eq!(rd(&mut g, 0, 0xf00, 4), 0, "SGIR is write-only");
}

#[test]
fn bad_sizes_and_alignment_abort() {
    let mut g = gic(2);
    let bad = [
        (0x0u64, 2u8),
        (0x0, 1),
        (0x0, 8),
        (0x4, 1),
        (0x100, 1),
        (0x100, 8),
        (0x102, 4),
        (0x400, 2),
        (0x400, 8),
        (0x401, 4),
        (0x7fc, 1),
        (0x800, 2),
        (0x802, 4),
        (0xc00, 1),
        (0xf00, 1),
        (0xf00, 2),
        (0xf10, 2),
        (0xf21, 4),
        (0xfe8, 1),
        (0x10, 1),
        (0x0, 0),
        (0x0, 3),
        (0x1000, 4),
        (0x2000, 4),
    ];
    for (off, size) in bad {
        for write in [None, Some(0)] {
            assert_eq!(
                access(&mut g, 0, off, size, write),
                Outcome::Abort,
                "{off:#x}/{size}"
            );
        }
    }
    for (off, size) in [
        (0x401u64, 1u8),
        (0x7fb, 1),
        (0x803, 1),
        (0xbfb, 1),
        (0xf13, 1),
    ] {
        assert_ne!(access(&mut g, 0, off, size, None), Outcome::Abort);
    }
    assert_ne!(access(&mut g, 0, 0xf2f, 1, Some(0)), Outcome::Abort);
}

#[test]
fn enable_of_sgis_and_ppis_is_banked_per_vcpu() {
    let mut g = gic(2);
    assert_eq!(wr(&mut g, 0, 0x100, 4, (1 << 3) | (1 << 27)), 1);
    assert_eq!(rd(&mut g, 0, 0x100, 4), (1 << 3) | (1 << 27));
    assert_eq!(rd(&mut g, 0, 0x180, 4), (1 << 3) | (1 << 27));
    assert_eq!(rd(&mut g, 1, 0x100, 4), 0, "vCPU 1 has its own bank");
    assert_eq!(wr(&mut g, 1, 0x100, 4, 1 << 30), 0b10);
    assert_eq!(wr(&mut g, 0, 0x180, 4, 1 << 3), 1);
    assert_eq!(rd(&mut g, 0, 0x100, 4), 1 << 27);
    assert_eq!(rd(&mut g, 1, 0x100, 4), 1 << 30);
    assert!(g.irq(0, 27).unwrap().enabled && !g.irq(1, 27).unwrap().enabled);
}

#[test]
fn enable_of_spis_is_shared() {
    let mut g = gic(2);
    wr(&mut g, 0, 0x104, 4, 0b101);
    assert_eq!(rd(&mut g, 1, 0x104, 4), 0b101);
    wr(&mut g, 1, 0x184, 4, 0b001);
    assert_eq!(rd(&mut g, 0, 0x104, 4), 0b100);
    assert!(g.irq(0, 34).unwrap().enabled);
    wr(&mut g, 0, 0x108, 4, !0);
    assert_eq!(rd(&mut g, 0, 0x108, 4), 0, "INTIDs 64-95 not offered");
}

#[test]
fn groups_reset_to_group0_and_are_writable() {
    let mut g = gic(2);
    assert_eq!(rd(&mut g, 0, 0x80, 4), 0);
    assert_eq!(rd(&mut g, 0, 0x84, 4), 0);
    wr(&mut g, 0, 0x84, 4, 1 << 1);
    assert!(g.irq(0, 33).unwrap().group1);
    wr(&mut g, 1, 0x80, 4, 1 << 20);
    assert_eq!(rd(&mut g, 1, 0x80, 4), 1 << 20);
    assert_eq!(rd(&mut g, 0, 0x80, 4), 0, "banked");
}

#[test]
fn sgi_pending_bits_are_read_only_in_ispendr_and_icpendr() {
    let mut g = gic(2);
    wr(&mut g, 0, 0x200, 4, !0);
    assert_eq!(rd(&mut g, 0, 0x200, 4), 0xffff_0000, "PPIs only");
    wr(&mut g, 1, 0xf00, 4, sgir(0, 0b01, 6));
    assert_eq!(rd(&mut g, 0, 0x200, 4), 0xffff_0000 | (1 << 6));
    assert_eq!(rd(&mut g, 0, 0x280, 4), 0xffff_0000 | (1 << 6));
    wr(&mut g, 0, 0x280, 4, !0);
    assert_eq!(rd(&mut g, 0, 0x200, 4), 1 << 6, "the SGI stays pending");
    assert_eq!(sources(&mut g, 0, 6), 0b10);
    wr(&mut g, 0, 0x204, 4, 1);
    assert!(g.irq(0, 32).unwrap().pending(), "SPIs are writable");
}

#[test]
fn active_set_and_clear() {
    let mut g = gic(2);
    wr(&mut g, 1, 0x300, 4, 1 << 2);
    assert_eq!(rd(&mut g, 1, 0x380, 4), 1 << 2);
    assert_eq!(rd(&mut g, 0, 0x300, 4), 0);
    wr(&mut g, 1, 0x380, 4, 1 << 2);
    assert_eq!(rd(&mut g, 1, 0x300, 4), 0);
    wr(&mut g, 0, 0x304, 4, 1 << 7);
    assert_eq!(rd(&mut g, 1, 0x384, 4), 1 << 7);
}

#[test]
fn itargetsr_private_bytes_read_as_the_reader_and_ignore_writes() {
    let mut g = gic(3);
    for v in 0..3 {
        for off in (0x800..0x820).step_by(4) {
            assert_eq!(rd(&mut g, v, off, 4), 0x0101_0101 << v, "vCPU {v} {off:#x}");
        }
        assert_eq!(rd(&mut g, v, 0x81f, 1), 1 << v);
        assert_eq!(wr(&mut g, v, 0x800, 4, 0), 0);
        assert_eq!(wr(&mut g, v, 0x81d, 1, 0x4), 0);
        assert_eq!(rd(&mut g, v, 0x81c, 4), 0x0101_0101 << v);
    }
}

#[test]
fn itargetsr_spi_bytes_route_and_report_old_and_new_target() {
    let mut g = gic(3);
    assert_eq!(g.spi_target(32), None, "no target after reset");
    assert_eq!(wr(&mut g, 0, 0x820, 1, 0b010), 0b010);
    assert_eq!(g.spi_target(32), Some(1));
    assert_eq!(rd(&mut g, 2, 0x820, 1), 0b010);
    assert_eq!(wr(&mut g, 0, 0x820, 1, 0b100), 0b110, "old and new target");
    assert_eq!(g.spi_target(32), Some(2));
    assert_eq!(wr(&mut g, 1, 0x820, 1, 0), 0b100);
    assert_eq!(g.spi_target(32), None);
    wr(&mut g, 0, 0x821, 1, 0xff);
    assert_eq!(
        rd(&mut g, 0, 0x821, 1),
        0b111,
        "masked to the vCPUs present"
    );
    assert_eq!(g.spi_target(33), Some(0), "the first of several");
    wr(&mut g, 0, 0x823, 1, 0x80);
    assert_eq!(rd(&mut g, 0, 0x823, 1), 0);
    assert_eq!(g.spi_target(35), None);
    wr(&mut g, 0, 0x824, 4, 0x0402_0104);
    assert_eq!(rd(&mut g, 0, 0x824, 4), 0x0402_0104);
    assert_eq!(g.spi_target(36), Some(2));
    assert_eq!(g.spi_target(37), Some(0));
    assert_eq!(g.spi_target(38), Some(1));
    assert_eq!(g.spi_target(39), Some(2));
    assert_eq!(rd(&mut g, 0, 0x820, 4), 0x0000_0700, "byte lanes");
    assert_eq!(wr(&mut g, 0, 0x840, 4, !0), 0, "INTID 64: not offered");
    assert_eq!(rd(&mut g, 0, 0x840, 4), 0);
}

#[test]
fn spi_moved_by_itargetsr_is_delivered_to_the_new_target() {
    let mut g = gic(2);
    wr(&mut g, 0, 0, 4, 1);
    wr(&mut g, 0, 0x104, 4, 1);
    wr(&mut g, 0, 0x820, 1, 0b01);
    wr(&mut g, 0, 0x204, 4, 1);
    assert_eq!(fill(&mut g, 0, 4).1.used, 1);
    g.sync_lrs(0, &[LrState::Pending]);
    wr(&mut g, 0, 0x820, 1, 0b10);
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    let (lrs, f) = fill(&mut g, 1, 4);
    assert_eq!((f.used, lrs[0].intid), (1, 32));
}

#[test]
fn sgir_target_list() {
    let mut g = gic(3);
    assert_eq!(wr(&mut g, 1, 0xf00, 4, sgir(0, 0b101, 5)), 0b101);
    assert_eq!(sources(&mut g, 0, 5), 0b010);
    assert_eq!(sources(&mut g, 2, 5), 0b010);
    assert_eq!(sources(&mut g, 1, 5), 0);
    assert_eq!(rd(&mut g, 0, 0xf15, 1), 0b010, "CPENDSGIR reads the same");
    assert_eq!(
        rd(&mut g, 0, 0xf24, 4),
        0b010 << 8,
        "SGI 5: byte 1 of word 1"
    );
    assert_eq!(wr(&mut g, 1, 0xf00, 4, sgir(0, 0xf8, 5)), 0, "absent vCPUs");
}

#[test]
fn sgir_all_but_self() {
    let mut g = gic(3);
    assert_eq!(wr(&mut g, 2, 0xf00, 4, sgir(1, 0b010, 1)), 0b011);
    assert_eq!(sources(&mut g, 0, 1), 0b100);
    assert_eq!(sources(&mut g, 1, 1), 0b100);
    assert_eq!(sources(&mut g, 2, 1), 0);
}

#[test]
fn sgir_self_only_and_reserved_filter() {
    let mut g = gic(3);
    assert_eq!(wr(&mut g, 0, 0xf00, 4, sgir(2, 0b110, 15)), 0b001);
    assert_eq!(sources(&mut g, 0, 15), 0b001);
    assert_eq!(rd(&mut g, 0, 0xf2c, 4), 1 << 24);
    assert_eq!(sources(&mut g, 1, 15), 0);
    assert_eq!(wr(&mut g, 0, 0xf00, 4, sgir(3, 0b111, 4)), 0, "reserved");
    assert_eq!(rd(&mut g, 0, 0x200, 4), 1 << 15, "only the self SGI");
    assert_eq!(rd(&mut g, 1, 0x200, 4), 0);
    assert_eq!(rd(&mut g, 2, 0x200, 4), 0);
}

#[test]
fn cpendsgir_clears_one_source() {
    let mut g = gic(3);
    wr(&mut g, 0, 0xf00, 4, sgir(0, 0b100, 2));
    wr(&mut g, 1, 0xf00, 4, sgir(0, 0b100, 2));
    assert_eq!(sources(&mut g, 2, 2), 0b011);
    assert_eq!(wr(&mut g, 2, 0xf12, 1, 0b001), 0b100);
    assert_eq!(sources(&mut g, 2, 2), 0b010);
    assert_eq!(rd(&mut g, 2, 0x200, 4), 1 << 2, "still pending from vCPU 1");
    assert_eq!(wr(&mut g, 2, 0xf12, 1, 0b001), 0, "nothing changed");
    assert_eq!(wr(&mut g, 2, 0xf10, 4, 0x00ff_0000), 0b100);
    assert_eq!(sources(&mut g, 2, 2), 0);
    assert_eq!(rd(&mut g, 2, 0x200, 4), 0);
}

#[test]
fn spendsgir_sets_one_source() {
    let mut g = gic(3);
    assert_eq!(wr(&mut g, 1, 0xf20, 4, 0b100 << 8), 0b010);
    assert_eq!(sources(&mut g, 1, 1), 0b100);
    assert_eq!(rd(&mut g, 1, 0x200, 4), 1 << 1);
    assert_eq!(sources(&mut g, 0, 1), 0, "banked");
    assert_eq!(wr(&mut g, 1, 0xf27, 1, 0xf8), 0, "no such source vCPUs");
    assert_eq!(sources(&mut g, 1, 7), 0);
    wr(&mut g, 1, 0xf27, 1, 0b001);
    assert_eq!(sources(&mut g, 1, 7), 0b001);
}

#[test]
fn sgi_from_two_sources_takes_two_list_registers_in_turn() {
    let mut g = gic(3);
    wr(&mut g, 2, 0, 4, 1);
    wr(&mut g, 2, 0x100, 4, 1 << 4);
    wr(&mut g, 1, 0xf00, 4, sgir(0, 0b100, 4));
    wr(&mut g, 0, 0xf00, 4, sgir(0, 0b100, 4));
    let (lrs, f) = fill(&mut g, 2, 4);
    assert_eq!(f.used, 1, "one source per list register");
    assert_eq!((lrs[0].intid, lrs[0].source), (4, 0));
    assert_eq!(lrs[0].state, LrState::Pending);
    assert!(!lrs[0].group1, "group 0 after reset");
    assert_eq!(sources(&mut g, 2, 4), 0b010, "vCPU 1's request waits");
    // Not yet acknowledged: the source goes back, and comes out again.
    g.sync_lrs(2, &[LrState::Pending]);
    assert_eq!(sources(&mut g, 2, 4), 0b011);
    let (lrs, _) = fill(&mut g, 2, 4);
    assert_eq!(lrs[0].source, 0);
    // Acknowledged and deactivated: now the other source.
    g.sync_lrs(2, &[LrState::Invalid]);
    let (lrs, f) = fill(&mut g, 2, 4);
    assert_eq!((f.used, lrs[0].intid, lrs[0].source), (1, 4, 1));
    g.sync_lrs(2, &[LrState::Invalid]);
    assert_eq!(fill(&mut g, 2, 4).1.used, 0);
    assert_eq!(rd(&mut g, 2, 0x200, 4), 0);
}

#[test]
fn filled_sgi_list_register_carries_the_source_cpu() {
    let mut g = gic(3);
    wr(&mut g, 0, 0, 4, 1);
    wr(&mut g, 0, 0x100, 4, 1 << 3);
    wr(&mut g, 0, 0x400, 4, 0xa0 << 24);
    wr(&mut g, 2, 0xf00, 4, sgir(0, 0b001, 3));
    let (lrs, _) = fill(&mut g, 0, 4);
    let raw = v2::encode_lr(&lrs[0]);
    assert_eq!(raw & 0x3ff, 3);
    assert_eq!((raw >> 10) & 7, 2, "CPUID: the requesting vCPU");
    assert_eq!((raw >> 23) & 0x1f, 0xa0 >> 3);
    assert_eq!(raw & (1 << 19), 0, "edge: no EOI maintenance");
    assert_eq!(raw >> 31, 0, "not hardware-linked");
    assert_eq!(v2::lr_state(raw), LrState::Pending);
}

#[test]
fn priority_bytes_and_words() {
    let mut g = gic(2);
    assert_eq!(wr(&mut g, 0, 0x421, 1, 0xff), 0, "SPI 33 has no target");
    assert_eq!(g.priority(0, 33), 0xf8);
    assert_eq!(rd(&mut g, 1, 0x421, 1), 0xf8);
    assert_eq!(rd(&mut g, 0, 0x420, 4), 0xf800);
    wr(&mut g, 0, 0x424, 4, 0x1020_3040);
    assert_eq!(rd(&mut g, 0, 0x427, 1), 0x10);
    assert_eq!(rd(&mut g, 0, 0x424, 4), 0x1020_3040);
    assert_eq!(
        wr(&mut g, 1, 0x404, 4, 0x8888_8888),
        0b10,
        "banked SGIs 4-7"
    );
    assert_eq!(rd(&mut g, 0, 0x404, 4), 0);
    assert_eq!(rd(&mut g, 1, 0x407, 1), 0x88);
    assert_eq!(rd(&mut g, 0, 0x7f8, 4), 0, "not offered");
}

#[test]
fn icfgr_sgis_read_only_edge() {
    let mut g = gic(2);
    assert_eq!(rd(&mut g, 0, 0xc00, 4), 0xaaaa_aaaa);
    wr(&mut g, 0, 0xc00, 4, 0);
    assert_eq!(rd(&mut g, 0, 0xc00, 4), 0xaaaa_aaaa);
    assert_eq!(rd(&mut g, 0, 0xc04, 4), 0, "PPIs level after reset");
    wr(&mut g, 1, 0xc04, 4, 2 << 6);
    assert!(g.irq(1, 19).unwrap().edge && !g.irq(0, 19).unwrap().edge);
    wr(&mut g, 0, 0xc08, 4, 2 << 2);
    assert_eq!(rd(&mut g, 1, 0xc08, 4), 2 << 2);
    assert!(g.irq(0, 33).unwrap().edge);
}

#[test]
fn more_than_eight_vcpus_only_the_first_eight_are_addressable() {
    let mut g = gic(10);
    assert_eq!(rd(&mut g, 9, 0x800, 4), 0, "vCPU 9 has no target bit");
    wr(&mut g, 0, 0x820, 1, 0xff);
    assert_eq!(rd(&mut g, 0, 0x820, 1), 0xff);
    assert_eq!(wr(&mut g, 0, 0xf00, 4, sgir(1, 0, 0)), 0xfe);
    assert_eq!(sources(&mut g, 8, 0), 0);
    assert_eq!(wr(&mut g, 9, 0xf00, 4, sgir(1, 0, 1)), 0, "no source ID");
    assert_eq!(sources(&mut g, 0, 1), 0);
    wr(&mut g, 9, 0x100, 4, 1);
    assert_eq!(rd(&mut g, 9, 0x100, 4), 1, "its own bank still works");
}

#[test]
fn every_offset_and_size_is_answered_without_panic() {
    let mut g = gic(3);
    for off in 0..0x1004u64 {
        for size in [0u8, 1, 2, 3, 4, 8] {
            for write in [None, Some(!0u64), Some(0x0101_0101)] {
                for v in [0, 2, 5] {
                    let _ = access(&mut g, v, off, size, write);
                }
            }
        }
    }
    for v in 0..3 {
        let (lrs, _) = fill(&mut g, v, 16);
        for lr in &lrs {
            let _ = v2::encode_lr(lr);
        }
    }
}

#[test]
fn an_active_sgi_keeps_its_source_in_the_list_register() {
    let mut g = gic(3);
    wr(&mut g, 0, 0, 4, 1);
    wr(&mut g, 0, 0x100, 4, 1 << 5);
    // SGI 5 from vCPU 2 to vCPU 0; the guest acknowledges it.
    wr(&mut g, 2, 0xf00, 4, sgir(0, 0b001, 5));
    let (lrs, _) = fill(&mut g, 0, 4);
    assert_eq!(lrs[0].source, 2);
    g.sync_lrs(0, &[LrState::Active]);
    // Refilled while active: still the CPU id of vCPU 2, so the guest's
    // EOI (which names source and INTID) matches it.
    let (lrs, _) = fill(&mut g, 0, 4);
    assert_eq!(
        (lrs[0].intid, lrs[0].state, lrs[0].source),
        (5, LrState::Active, 2)
    );
    assert_eq!((v2::encode_lr(&lrs[0]) >> 10) & 7, 2);
}
