//! vGIC core and GICv3 view: register semantics and delivery scenarios.

use super::v3::{self, Access, Outcome};
use super::*;

/// Two vCPUs (MPIDR Aff0 0 and 1), 32 SPIs, GICv3 view.
fn gic(vcpus: usize) -> Vgic {
    let aff: alloc::vec::Vec<u64> = (0..vcpus as u64)
        .map(|n| (n & 0xf) | ((n >> 4) << 8))
        .collect();
    Vgic::new(GicVersion::V3, &aff, 32)
}

fn rd(g: &mut Vgic, v: usize, frame_dist: bool, off: u64, size: u8) -> u64 {
    let a = Access {
        off,
        size,
        write: None,
    };
    let o = if frame_dist {
        v3::distributor(g, v, &a)
    } else {
        v3::redistributor(g, v, &a)
    };
    match o {
        Outcome::Done { value, .. } => value,
        Outcome::Abort => panic!("abort reading {off:#x}/{size}"),
    }
}

fn wr(g: &mut Vgic, v: usize, frame_dist: bool, off: u64, size: u8, val: u64) -> VcpuMask {
    let a = Access {
        off,
        size,
        write: Some(val),
    };
    let o = if frame_dist {
        v3::distributor(g, v, &a)
    } else {
        v3::redistributor(g, v, &a)
    };
    match o {
        Outcome::Done { changed, .. } => changed,
        Outcome::Abort => panic!("abort writing {off:#x}/{size}"),
    }
}

const SGI: u64 = 0x1_0000;

/// Enables `intid` (private ones through vCPU `v`'s SGI frame), group 1 on.
fn enable(g: &mut Vgic, v: usize, intid: u32) {
    wr(g, v, true, 0, 4, 2);
    if intid < PRIVATE {
        wr(
            g,
            v,
            false,
            v as u64 * v3::GICR_STRIDE + SGI + 0x100,
            4,
            1 << intid,
        );
    } else {
        wr(
            g,
            v,
            true,
            0x100 + (intid / 32 * 4) as u64,
            4,
            1 << (intid % 32),
        );
    }
}

fn fill(g: &mut Vgic, v: usize, n: usize) -> (alloc::vec::Vec<Lr>, Fill) {
    let mut out = alloc::vec![Lr::default(); n];
    let f = g.fill_lrs(v, &mut out);
    (out, f)
}

/// What the hardware would show after the guest acknowledged list
/// register `n` (pending -> active).
fn states(lrs: &[Lr]) -> alloc::vec::Vec<LrState> {
    lrs.iter().map(|l| l.state).collect()
}

// ---- distributor registers -------------------------------------------

#[test]
fn ctlr_has_are_and_ds_and_keeps_group_enables() {
    let mut g = gic(2);
    assert_eq!(rd(&mut g, 0, true, 0, 4), 0x50);
    wr(&mut g, 0, true, 0, 4, 0x13);
    assert_eq!(rd(&mut g, 0, true, 0, 4), 0x53);
}

#[test]
fn typer_reports_spis_offered_and_id_bits() {
    let mut g = gic(2);
    let t = rd(&mut g, 0, true, 4, 4);
    assert_eq!(t & 0x1f, 1, "32 SPIs: ITLinesNumber 1 (64 INTIDs)");
    assert_eq!((t >> 19) & 0x1f, 9);
    assert_eq!((t >> 5) & 7, 1, "CPUNumber = vCPUs - 1");
    let g2 = Vgic::new(GicVersion::V3, &[0], 40);
    assert_eq!(g2.spis(), 64, "rounded up to whole registers");
}

#[test]
fn pidr2_and_iidr() {
    let mut g = gic(1);
    assert_eq!((rd(&mut g, 0, true, 0xffe8, 4) >> 4) & 0xf, 3);
    assert_eq!(rd(&mut g, 0, true, 8, 4) & 0xfff, 0x43b);
    assert_eq!((rd(&mut g, 0, false, 0xffe8, 4) >> 4) & 0xf, 3);
}

#[test]
fn reserved_offsets_read_zero_and_ignore_writes() {
    let mut g = gic(1);
    for off in [0xc, 0x10, 0x40, 0xf00, 0xe00, 0x6000, 0xd000] {
        assert_eq!(rd(&mut g, 0, true, off, 4), 0, "{off:#x}");
        assert_eq!(wr(&mut g, 0, true, off, 4, !0), 0, "{off:#x}");
        assert_eq!(rd(&mut g, 0, true, off, 4), 0, "{off:#x}");
    }
}

#[test]
fn bad_sizes_and_alignment_abort() {
    let mut g = gic(1);
    let cases = [
        (0x0u64, 2u8),
        (0x0, 1),
        (0x100, 8),
        (0x102, 4),
        (0x401, 2),
        (0x6101, 8),
        (0x6104, 8),
    ];
    for (off, size) in cases {
        let a = Access {
            off,
            size,
            write: None,
        };
        assert_eq!(
            v3::distributor(&mut g, 0, &a),
            Outcome::Abort,
            "{off:#x}/{size}"
        );
    }
    let a = Access {
        off: 0x10000,
        size: 4,
        write: None,
    };
    assert_eq!(
        v3::distributor(&mut g, 0, &a),
        Outcome::Abort,
        "outside the frame"
    );
    let a = Access {
        off: 0x14,
        size: 8,
        write: None,
    };
    assert_eq!(
        v3::redistributor(&mut g, 0, &a),
        Outcome::Abort,
        "WAKER is 32-bit"
    );
}

#[test]
fn private_interrupts_are_raz_wi_in_the_distributor() {
    let mut g = gic(1);
    wr(&mut g, 0, true, 0x100, 4, !0);
    assert_eq!(rd(&mut g, 0, true, 0x100, 4), 0);
    assert!(!g.irq(0, 27).unwrap().enabled);
}

#[test]
fn enable_set_and_clear() {
    let mut g = gic(1);
    wr(&mut g, 0, true, 0x104, 4, 0b101);
    assert_eq!(rd(&mut g, 0, true, 0x104, 4), 0b101);
    assert_eq!(rd(&mut g, 0, true, 0x184, 4), 0b101);
    wr(&mut g, 0, true, 0x184, 4, 0b001);
    assert_eq!(rd(&mut g, 0, true, 0x104, 4), 0b100);
}

#[test]
fn pending_and_active_set_and_clear() {
    let mut g = gic(1);
    wr(&mut g, 0, true, 0x204, 4, 1 << 3);
    assert_eq!(rd(&mut g, 0, true, 0x284, 4), 1 << 3);
    wr(&mut g, 0, true, 0x284, 4, 1 << 3);
    assert_eq!(rd(&mut g, 0, true, 0x204, 4), 0);
    wr(&mut g, 0, true, 0x304, 4, 1 << 7);
    assert_eq!(rd(&mut g, 0, true, 0x384, 4), 1 << 7);
    wr(&mut g, 0, true, 0x384, 4, 1 << 7);
    assert_eq!(rd(&mut g, 0, true, 0x304, 4), 0);
}

#[test]
fn spis_beyond_those_offered_are_raz_wi() {
    let mut g = gic(1);
    wr(&mut g, 0, true, 0x108, 4, !0); // INTIDs 64..95: not offered
    assert_eq!(rd(&mut g, 0, true, 0x108, 4), 0);
    assert_eq!(rd(&mut g, 0, true, 0x6000 + 8 * 64, 8), 0);
}

#[test]
fn group_registers_reset_to_group1_and_are_writable() {
    let mut g = gic(1);
    assert_eq!(rd(&mut g, 0, true, 0x84, 4), 0xffff_ffff);
    wr(&mut g, 0, true, 0x84, 4, 0xffff_0000);
    assert_eq!(rd(&mut g, 0, true, 0x84, 4), 0xffff_0000);
    assert!(!g.irq(0, 32).unwrap().group1);
}

#[test]
fn priority_bytes_words_and_implemented_bits() {
    let mut g = gic(1);
    wr(&mut g, 0, true, 0x420, 4, 0x1122_33ff);
    assert_eq!(rd(&mut g, 0, true, 0x420, 4), 0x1020_30f8);
    wr(&mut g, 0, true, 0x421, 1, 0xa0);
    assert_eq!(rd(&mut g, 0, true, 0x421, 1), 0xa0);
    assert_eq!(rd(&mut g, 0, true, 0x420, 4), 0x1020_a0f8);
    assert_eq!(g.priority(0, 33), 0xa0);
}

#[test]
fn icfgr_edge_and_level_sgis_fixed() {
    let mut g = gic(1);
    wr(&mut g, 0, true, 0xc08, 4, 0b10 << 2); // INTID 33 edge
    assert!(g.irq(0, 33).unwrap().edge);
    assert_eq!(rd(&mut g, 0, true, 0xc08, 4), 0b10 << 2);
    // SGIs: edge, read-only, in the SGI frame.
    wr(&mut g, 0, false, SGI + 0xc00, 4, 0);
    assert_eq!(rd(&mut g, 0, false, SGI + 0xc00, 4), 0xaaaa_aaaa);
    wr(&mut g, 0, false, SGI + 0xc04, 4, 0b10 << 22); // PPI 27 edge
    assert!(g.irq(0, 27).unwrap().edge);
}

#[test]
fn irouter_64_and_32_bit_halves() {
    let mut g = gic(2);
    let off = 0x6000 + 8 * 40;
    wr(&mut g, 0, true, off, 8, 0xff_ffff_ffff_ffff);
    assert_eq!(
        rd(&mut g, 0, true, off, 8),
        0xff_80ff_ffff,
        "reserved bits masked"
    );
    wr(&mut g, 0, true, off, 4, 1);
    wr(&mut g, 0, true, off + 4, 4, 0);
    assert_eq!(rd(&mut g, 0, true, off, 8), 1);
    assert_eq!(g.spi_target(40), Some(1));
    assert_eq!(rd(&mut g, 0, true, off + 4, 4), 0);
}

// ---- redistributors --------------------------------------------------

#[test]
fn redistributor_typer_affinity_number_and_last() {
    let aff = [0x0, 0x1, 0x100, 0x1_0000_0203];
    let mut g = Vgic::new(GicVersion::V3, &aff, 32);
    for (n, a) in aff.iter().enumerate() {
        let t = rd(&mut g, 0, false, n as u64 * v3::GICR_STRIDE + 8, 8);
        let want = (((a >> 32) & 0xff) << 24) | (a & 0xff_ffff);
        assert_eq!(t >> 32, want, "frame {n}");
        assert_eq!((t >> 8) & 0xffff, n as u64);
        assert_eq!(t & (1 << 4) != 0, n == 3, "Last only on the last frame");
        let hi = rd(&mut g, 0, false, n as u64 * v3::GICR_STRIDE + 0xc, 4);
        assert_eq!(hi, t >> 32);
    }
    // Beyond the last frame: RAZ.
    assert_eq!(rd(&mut g, 0, false, 4 * v3::GICR_STRIDE + 8, 8), 0);
}

#[test]
fn waker_sleep_handshake() {
    let mut g = gic(2);
    let waker = v3::GICR_STRIDE + 0x14;
    assert_eq!(rd(&mut g, 0, false, waker, 4), 0b110);
    wr(&mut g, 0, false, waker, 4, 0);
    assert_eq!(
        rd(&mut g, 0, false, waker, 4),
        0,
        "ChildrenAsleep follows at once"
    );
    assert!(!g.vcpu(1).unwrap().asleep);
    assert!(g.vcpu(0).unwrap().asleep, "frame 1 is vCPU 1's");
}

#[test]
fn sgi_frame_is_banked_per_vcpu() {
    let mut g = gic(2);
    wr(&mut g, 0, false, v3::GICR_STRIDE + SGI + 0x100, 4, 1 << 27);
    assert!(g.irq(1, 27).unwrap().enabled);
    assert!(!g.irq(0, 27).unwrap().enabled);
    wr(&mut g, 0, false, SGI + 0x41b, 1, 0xa0);
    assert_eq!(g.priority(0, 27), 0xa0);
    assert_eq!(g.priority(1, 27), 0);
}

// ---- SGI generation ----------------------------------------------------

#[test]
fn sgi1r_target_list_affinity_and_irm() {
    let aff: alloc::vec::Vec<u64> = (0..20u64).map(|n| (n & 0xf) | ((n >> 4) << 8)).collect();
    let g = Vgic::new(GicVersion::V3, &aff, 32);
    // SGI 3 to Aff0 1 and 2 in Aff1 0.
    assert_eq!(v3::sgi_targets(&g, 0, (3 << 24) | 0b110), (3, 0b110));
    // Aff1 = 1: vCPUs 16.. (Aff0 = n & 0xf)
    assert_eq!(
        v3::sgi_targets(&g, 0, (1 << 16) | 0b11),
        (0, (1 << 16) | (1 << 17))
    );
    // IRM: every other vCPU of the domain.
    let (_, m) = v3::sgi_targets(&g, 5, 1 << 40);
    assert_eq!(m, ((1 << 20) - 1) & !(1 << 5));
    // An affinity no vCPU has reaches nobody.
    assert_eq!(v3::sgi_targets(&g, 0, (7 << 32) | 1).1, 0);
    // RS = 1 selects Aff0 16..31, which none of these vCPUs has.
    assert_eq!(v3::sgi_targets(&g, 0, (1 << 44) | 1).1, 0);
}

#[test]
fn cross_vcpu_sgi_is_pending_on_the_target_only() {
    let mut g = gic(2);
    enable(&mut g, 1, 1);
    let m = g.send_sgi(0, 0b10, 1);
    assert_eq!(m, 0b10);
    assert!(g.irq(1, 1).unwrap().pending());
    assert!(!g.irq(0, 1).unwrap().pending());
    let (lrs, f) = fill(&mut g, 1, 4);
    assert_eq!(f.used, 1);
    assert_eq!((lrs[0].intid, lrs[0].state), (1, LrState::Pending));
    let (_, f0) = fill(&mut g, 0, 4);
    assert_eq!(f0.used, 0);
}

// ---- list registers ------------------------------------------------------

#[test]
fn nothing_pending_fills_nothing() {
    let mut g = gic(1);
    let (_, f) = fill(&mut g, 0, 4);
    assert_eq!(f, Fill::default());
}

#[test]
fn disabled_or_group_disabled_interrupts_stay_out() {
    let mut g = gic(1);
    g.inject(0, 40);
    assert_eq!(fill(&mut g, 0, 4).1.used, 0, "not enabled");
    wr(&mut g, 0, true, 0x104, 4, 1 << 8);
    assert_eq!(
        fill(&mut g, 0, 4).1.used,
        0,
        "group 1 not enabled in GICD_CTLR"
    );
    wr(&mut g, 0, true, 0, 4, 2);
    let (lrs, f) = fill(&mut g, 0, 4);
    assert_eq!((f.used, lrs[0].intid), (1, 40));
}

#[test]
fn priority_order_with_more_pending_than_list_registers() {
    let mut g = gic(1);
    wr(&mut g, 0, true, 0, 4, 2);
    wr(&mut g, 0, true, 0x104, 4, !0);
    // INTIDs 32..40 pending; priorities descending so the highest INTID wins.
    for (k, id) in (32..40u32).enumerate() {
        g.set_priority(0, id, 0xf0 - (k as u8) * 0x10);
        g.inject(0, id);
    }
    let (lrs, f) = fill(&mut g, 0, 4);
    assert_eq!(f.used, 4);
    assert!(
        f.no_pending_irq,
        "more wait: maintenance when none is pending"
    );
    let ids: alloc::vec::Vec<u32> = lrs.iter().map(|l| l.intid).collect();
    assert_eq!(ids, [39, 38, 37, 36]);
    // The guest takes all four (acknowledges and completes them).
    g.sync_lrs(0, &[LrState::Invalid; 4]);
    let (lrs, f) = fill(&mut g, 0, 4);
    let ids: alloc::vec::Vec<u32> = lrs.iter().map(|l| l.intid).collect();
    assert_eq!(ids, [35, 34, 33, 32]);
    assert!(!f.no_pending_irq, "everything fits now");
    g.sync_lrs(0, &[LrState::Invalid; 4]);
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
}

#[test]
fn equal_priority_goes_by_intid() {
    let mut g = gic(1);
    enable(&mut g, 0, 35);
    enable(&mut g, 0, 33);
    g.inject(0, 35);
    g.inject(0, 33);
    let (lrs, _) = fill(&mut g, 0, 1);
    assert_eq!(lrs[0].intid, 33);
}

#[test]
fn unacknowledged_interrupt_stays_pending_and_is_not_duplicated() {
    let mut g = gic(1);
    enable(&mut g, 0, 33);
    g.inject(0, 33);
    let (lrs, _) = fill(&mut g, 0, 4);
    g.sync_lrs(0, &states(&lrs)); // guest has not taken it
    assert!(g.irq(0, 33).unwrap().pending());
    let (lrs, f) = fill(&mut g, 0, 4);
    assert_eq!((f.used, lrs[0].state), (1, LrState::Pending));
}

#[test]
fn edge_while_active_becomes_pending_and_active() {
    let mut g = gic(1);
    enable(&mut g, 0, 33);
    wr(&mut g, 0, true, 0xc08, 4, 0b10 << 2);
    g.inject(0, 33);
    fill(&mut g, 0, 4);
    g.sync_lrs(
        0,
        &[
            LrState::Active,
            LrState::Invalid,
            LrState::Invalid,
            LrState::Invalid,
        ],
    );
    assert!(g.irq(0, 33).unwrap().active());
    assert!(
        !g.irq(0, 33).unwrap().pending(),
        "acknowledged: latch cleared"
    );
    g.inject(0, 33);
    let (lrs, _) = fill(&mut g, 0, 4);
    assert_eq!(lrs[0].state, LrState::PendingActive);
    assert!(!lrs[0].eoi_maintenance, "edge: no maintenance");
}

#[test]
fn active_interrupts_keep_their_list_register_before_higher_priority_pending() {
    let mut g = gic(1);
    enable(&mut g, 0, 33);
    enable(&mut g, 0, 34);
    g.set_priority(0, 33, 0xf0);
    g.set_priority(0, 34, 0x10);
    g.inject(0, 33);
    fill(&mut g, 0, 1);
    g.sync_lrs(0, &[LrState::Active]);
    g.inject(0, 34);
    let (lrs, f) = fill(&mut g, 0, 1);
    assert_eq!((lrs[0].intid, lrs[0].state), (33, LrState::Active));
    assert!(f.underflow_irq, "only actives fit: refill when they finish");
    g.sync_lrs(0, &[LrState::Invalid]);
    let (lrs, _) = fill(&mut g, 0, 1);
    assert_eq!(lrs[0].intid, 34);
}

#[test]
fn level_interrupt_resampled_at_eoi() {
    let mut g = gic(1);
    enable(&mut g, 0, 32);
    g.set_line(0, 32, true);
    let (lrs, _) = fill(&mut g, 0, 4);
    assert!(
        lrs[0].eoi_maintenance,
        "a level line asks for EOI maintenance"
    );
    // Guest acknowledges and deactivates without clearing the source.
    g.sync_lrs(0, &[LrState::Invalid; 4]);
    let (lrs, f) = fill(&mut g, 0, 4);
    assert_eq!(
        (f.used, lrs[0].state),
        (1, LrState::Pending),
        "line still high"
    );
    // The source is cleared while it is active: no longer pending.
    g.sync_lrs(
        0,
        &[
            LrState::Active,
            LrState::Invalid,
            LrState::Invalid,
            LrState::Invalid,
        ],
    );
    g.set_line(0, 32, false);
    let (lrs, _) = fill(&mut g, 0, 4);
    assert_eq!(lrs[0].state, LrState::Active);
    g.sync_lrs(0, &[LrState::Invalid; 4]);
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
}

#[test]
fn level_line_dropped_before_acknowledge_is_withdrawn() {
    let mut g = gic(1);
    enable(&mut g, 0, 32);
    g.set_line(0, 32, true);
    let (lrs, _) = fill(&mut g, 0, 4);
    g.sync_lrs(0, &states(&lrs));
    g.set_line(0, 32, false);
    assert!(!g.irq(0, 32).unwrap().pending(), "the line, not a latch");
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
}

#[test]
fn level_with_ispendr_latch_survives_line_drop() {
    let mut g = gic(1);
    enable(&mut g, 0, 32);
    wr(&mut g, 0, true, 0x204, 4, 1);
    g.set_line(0, 32, true);
    g.set_line(0, 32, false);
    assert!(g.irq(0, 32).unwrap().pending());
    let (lrs, _) = fill(&mut g, 0, 4);
    g.sync_lrs(0, &states(&lrs));
    assert!(
        g.irq(0, 32).unwrap().pending(),
        "latch restored: not acknowledged"
    );
}

#[test]
fn disable_while_pending_withdraws_from_list_registers() {
    let mut g = gic(1);
    enable(&mut g, 0, 33);
    g.inject(0, 33);
    let (lrs, _) = fill(&mut g, 0, 4);
    g.sync_lrs(0, &states(&lrs));
    wr(&mut g, 0, true, 0x184, 4, 1 << 1);
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    assert!(
        g.irq(0, 33).unwrap().pending(),
        "still pending, just not forwarded"
    );
    wr(&mut g, 0, true, 0x104, 4, 1 << 1);
    assert_eq!(fill(&mut g, 0, 4).1.used, 1);
}

#[test]
fn eoi_without_deactivation_stays_active() {
    // With EOImode 1 the guest's EOI only drops priority: the list
    // register still shows it active and it keeps its slot.
    let mut g = gic(1);
    enable(&mut g, 0, 33);
    g.inject(0, 33);
    fill(&mut g, 0, 4);
    g.sync_lrs(
        0,
        &[
            LrState::Active,
            LrState::Invalid,
            LrState::Invalid,
            LrState::Invalid,
        ],
    );
    let (lrs, _) = fill(&mut g, 0, 4);
    assert_eq!((lrs[0].intid, lrs[0].state), (33, LrState::Active));
    assert_eq!(rd(&mut g, 0, true, 0x304, 4), 1 << 1, "ISACTIVER shows it");
}

#[test]
fn hardware_linked_timer() {
    let mut g = gic(1);
    enable(&mut g, 0, 27);
    g.inject_hw(0, 27, 27);
    let (lrs, _) = fill(&mut g, 0, 4);
    assert_eq!(lrs[0].pintid, Some(27));
    assert!(!lrs[0].eoi_maintenance, "the hardware deactivates it");
    let raw = v3::encode_lr(&lrs[0]);
    assert_eq!(raw & (1 << 61), 1 << 61, "HW bit");
    assert_eq!((raw >> 32) & 0x1fff, 27);
    assert_eq!(v3::lr_state(raw), LrState::Pending);
    g.sync_lrs(0, &[LrState::Invalid; 4]);
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    assert_eq!(g.take_hw_deactivate(0), 0);
}

#[test]
fn clearing_a_hardware_linked_interrupt_deactivates_the_physical_one() {
    let mut g = gic(1);
    enable(&mut g, 0, 27);
    g.inject_hw(0, 27, 27);
    wr(&mut g, 0, false, SGI + 0x280, 4, 1 << 27);
    assert_eq!(g.take_hw_deactivate(0), 1 << 27);
    assert_eq!(g.take_hw_deactivate(0), 0, "once");
    g.inject_hw(0, 27, 27);
    fill(&mut g, 0, 4);
    g.sync_lrs(
        0,
        &[
            LrState::Active,
            LrState::Invalid,
            LrState::Invalid,
            LrState::Invalid,
        ],
    );
    wr(&mut g, 0, false, SGI + 0x380, 4, 1 << 27);
    assert_eq!(g.take_hw_deactivate(0), 1 << 27);
}

#[test]
fn a_timer_disabled_while_pending_is_withdrawn_and_deactivated() {
    let mut g = gic(1);
    enable(&mut g, 0, 27);
    // Firing: the physical interrupt reached EL2 and was injected.
    g.inject_hw(0, 27, 27);
    g.set_hw_level(0, 27, true);
    assert_eq!(rd(&mut g, 0, false, SGI + 0x200, 4) & (1 << 27), 1 << 27);
    assert_eq!(fill(&mut g, 0, 4).1.used, 1);
    // The guest disables (or masks) the timer; at the next trap its list
    // registers are taken back and the level sampled low.
    g.sync_lrs(
        0,
        &[
            LrState::Pending,
            LrState::Invalid,
            LrState::Invalid,
            LrState::Invalid,
        ],
    );
    assert_eq!(g.set_hw_level(0, 27, false), 1);
    assert_eq!(rd(&mut g, 0, false, SGI + 0x200, 4) & (1 << 27), 0);
    assert_eq!(rd(&mut g, 0, false, SGI + 0x280, 4) & (1 << 27), 0);
    assert_eq!(fill(&mut g, 0, 4).1.used, 0, "not delivered any more");
    assert_eq!(
        g.take_hw_deactivate(0),
        1 << 27,
        "the physical one deactivated"
    );
    // Sampled low again: nothing more to do.
    assert_eq!(g.set_hw_level(0, 27, false), 0);
    assert_eq!(g.take_hw_deactivate(0), 0);
}

#[test]
fn a_firing_timer_reads_pending_before_its_interrupt_reaches_el2() {
    let mut g = gic(1);
    enable(&mut g, 0, 27);
    g.set_hw_level(0, 27, true);
    assert_eq!(rd(&mut g, 0, false, SGI + 0x200, 4) & (1 << 27), 1 << 27);
    // Reading it changes nothing: no list register is filled from it.
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    g.set_hw_level(0, 27, false);
    assert_eq!(rd(&mut g, 0, false, SGI + 0x200, 4) & (1 << 27), 0);
}

#[test]
fn a_timer_the_guest_already_took_stays_active() {
    let mut g = gic(1);
    enable(&mut g, 0, 27);
    g.inject_hw(0, 27, 27);
    fill(&mut g, 0, 4);
    g.sync_lrs(
        0,
        &[
            LrState::Active,
            LrState::Invalid,
            LrState::Invalid,
            LrState::Invalid,
        ],
    );
    // Disabled in its handler: the guest's deactivation ends it as usual.
    assert_eq!(g.set_hw_level(0, 27, false), 0);
    assert_eq!(g.take_hw_deactivate(0), 0);
    assert_eq!(rd(&mut g, 0, false, SGI + 0x300, 4) & (1 << 27), 1 << 27);
}

#[test]
fn spi_routing_follows_irouter_and_moves() {
    let mut g = gic(2);
    enable(&mut g, 0, 40);
    wr(&mut g, 0, true, 0x6000 + 8 * 40, 8, 1);
    let m = g.inject(0, 40);
    assert_eq!(m, 0b10, "post to vCPU 1");
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    assert_eq!(fill(&mut g, 1, 4).1.used, 1);
    // Rerouted while in vCPU 1's list registers: not duplicated on vCPU 0.
    let m = wr(&mut g, 0, true, 0x6000 + 8 * 40, 8, 0);
    assert_eq!(m & 0b11, 0b11);
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    g.sync_lrs(
        1,
        &[
            LrState::Pending,
            LrState::Invalid,
            LrState::Invalid,
            LrState::Invalid,
        ],
    );
    assert_eq!(fill(&mut g, 0, 4).1.used, 1);
}

#[test]
fn irm_routes_to_an_awake_vcpu() {
    let mut g = gic(2);
    wr(&mut g, 0, true, 0x6000 + 8 * 33, 8, 1 << 31);
    wr(&mut g, 0, false, v3::GICR_STRIDE + 0x14, 4, 0); // vCPU 1 awake
    assert_eq!(g.spi_target(33), Some(1));
}

#[test]
fn unrouted_spi_is_not_delivered_anywhere() {
    let mut g = gic(2);
    enable(&mut g, 0, 40);
    wr(&mut g, 0, true, 0x6000 + 8 * 40, 8, 0x5);
    assert_eq!(g.inject(0, 40), 0);
    assert_eq!(fill(&mut g, 0, 4).1.used, 0);
    assert_eq!(fill(&mut g, 1, 4).1.used, 0);
}

#[test]
fn reset_forgets_everything() {
    let mut g = gic(2);
    enable(&mut g, 0, 40);
    g.inject(0, 40);
    wr(&mut g, 0, false, 0x14, 4, 0);
    fill(&mut g, 0, 4);
    g.reset();
    assert_eq!(g.groups, 0);
    assert!(!g.irq(0, 40).unwrap().enabled && !g.irq(0, 40).unwrap().pending());
    assert!(g.vcpu(0).unwrap().asleep);
    g.sync_lrs(0, &[LrState::Pending; 4]);
    assert!(
        !g.irq(0, 40).unwrap().pending(),
        "list registers were forgotten"
    );
}

#[test]
fn lr_encoding_fields() {
    let lr = Lr {
        intid: 33,
        pintid: None,
        priority: 0xa0,
        group1: true,
        state: LrState::PendingActive,
        eoi_maintenance: true,
        source: 0,
    };
    let raw = v3::encode_lr(&lr);
    assert_eq!(raw & 0xffff_ffff, 33);
    assert_eq!((raw >> 48) & 0xff, 0xa0);
    assert_ne!(raw & (1 << 60), 0);
    assert_ne!(raw & (1 << 41), 0);
    assert_eq!(raw & (1 << 61), 0);
    assert_eq!(v3::lr_state(raw), LrState::PendingActive);
    let raw2 = v2::encode_lr(&Lr {
        source: 3,
        eoi_maintenance: false,
        intid: 2,
        ..lr
    });
    assert_eq!(raw2 & 0x3ff, 2);
    assert_eq!((raw2 >> 10) & 7, 3);
    assert_eq!((raw2 >> 23) & 0x1f, 0xa0 >> 3);
    assert_eq!(v2::lr_state(raw2), LrState::PendingActive);
}

#[test]
fn every_offset_and_size_is_answered_without_panic() {
    let mut g = gic(3);
    for off in (0..0x1_0004u64).step_by(4) {
        for size in [1u8, 2, 4, 8] {
            for write in [None, Some(!0u64)] {
                let a = Access { off, size, write };
                let _ = v3::distributor(&mut g, 0, &a);
                let _ = v3::redistributor(&mut g, 2, &a);
                let b = Access {
                    off: off + 0x1_0000,
                    size,
                    write,
                };
                let _ = v3::redistributor(&mut g, 1, &b);
            }
        }
    }
    for v in 0..3 {
        fill(&mut g, v, 16);
    }
}

// ---- assigned devices' SPIs (hardware-linked for good) ----------------

#[test]
fn linked_spi_goes_to_its_target_with_the_physical_intid() {
    let mut g = gic(2);
    assert!(g.link_spi(40, false));
    assert!(!g.link_spi(200, true), "beyond the SPIs offered");
    assert!(!g.link_spi(27, true), "a PPI is not an SPI");
    enable(&mut g, 1, 40);
    // IROUTER of INTID 40 -> vCPU 1 (Aff0 = 1).
    wr(&mut g, 0, true, 0x6000 + 40 * 8, 8, 1);
    assert_eq!(
        g.inject_hw(0, 40, 40),
        1 << 1,
        "posted to the target, not the taker"
    );
    let (lrs, _) = fill(&mut g, 1, 4);
    assert_eq!(lrs[0].intid, 40);
    assert_eq!(lrs[0].pintid, Some(40));
    assert!(
        !lrs[0].eoi_maintenance,
        "a hardware-linked LR has no EOI maintenance"
    );
    let (lrs0, _) = fill(&mut g, 0, 4);
    assert_eq!(lrs0[0].state, LrState::Invalid, "vCPU 0 gets nothing");
}

#[test]
fn linked_spi_survives_a_reset_and_keeps_its_trigger() {
    let mut g = gic(1);
    assert!(g.link_spi(50, true));
    g.reset();
    let i = g.irq(0, 50).unwrap();
    assert_eq!(i.hw, Some(50));
    assert!(i.edge);
    assert_eq!(g.linked_spis(), &[(50, true)]);
    assert!(g.irq(0, 51).unwrap().hw.is_none());
}

#[test]
fn clearing_a_linked_spi_asks_for_its_physical_deactivation() {
    let mut g = gic(1);
    g.link_spi(40, false);
    enable(&mut g, 0, 40);
    g.inject_hw(0, 40, 40);
    // ICPENDR: pending cleared while not active -> the physical one too.
    wr(&mut g, 0, true, 0x280 + 4, 4, 1 << 8);
    assert_eq!(g.take_spi_deactivate().collect::<Vec<_>>(), [40]);
    assert!(g.take_spi_deactivate().next().is_none(), "taken once");
    // ICACTIVER of an active one.
    wr(&mut g, 0, true, 0x300 + 4, 4, 1 << 8);
    wr(&mut g, 0, true, 0x380 + 4, 4, 1 << 8);
    assert_eq!(g.take_spi_deactivate().collect::<Vec<_>>(), [40]);
    g.inject_hw(0, 40, 40);
    wr(&mut g, 0, true, 0x280 + 4, 4, 1 << 8);
    g.reset();
    assert!(
        g.take_spi_deactivate().next().is_none(),
        "a reset forgets the request"
    );
}

#[test]
fn only_pending_and_active_reads_need_the_list_registers() {
    use super::read_sees_list_registers as sees;
    for off in [0x200, 0x27c, 0x280, 0x300, 0x3fc] {
        assert!(sees(GicVersion::V3, true, off), "{off:#x}");
        assert!(sees(GicVersion::V2, true, off), "{off:#x}");
        // The same registers in any vCPU's SGI frame.
        assert!(sees(GicVersion::V3, false, 0x1_0000 + off), "{off:#x}");
        assert!(sees(GicVersion::V3, false, 0x3_0000 + off), "{off:#x}");
        assert!(!sees(GicVersion::V3, false, off), "{off:#x} in RD_base");
    }
    for off in [
        0x0, 0x4, 0x8, 0x100, 0x180, 0x1fc, 0x400, 0x800, 0xc00, 0x6100, 0xffe8,
    ] {
        assert!(!sees(GicVersion::V3, true, off), "{off:#x}");
    }
    assert!(sees(GicVersion::V2, true, 0xf10) && sees(GicVersion::V2, true, 0xf2c));
    assert!(!sees(GicVersion::V2, true, 0xf00) && !sees(GicVersion::V2, true, 0xf30));
    assert!(!sees(GicVersion::V3, true, 0xf10));
    assert!(!sees(GicVersion::V3, false, 0x1_0100) && !sees(GicVersion::V3, false, 0x0014));
}
