//! The vGIC (src/vgic): its register views (`v2::distributor`,
//! `v3::distributor`, `v3::redistributor`) driven by any sequence of guest
//! accesses, interleaved with what the image does around them (src/vmm.rs):
//! list registers taken back (`sync_lrs`) and refilled (`fill_lrs`) on the
//! image's rules, physical interrupts forwarded (`inject_hw`), the vPL011's
//! line (`set_line`), SGIs (`v3::sgi_targets` + `send_sgi`), edges
//! (`inject`), linked SPIs, resets; and a guest that acknowledges and
//! deactivates what its list registers hold, as the hardware lets it.
//! The model of src/vgic/tests_prop.rs, with more of the API and more checks.
//! There is no GICC view to fuzz: a GICv2 guest's CPU interface is the
//! physical GICV frame (v2.rs).
//!
//! Checked, besides "no panic":
//! - An access of a width the views do not take (not 1, 4 or 8, or not
//!   aligned to it) is refused (`Outcome::Abort`); a refused access changes
//!   nothing (the whole state, as for a read).
//! - A read changes nothing: the whole state (private fields included) is
//!   the same before and after each read.
//! - A read's value fits its width, and `changed` names only vCPUs that
//!   exist (none for a read).
//! - A change whose returned mask leaves out vCPU w does not change what w's
//!   list registers would be refilled with (so not kicking w loses nothing).
//! - A fill: at most as many list registers as given, the rest cleared;
//!   each names an offered INTID, once, in a state other than Invalid,
//!   with a priority of the kept bits; active ones first, then by priority
//!   and INTID; an SPI sits in the list registers of one vCPU at a time;
//!   maintenance is asked for only when more waits than fits; both list
//!   register encodings give the state back.
//! - Deactivations asked of the image are for hardware-linked interrupts.
//!
//! Input: a header (version, vCPUs, SPIs, list registers, linked SPIs),
//! then operations until the bytes run out (see `Op`).
#![no_main]

use dtvisor::vgic::{self, v2, v3, Fill, GicVersion, Lr, LrState, Vgic, MAX_LRS, PRIVATE, SGIS};
use libfuzzer_sys::fuzz_target;

mod bytes;
use bytes::Bytes;

/// Which register frame an access goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Dist,
    Redist,
}

/// The machine around one vGIC: each vCPU's hardware list registers (as
/// the fill wrote them, then as the guest changed them), whether it was
/// posted to, and whether its list registers are exactly as filled.
struct Machine {
    g: Vgic,
    nr_lrs: usize,
    hw: Vec<Vec<Lr>>,
    posted: Vec<bool>,
    /// The guest has not touched the list registers since the last fill.
    pristine: Vec<bool>,
    /// Interrupts that are hardware-linked (forwarded timers, linked SPIs).
    hw_ids: Vec<u32>,
}

/// What vCPU `v`'s list registers would be refilled with now (on a copy).
fn refill_of(m: &Machine, v: usize) -> (Vec<Lr>, Fill) {
    let mut g = m.g.clone();
    let states: Vec<LrState> = m.hw[v].iter().map(|l| l.state).collect();
    if !states.is_empty() {
        g.sync_lrs(v, &states);
    }
    let mut out = vec![Lr::default(); m.nr_lrs];
    let f = g.fill_lrs(v, &mut out);
    (out, f)
}

impl Machine {
    fn all(&self) -> u64 {
        let n = self.g.vcpus();
        if n >= 64 {
            !0
        } else {
            (1u64 << n) - 1
        }
    }

    /// vmm::sync_here: takes vCPU `v`'s list registers back.
    fn sync(&mut self, v: usize) {
        if self.hw[v].is_empty() {
            return;
        }
        let states: Vec<LrState> = self.hw[v].iter().map(|l| l.state).collect();
        self.g.sync_lrs(v, &states);
        self.hw[v].clear();
        self.pristine[v] = true;
    }

    /// vmm::resume: before vCPU `v` runs, refill if posted or in use.
    fn resume(&mut self, v: usize) {
        if !self.posted[v] && self.hw[v].is_empty() {
            return;
        }
        self.posted[v] = false;
        self.sync(v);
        let mut out = vec![Lr::default(); self.nr_lrs];
        let f = self.g.fill_lrs(v, &mut out);
        self.check_fill(v, &out, &f);
        out.truncate(f.used);
        self.hw[v] = out;
        self.pristine[v] = true;
        let pmask = self.g.take_hw_deactivate(v);
        for p in 0..32 {
            if pmask & (1 << p) != 0 {
                assert!(
                    self.hw_ids.contains(&p),
                    "vCPU {v}: asked to deactivate PPI/SGI {p}, never hardware-linked"
                );
            }
        }
    }

    fn check_fill(&self, v: usize, out: &[Lr], f: &Fill) {
        let g = &self.g;
        assert!(
            f.used <= out.len() && f.used <= MAX_LRS,
            "fill used {} of {}",
            f.used,
            out.len()
        );
        assert!(
            out[f.used..].iter().all(|l| *l == Lr::default()),
            "unused list registers not cleared: {out:?}"
        );
        if f.used < out.len() {
            assert!(
                !f.no_pending_irq && !f.underflow_irq,
                "maintenance asked for with free list registers: {f:?}"
            );
        }
        let lrs = &out[..f.used];
        for (n, l) in lrs.iter().enumerate() {
            assert!(
                l.intid < g.intid_end(),
                "LR{n} INTID {} not offered",
                l.intid
            );
            assert_ne!(l.state, LrState::Invalid, "LR{n} filled Invalid: {l:?}");
            assert_eq!(
                l.priority & !vgic::PRIORITY_MASK,
                0,
                "LR{n} priority {:#x}",
                l.priority
            );
            assert!(
                !(l.pintid.is_some() && l.eoi_maintenance),
                "LR{n}: HW and EOI maintenance"
            );
            if let Some(p) = l.pintid {
                assert!(
                    self.hw_ids.contains(&p),
                    "LR{n} linked to {p}, never hardware-linked"
                );
            }
            assert!(
                lrs[..n].iter().all(|o| o.intid != l.intid),
                "INTID {} twice in vCPU {v}'s list registers: {lrs:?}",
                l.intid
            );
            // Both encodings give the state (and the INTID) back.
            let e3 = v3::encode_lr(l);
            assert_eq!(v3::lr_state(e3), l.state);
            assert_eq!(e3 & 0xffff_ffff, l.intid as u64);
            if g.version == GicVersion::V2 {
                let e2 = v2::encode_lr(l);
                assert_eq!(v2::lr_state(e2), l.state);
                assert_eq!(e2 & 0x3ff, l.intid);
                if l.intid < SGIS && l.pintid.is_none() {
                    assert!(
                        (l.source as usize) < v2::MAX_V2_VCPUS,
                        "SGI source {}",
                        l.source
                    );
                }
            }
        }
        // Active first, then by priority, then by INTID.
        let key = |l: &Lr| (!l.state.active(), l.priority, l.intid);
        for w in lrs.windows(2) {
            assert!(key(&w[0]) < key(&w[1]), "fill order: {lrs:?}");
        }
        // An SPI is in one vCPU's list registers at a time.
        for l in lrs.iter().filter(|l| l.intid >= PRIVATE) {
            for (w, other) in self.hw.iter().enumerate() {
                if w != v {
                    assert!(
                        other.iter().all(|o| o.intid != l.intid),
                        "SPI {} in the list registers of vCPUs {v} and {w}",
                        l.intid
                    );
                }
            }
        }
    }

    /// The vCPUs whose refill a change must not alter unless it names them:
    /// those not posted to, with list registers as filled.
    fn watched(&self, except: Option<usize>) -> Vec<(usize, (Vec<Lr>, Fill))> {
        // Cost bound: the copies are per vCPU and per change.
        if self.g.vcpus() > 8 {
            return Vec::new();
        }
        (0..self.g.vcpus())
            .filter(|&w| Some(w) != except && !self.posted[w] && self.pristine[w])
            .map(|w| (w, refill_of(self, w)))
            .collect()
    }

    /// After a change that returned `mask`: those it leaves out would be
    /// refilled as before; those it names are posted to.
    fn changed(&mut self, what: &str, before: Vec<(usize, (Vec<Lr>, Fill))>, mask: u64) {
        assert_eq!(
            mask & !self.all(),
            0,
            "{what}: mask {mask:#x} names absent vCPUs"
        );
        for (w, was) in before {
            if mask & (1 << w) == 0 {
                assert_eq!(
                    refill_of(self, w),
                    was,
                    "{what}: vCPU {w}'s list registers are stale but it was not named (mask {mask:#x})"
                );
            }
        }
        for w in 0..self.g.vcpus() {
            if mask & (1 << w) != 0 {
                self.posted[w] = true;
            }
        }
    }

    /// One guest access, as vmm::vgic_mmio makes it.
    fn mmio(&mut self, v: usize, frame: Frame, off: u64, size: u8, write: Option<u64>) {
        let version = self.g.version;
        let dist = frame == Frame::Dist;
        let sync = write.is_some() || vgic::read_sees_list_registers(version, dist, off);
        if sync {
            self.sync(v);
            self.posted[v] = true;
        }
        let a = v3::Access { off, size, write };
        let watched = if write.is_some() {
            self.watched(Some(v))
        } else {
            Vec::new()
        };
        // The whole state before (a copy is cheaper than any digest of it).
        let before = self.g.clone();
        let out = match (version, frame) {
            (GicVersion::V2, _) => v2::distributor(&mut self.g, v, &a),
            (GicVersion::V3, Frame::Dist) => v3::distributor(&mut self.g, v, &a),
            (GicVersion::V3, Frame::Redist) => v3::redistributor(&mut self.g, v, &a),
        };
        let what = format!("{version:?} {frame:?} {off:#x}/{size} {write:x?} by vCPU {v}");
        let bad_width = !matches!(size, 1 | 4 | 8) || off % size as u64 != 0;
        if bad_width {
            assert_eq!(out, v3::Outcome::Abort, "{what}: a bad width is refused");
        }
        let refused = out == v3::Outcome::Abort;
        if refused || write.is_none() {
            assert!(
                self.g == before,
                "{what}: {}, but changed the state\nbefore {before:?}\nafter {:?}",
                if refused { "refused" } else { "a read" },
                self.g
            );
        }
        match out {
            v3::Outcome::Abort => {}
            v3::Outcome::Done { value, changed } => {
                if size < 8 {
                    assert_eq!(value >> (8 * size as u32), 0, "{what}: read {value:#x}");
                }
                match write {
                    None => assert_eq!(changed, 0, "{what}: a read changed vCPUs {changed:#x}"),
                    // (A write's value is ignored by the caller; GICR_TYPER
                    // returns the register's, contrary to Outcome's doc.)
                    Some(_) => self.changed(&what, watched, changed),
                }
            }
        }
        // Distributor writes: the image deactivates what the guest cleared.
        if dist && write.is_some() {
            for id in self.g.take_spi_deactivate() {
                assert!(
                    self.hw_ids.contains(&id),
                    "deactivate SPI {id}: never hardware-linked"
                );
            }
        }
        // The guest goes on: its own list registers are refilled.
        self.resume(v);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let head = b.u8();
    let version = if head & 1 != 0 {
        GicVersion::V2
    } else {
        GicVersion::V3
    };
    // GICv2 names 8 vCPUs; one more checks the ninth. GICv3: past 16, Aff1.
    let max_vcpus = if version == GicVersion::V2 { 9 } else { 20 };
    let vcpus = 1 + (b.u8() as usize % max_vcpus);
    let spis = (b.u16() % 1024) as u32;
    let nr_lrs = 1 + (b.u8() as usize % MAX_LRS);
    let affinities: Vec<u64> = (0..vcpus as u64)
        .map(|n| (n & 0xf) | ((n >> 4) << 8))
        .collect();
    let mut g = Vgic::new(version, &affinities, spis);
    assert_eq!(g.vcpus(), vcpus);
    assert!(g.spis() % 32 == 0 && g.spis() >= spis.min(960) && g.intid_end() <= vgic::SPI_END);
    // The forwarded timers (vmm::irq) and the linked SPIs.
    let mut hw_ids = vec![27, 30];
    for _ in 0..(head >> 1) % 4 {
        let id = PRIVATE + (b.u16() as u32 % (g.spis() + 8));
        let edge = b.u8() & 1 != 0;
        if g.link_spi(id, edge) {
            assert!(id < g.intid_end());
            hw_ids.push(id);
        } else {
            assert!(id >= g.intid_end(), "link_spi refused offered SPI {id}");
        }
    }
    let mut m = Machine {
        g,
        nr_lrs,
        hw: vec![Vec::new(); vcpus],
        posted: vec![false; vcpus],
        pristine: vec![true; vcpus],
        hw_ids,
    };
    let mut ops = 0;
    while !b.done() && ops < 96 {
        ops += 1;
        let op = b.u8();
        let v = b.u8() as usize % vcpus;
        match op % 16 {
            // A guest access: most ops are.
            0..=7 => {
                let frame = if version == GicVersion::V3 && op & 0x10 != 0 {
                    Frame::Redist
                } else {
                    Frame::Dist
                };
                let limit = match (version, frame) {
                    (GicVersion::V2, _) => v2::GICD_SIZE + 0x10,
                    (GicVersion::V3, Frame::Dist) => v3::GICD_SIZE + 0x10,
                    (GicVersion::V3, Frame::Redist) => (vcpus as u64 + 1) * v3::GICR_STRIDE,
                };
                let mut off = b.u32() as u64 % limit;
                if op & 0x20 == 0 {
                    off &= !3;
                }
                let s = b.u8();
                let size = if s & 0x80 == 0 {
                    [4, 1, 8, 2][(s & 3) as usize]
                } else {
                    s & 0x7f
                };
                let write = (op & 0x40 != 0).then(|| b.u64());
                m.mmio(v, frame, off, size, write);
            }
            // A forwarded timer or linked SPI fired on vCPU v's pCPU.
            8 => {
                let ids = m.hw_ids.clone();
                let id = ids[b.u8() as usize % ids.len()];
                let w = m.watched(None);
                let mask = m.g.inject_hw(v, id, id);
                m.changed("inject_hw", w, mask);
            }
            // The vPL011's line (vmm::uart_line: from vCPU 0's view).
            9 => {
                let id = PRIVATE + (b.u16() as u32 % (m.g.spis() + 1));
                let level = op & 0x10 != 0;
                let w = m.watched(None);
                let mask = m.g.set_line(0, id, level);
                m.changed("set_line", w, mask);
            }
            // An edge (the tests' injection; not an SGI on GICv2, whose SGIs
            // are pending per source only).
            10 => {
                let low = if version == GicVersion::V2 { SGIS } else { 0 };
                let id = low + (b.u16() as u32 % (m.g.intid_end() + 4 - low));
                let w = m.watched(None);
                let mask = m.g.inject(v, id);
                m.changed("inject", w, mask);
            }
            // ICC_SGI1R_EL1 from vCPU v (GICv3; GICv2 SGIs go through GICD_SGIR).
            11 if version == GicVersion::V3 => {
                let val = b.u64();
                let (sgi, targets) = v3::sgi_targets(&m.g, v, val);
                assert!(sgi < SGIS);
                assert_eq!(targets & !m.all(), 0, "SGI to absent vCPUs {targets:#x}");
                let w = m.watched(None);
                let mask = m.g.send_sgi(v, targets, sgi);
                m.changed("send_sgi", w, mask);
            }
            // The guest acknowledges (IAR) or deactivates (EOI/DIR) what
            // list register k of vCPU v holds, as the hardware allows.
            11..=13 => {
                let k = b.u8() as usize;
                let hw = &mut m.hw[v];
                if hw.is_empty() {
                    continue;
                }
                let k = k % hw.len();
                let s = hw[k].state;
                hw[k].state = if op % 16 == 12 {
                    match s {
                        LrState::Pending => LrState::Active,
                        s => s,
                    }
                } else {
                    match s {
                        LrState::Active => LrState::Invalid,
                        LrState::PendingActive => LrState::Pending,
                        s => s,
                    }
                };
                if hw[k].state != s {
                    m.pristine[v] = false;
                }
            }
            // vCPU v enters the guest (a kick, a maintenance interrupt).
            14 => m.resume(v),
            // A domain reset (rare).
            _ => {
                if op == 0xff {
                    m.g.reset();
                    for w in 0..vcpus {
                        m.hw[w].clear();
                        m.posted[w] = false;
                        m.pristine[w] = true;
                    }
                    assert!(m.g.take_spi_deactivate().next().is_none());
                } else {
                    m.posted[v] = true;
                    m.resume(v);
                }
            }
        }
    }
});
