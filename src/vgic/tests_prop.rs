//! Property tests of the vGIC register views (proptest): any sequence of
//! accesses a guest can make, at any offset, width and value. None may
//! panic; a read never changes what any register reads; a write reads
//! back nothing; the list registers are never overfilled.

use super::v3::{self, Access, Outcome};
use super::{v2, GicVersion, Lr, Vgic};
use proptest::prelude::*;

/// Which frame an access goes to.
#[derive(Clone, Copy, Debug)]
enum Frame {
    Dist,
    Redist,
}

/// (frame, offset, size, write value, vCPU): offsets cover the whole
/// distributor and three redistributor frames (one past the last), with
/// the interesting ranges weighted up.
fn access() -> impl Strategy<Value = (Frame, u64, u8, Option<u64>, usize)> {
    let off = prop_oneof![
        0u64..0x1000,
        0x6000u64..0x8000,
        0xffd0u64..0x10000,
        0u64..0x1_0000,
        0x1_0000u64..0x1_1000,
        0u64..0x6_0000,
    ];
    (
        prop_oneof![Just(Frame::Dist), Just(Frame::Redist)],
        off,
        prop_oneof![Just(1u8), Just(2), Just(4), Just(8), 0u8..16],
        proptest::option::of(any::<u64>()),
        0usize..2,
    )
}

fn apply(
    g: &mut Vgic,
    v2view: bool,
    (f, off, size, write, vi): (Frame, u64, u8, Option<u64>, usize),
) -> Outcome {
    let a = Access { off, size, write };
    match (v2view, f) {
        (true, _) => v2::distributor(g, vi, &a),
        (false, Frame::Dist) => v3::distributor(g, vi, &a),
        (false, Frame::Redist) => v3::redistributor(g, vi, &a),
    }
}

/// Every 4-byte register the guest could read, as it reads it now.
fn snapshot(g: &mut Vgic, v2view: bool) -> Vec<u64> {
    let mut out = Vec::new();
    let frames: &[(Frame, u64)] = if v2view {
        &[(Frame::Dist, 0x1000)]
    } else {
        &[(Frame::Dist, 0x1_0000), (Frame::Redist, 0x4_0000)]
    };
    for &(f, end) in frames {
        for off in (0..end).step_by(4) {
            for vi in 0..2 {
                match apply(g, v2view, (f, off, 4, None, vi)) {
                    Outcome::Done { value, .. } => out.push(value),
                    Outcome::Abort => out.push(u64::MAX),
                }
            }
        }
    }
    out
}

fn gic(version: GicVersion) -> Vgic {
    Vgic::new(version, &[0, 1], 64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn v3_any_accesses_no_panic_and_reads_are_pure(
        seq in proptest::collection::vec(access(), 0..48),
        probe in access(),
    ) {
        let mut g = gic(GicVersion::V3);
        for a in &seq {
            // A write reads back nothing (Outcome's value is 0).
            if let (Some(_), Outcome::Done { value, .. }) = (a.3, apply(&mut g, false, *a)) {
                prop_assert_eq!(value, 0, "write {:?}", a);
            }
        }
        let before = snapshot(&mut g, false);
        let _ = apply(&mut g, false, (probe.0, probe.1, probe.2, None, probe.4));
        prop_assert_eq!(before, snapshot(&mut g, false));
        for vi in 0..2 {
            let mut lrs = [Lr::default(); 4];
            let f = g.fill_lrs(vi, &mut lrs);
            prop_assert!(f.used <= 4);
        }
    }

    #[test]
    fn v2_any_accesses_no_panic_and_reads_are_pure(
        seq in proptest::collection::vec(access(), 0..48),
        probe in access(),
    ) {
        let mut g = gic(GicVersion::V2);
        for a in &seq {
            // A write reads back nothing (Outcome's value is 0).
            if let (Some(_), Outcome::Done { value, .. }) = (a.3, apply(&mut g, true, *a)) {
                prop_assert_eq!(value, 0, "write {:?}", a);
            }
        }
        let before = snapshot(&mut g, true);
        let _ = apply(&mut g, true, (probe.0, probe.1, probe.2, None, probe.4));
        prop_assert_eq!(before, snapshot(&mut g, true));
        for vi in 0..2 {
            let mut lrs = [Lr::default(); 4];
            let f = g.fill_lrs(vi, &mut lrs);
            prop_assert!(f.used <= 4);
        }
    }

    /// Bad widths and misaligned offsets are refused or read as zero,
    /// never half applied: the registers read the same after one.
    #[test]
    fn bad_width_writes_change_nothing(off in 0u64..0x1_0000, size in prop_oneof![Just(0u8), 3u8..4, 5u8..8, 9u8..=255], val: u64) {
        let mut g = gic(GicVersion::V3);
        let before = snapshot(&mut g, false);
        let _ = apply(&mut g, false, (Frame::Dist, off, size, Some(val), 0));
        prop_assert_eq!(before, snapshot(&mut g, false));
    }
}

/// Writes to the read-only ID registers are ignored and read back
/// nothing, at every width the register allows.
#[test]
fn writes_to_read_only_id_registers_read_back_nothing() {
    let mut g = gic(GicVersion::V3);
    // GICR_CTLR/IIDR/TYPER (both halves and the doubleword), GICD_TYPER, IIDR.
    let cases = [
        (Frame::Redist, 0x0, 4),
        (Frame::Redist, 0x4, 4),
        (Frame::Redist, 0x8, 4),
        (Frame::Redist, 0x8, 8),
        (Frame::Redist, 0xc, 4),
        (Frame::Dist, 0x4, 4),
        (Frame::Dist, 0x8, 4),
    ];
    for (f, off, size) in cases {
        let before = snapshot(&mut g, false);
        match apply(&mut g, false, (f, off, size, Some(u64::MAX), 0)) {
            Outcome::Done { value, changed } => {
                assert_eq!((value, changed), (0, 0), "{f:?} {off:#x} size {size}")
            }
            Outcome::Abort => panic!("{f:?} {off:#x} size {size}: aborted"),
        }
        assert_eq!(
            before,
            snapshot(&mut g, false),
            "{f:?} {off:#x} changed something"
        );
    }
}
