//! The virtual GIC, portable: the interrupt state of one domain (its
//! SPIs, and each vCPU's SGIs and PPIs) and the choice of what goes into a
//! vCPU's list registers. No MMIO, no system registers, no globals: the
//! image reads the hardware list registers, hands their state to
//! [`Vgic::sync_lrs`], asks [`Vgic::fill_lrs`] what to write back, and
//! writes it. The guest-visible register layouts are thin views over this
//! state ([`v3`] for GICv3; the GICv2 view reuses the same core).
//!
//! The model, per interrupt:
//! - `pending` is a latch: an edge, a write to ISPENDR, an SGI, or a
//!   hardware-linked interrupt taken at EL2; it is cleared when the
//!   guest acknowledges the interrupt (seen in the list register).
//! - `line` is the input level of a level-sensitive source emulated in
//!   software (the vPL011); such an interrupt is pending while its line
//!   is high, and its list register asks for a maintenance interrupt at
//!   EOI so the line is sampled again then (level resampling).
//! - `hw` links a virtual interrupt to a physical one (the timers): the
//!   list register carries the physical INTID, and the guest's
//!   deactivation deactivates the physical interrupt too.
//!
//! An interrupt the guest can take sits in at most one list register, of
//! the one vCPU it targets. Every list register of a vCPU is read back
//! into this state ([`Vgic::sync_lrs`]) before the state is changed on that
//! vCPU's behalf, and refilled ([`Vgic::fill_lrs`]) just before the vCPU
//! runs again, highest priority first. Changes made for another vCPU (an
//! SGI, an SPI routed there) are returned as a mask of vCPUs whose list
//! registers are stale: the image posts to them and kicks their pCPUs.

use alloc::vec::Vec;

mod regs;
pub mod v2;
pub mod v3;

/// SGIs are INTIDs 0-15, PPIs 16-31, SPIs from 32.
pub const SGIS: u32 = 16;
pub const PRIVATE: u32 = 32;
/// INTIDs 1020-1023 are special; SPIs end below.
pub const SPI_END: u32 = 1020;
/// vCPUs one vGIC serves (vCPU masks are u64).
pub const MAX_VCPUS: usize = 64;
/// List registers the architecture allows (ICH_VTR_EL2.ListRegs + 1).
pub const MAX_LRS: usize = 16;
/// Priority bits kept (5, as the virtual CPU interfaces implement).
pub const PRIORITY_MASK: u8 = 0xf8;
/// Priority of every interrupt after reset.
pub const RESET_PRIORITY: u8 = 0;

/// Which register view the guest sees: the GIC version (one type for
/// the host's GIC and the guest's).
pub use crate::hw::GicVersion;

/// Whether a read at `off` of the distributor (`dist`) or of the GICv3
/// redistributor region shows pending or active state, which list
/// registers hold while the guest runs: only then must the reader's list
/// registers be taken back first (and refilled after). Every other read
/// (TYPER, CTLR, enables, priorities, routing...) sees state the list
/// registers never change, and leaves them in place.
pub fn read_sees_list_registers(version: GicVersion, dist: bool, off: u64) -> bool {
    let pending_active = |o: u64| (0x200..0x400).contains(&o);
    match (version, dist) {
        (GicVersion::V2, _) => pending_active(off) || (0xf10..0xf30).contains(&off),
        (GicVersion::V3, true) => pending_active(off),
        (GicVersion::V3, false) => {
            let local = off % v3::GICR_STRIDE;
            local >= 0x1_0000 && pending_active(local - 0x1_0000)
        }
    }
}

/// The state field of a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LrState {
    #[default]
    Invalid,
    Pending,
    Active,
    PendingActive,
}

impl LrState {
    pub fn pending(self) -> bool {
        matches!(self, LrState::Pending | LrState::PendingActive)
    }
    pub fn active(self) -> bool {
        matches!(self, LrState::Active | LrState::PendingActive)
    }
    /// The two-bit state field both list register formats use.
    pub fn bits(self) -> u32 {
        self.pending() as u32 | (self.active() as u32) << 1
    }

    pub fn from_bits(b: u32) -> LrState {
        LrState::of(b & 1 != 0, b & 2 != 0)
    }

    fn of(pending: bool, active: bool) -> LrState {
        match (pending, active) {
            (false, false) => LrState::Invalid,
            (true, false) => LrState::Pending,
            (false, true) => LrState::Active,
            (true, true) => LrState::PendingActive,
        }
    }
}

/// One list register's contents, independent of the GIC version's
/// encoding (`v3::encode_lr`, `v2::encode_lr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lr {
    pub intid: u32,
    /// Hardware-linked: the physical INTID deactivated with this one.
    pub pintid: Option<u32>,
    pub priority: u8,
    pub group1: bool,
    pub state: LrState,
    /// Ask for a maintenance interrupt when the guest deactivates it.
    pub eoi_maintenance: bool,
    /// GICv2 SGIs: the requesting vCPU.
    pub source: u8,
}

/// What a fill asks of the virtual CPU interface besides the list
/// registers (ICH_HCR_EL2 / GICH_HCR bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Fill {
    /// List registers used, from 0.
    pub used: usize,
    /// More interrupts wait than fit: a maintenance interrupt when no
    /// list register holds a pending interrupt any more (NPIE).
    pub no_pending_irq: bool,
    /// More interrupts wait, but every list register holds an active
    /// one: a maintenance interrupt at underflow (UIE).
    pub underflow_irq: bool,
}

/// The state of one interrupt for one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Irq {
    pub enabled: bool,
    pending: bool,
    line: bool,
    active: bool,
    pub priority: u8,
    pub group1: bool,
    pub edge: bool,
    /// Hardware-linked to this physical INTID.
    pub hw: Option<u32>,
    /// The level of that physical source (a timer's output) as last
    /// sampled at a trap: a pending-state read shows it.
    hw_level: bool,
    /// SPIs: GICv3 IROUTER value, or GICv2 ITARGETSR byte.
    pub route: u64,
    /// GICv2 SGIs: pending per source vCPU (bit n = vCPU n).
    pub sources: u8,
    /// GICv2 SGIs: the source of the one the guest has active (its list
    /// register must carry that CPU id for the guest's EOI to match).
    active_source: u8,
    in_lr: bool,
}

impl Irq {
    /// Pending as the guest sees it (GICD_ISPENDR).
    pub fn pending(&self) -> bool {
        self.pending || (!self.edge && self.line) || self.sources != 0
    }
    pub fn active(&self) -> bool {
        self.active
    }
    fn candidate(&self, groups: u32) -> bool {
        let group_on = groups & (1 << self.group1 as u32) != 0;
        self.active || (self.enabled && group_on && self.pending())
    }
}

/// The private interrupts and redistributor state of one vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuGic {
    private: [Irq; PRIVATE as usize],
    /// MPIDR affinity (Aff3 at bits 39:32, Aff2..Aff0 at 23:0).
    pub affinity: u64,
    /// GICR_WAKER.ProcessorSleep.
    pub asleep: bool,
    /// What each list register holds (intid NO_LR: nothing).
    lr: [LrSlot; MAX_LRS],
    /// Private hardware-linked INTIDs whose physical interrupt must be
    /// deactivated by this vCPU's pCPU (the guest cleared its state).
    hw_deactivate: u32,
}

const NO_LR: u32 = u32::MAX;

/// What the fill put in one list register, to take it back at sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LrSlot {
    intid: u32,
    /// Its pending state came from the latch (not from a level line).
    latched: bool,
    /// GICv2 SGI: the source taken from `sources`.
    source: Option<u8>,
}

const EMPTY: LrSlot = LrSlot {
    intid: NO_LR,
    latched: false,
    source: None,
};

/// One domain's virtual GIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vgic {
    pub version: GicVersion,
    /// GICD_CTLR group enables: bit 0 group 0, bit 1 group 1.
    pub groups: u32,
    spis: Vec<Irq>,
    vcpus: Vec<VcpuGic>,
    /// SPIs linked for good to the physical SPI of the same INTID (an
    /// assigned device's), with their trigger: kept across a reset.
    hw_spis: Vec<(u32, bool)>,
    /// Per linked SPI (as `hw_spis`): its active state the guest cleared
    /// (ICPENDR or ICACTIVER while linked), so the image deactivates the
    /// physical one, from any pCPU. Sized when linked, so no trap path
    /// allocates.
    spi_deactivate: Vec<bool>,
}

/// A mask with one bit per vCPU.
pub type VcpuMask = u64;

fn bit(v: usize) -> VcpuMask {
    1u64 << (v & 63)
}

/// Which per-interrupt bit a one-bit-per-interrupt register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitField {
    Group,
    Enable,
    Pending,
    Active,
}

impl Vgic {
    /// A vGIC for vCPUs with these MPIDR affinities and `spis` SPIs
    /// (rounded up to a multiple of 32, at most 988).
    pub fn new(version: GicVersion, affinities: &[u64], spis: u32) -> Vgic {
        let spis = spis.div_ceil(32).min((SPI_END - PRIVATE) / 32) * 32;
        let n = affinities.len().min(MAX_VCPUS);
        let mut g = Vgic {
            version,
            groups: 0,
            spis: alloc::vec![Irq::default(); spis as usize],
            vcpus: affinities[..n]
                .iter()
                .map(|&a| VcpuGic {
                    private: [Irq::default(); PRIVATE as usize],
                    affinity: a,
                    asleep: true,
                    lr: [EMPTY; MAX_LRS],
                    hw_deactivate: 0,
                })
                .collect(),
            hw_spis: Vec::new(),
            spi_deactivate: Vec::new(),
        };
        g.reset();
        g
    }

    /// Links SPI `intid` for good to the physical SPI with the same INTID
    /// (an assigned device's), `edge`- or level-triggered. False if the
    /// vGIC offers no such SPI.
    pub fn link_spi(&mut self, intid: u32, edge: bool) -> bool {
        let Some(i) = self.irq_mut(0, intid).filter(|_| intid >= PRIVATE) else {
            return false;
        };
        i.hw = Some(intid);
        i.edge = edge;
        if !self.hw_spis.iter().any(|&(n, _)| n == intid) {
            self.hw_spis.push((intid, edge));
            self.spi_deactivate.push(false);
        }
        true
    }

    /// The SPIs linked with `link_spi`.
    pub fn linked_spis(&self) -> &[(u32, bool)] {
        &self.hw_spis
    }

    /// Physical SPIs to deactivate (each forgotten as it is yielded).
    pub fn take_spi_deactivate(&mut self) -> impl Iterator<Item = u32> + '_ {
        self.hw_spis
            .iter()
            .zip(self.spi_deactivate.iter_mut())
            .filter_map(|(&(id, _), f)| core::mem::take(f).then_some(id))
    }

    /// The state after a reset of the domain: everything disabled, not
    /// pending, not active; SGIs edge, the rest level; group 1 for a
    /// GICv3 view (as Linux and KVM expect), group 0 for GICv2.
    pub fn reset(&mut self) {
        let group1 = self.version == GicVersion::V3;
        self.groups = 0;
        let fresh = |intid: u32| Irq {
            edge: intid < SGIS,
            group1,
            priority: RESET_PRIORITY,
            ..Irq::default()
        };
        for (i, s) in self.spis.iter_mut().enumerate() {
            *s = fresh(PRIVATE + i as u32);
        }
        for &(intid, edge) in &self.hw_spis {
            if let Some(s) = self.spis.get_mut((intid - PRIVATE) as usize) {
                s.hw = Some(intid);
                s.edge = edge;
            }
        }
        self.spi_deactivate.iter_mut().for_each(|f| *f = false);
        for v in &mut self.vcpus {
            for (i, p) in v.private.iter_mut().enumerate() {
                *p = fresh(i as u32);
            }
            v.asleep = true;
            v.lr = [EMPTY; MAX_LRS];
            v.hw_deactivate = 0;
        }
    }

    pub fn vcpus(&self) -> usize {
        self.vcpus.len()
    }

    pub fn vcpu(&self, v: usize) -> Option<&VcpuGic> {
        self.vcpus.get(v)
    }

    pub fn vcpu_mut(&mut self, v: usize) -> Option<&mut VcpuGic> {
        self.vcpus.get_mut(v)
    }

    /// Number of SPIs offered.
    pub fn spis(&self) -> u32 {
        self.spis.len() as u32
    }

    /// One past the highest INTID offered.
    pub fn intid_end(&self) -> u32 {
        PRIVATE + self.spis()
    }

    fn all(&self) -> VcpuMask {
        if self.vcpus.len() >= 64 {
            !0
        } else {
            bit(self.vcpus.len()) - 1
        }
    }

    /// The state of `intid` as vCPU `v` sees it (private INTIDs are banked).
    pub fn irq(&self, v: usize, intid: u32) -> Option<&Irq> {
        if intid < PRIVATE {
            self.vcpus.get(v)?.private.get(intid as usize)
        } else {
            self.spis.get((intid - PRIVATE) as usize)
        }
    }

    fn irq_mut(&mut self, v: usize, intid: u32) -> Option<&mut Irq> {
        if intid < PRIVATE {
            self.vcpus.get_mut(v)?.private.get_mut(intid as usize)
        } else {
            self.spis.get_mut((intid - PRIVATE) as usize)
        }
    }

    /// The vCPU an SPI is delivered to, if any.
    pub fn spi_target(&self, intid: u32) -> Option<usize> {
        let irq = self.irq(0, intid)?;
        match self.version {
            GicVersion::V3 => {
                if irq.route & (1 << 31) != 0 {
                    // 1 of N: the first vCPU that is awake.
                    return Some(self.vcpus.iter().position(|c| !c.asleep).unwrap_or(0));
                }
                let aff = irq.route & 0xff_00ff_ffff;
                self.vcpus.iter().position(|c| c.affinity == aff)
            }
            GicVersion::V2 => {
                let t = irq.route as u8;
                (t != 0)
                    .then(|| t.trailing_zeros() as usize)
                    .filter(|&v| v < self.vcpus.len())
            }
        }
    }

    /// vCPUs whose list registers may change when `intid` (as seen by
    /// `v`) changes.
    fn affected(&self, v: usize, intid: u32) -> VcpuMask {
        if intid < PRIVATE {
            return bit(v);
        }
        match self.irq(0, intid) {
            Some(i) if i.in_lr => self.all(),
            Some(_) => self.spi_target(intid).map_or(0, bit),
            None => 0,
        }
    }

    /// Sets the input level of a level-sensitive software source. Returns
    /// the vCPUs to post to.
    pub fn set_line(&mut self, v: usize, intid: u32, level: bool) -> VcpuMask {
        match self.irq_mut(v, intid) {
            Some(i) if i.line != level => i.line = level,
            _ => return 0,
        }
        self.affected(v, intid)
    }

    /// Makes `intid` pending (an edge), as `v` sees it.
    pub fn inject(&mut self, v: usize, intid: u32) -> VcpuMask {
        match self.irq_mut(v, intid) {
            Some(i) => i.pending = true,
            None => return 0,
        }
        self.affected(v, intid)
    }

    /// A physical interrupt linked to `intid` fired at EL2 on vCPU `v`'s
    /// pCPU and was not deactivated: the guest's deactivation will do it.
    pub fn inject_hw(&mut self, v: usize, intid: u32, pintid: u32) -> VcpuMask {
        match self.irq_mut(v, intid) {
            Some(i) => {
                i.hw = Some(pintid);
                i.pending = true;
            }
            None => return 0,
        }
        self.affected(v, intid)
    }

    /// The physical source of private hardware-linked `intid` (a timer's
    /// output: enabled, condition met, not masked) was sampled at
    /// `level`. A read of its pending state shows that level (the line's
    /// real state, even before the physical interrupt reached EL2); and a
    /// low level withdraws a pending state the source had raised, unless
    /// the guest already took the interrupt (active): the timer was
    /// disabled or masked, so the guest must not receive it any more. The
    /// physical interrupt, left active for the guest to deactivate, is
    /// deactivated by the vCPU's pCPU (`take_hw_deactivate`). The caller
    /// took the vCPU's list registers back first. Returns the vCPUs to
    /// post to.
    pub fn set_hw_level(&mut self, v: usize, intid: u32, level: bool) -> VcpuMask {
        if intid >= PRIVATE {
            return 0;
        }
        let Some(c) = self.vcpus.get_mut(v) else {
            return 0;
        };
        let i = &mut c.private[intid as usize];
        i.hw_level = level;
        match i.hw {
            Some(p) if !level && i.pending && !i.active => {
                i.pending = false;
                if p < PRIVATE {
                    c.hw_deactivate |= 1 << p;
                }
                bit(v)
            }
            _ => 0,
        }
    }

    /// SGI `sgi` from vCPU `from` to every vCPU in `targets`.
    pub fn send_sgi(&mut self, from: usize, targets: VcpuMask, sgi: u32) -> VcpuMask {
        let targets = targets & self.all();
        if sgi >= SGIS {
            return 0;
        }
        let v2 = self.version == GicVersion::V2;
        for (t, c) in self.vcpus.iter_mut().enumerate() {
            if targets & bit(t) != 0 {
                let i = &mut c.private[sgi as usize];
                if v2 {
                    i.sources |= 1 << (from & 7);
                } else {
                    i.pending = true;
                }
            }
        }
        targets
    }

    /// Physical INTIDs vCPU `v`'s pCPU must deactivate (and forgets them).
    pub fn take_hw_deactivate(&mut self, v: usize) -> u32 {
        self.vcpus
            .get_mut(v)
            .map_or(0, |c| core::mem::take(&mut c.hw_deactivate))
    }

    // ---- one-bit, two-bit and one-byte-per-interrupt registers -------

    /// 32 bits of a one-bit-per-interrupt register from `first` (a
    /// multiple of 32), as vCPU `v` sees them. Unimplemented INTIDs read 0.
    pub fn read_bits(&self, v: usize, first: u32, field: BitField) -> u32 {
        let mut out = 0;
        for n in 0..32 {
            if let Some(i) = self.irq(v, first + n) {
                let b = match field {
                    BitField::Group => i.group1,
                    BitField::Enable => i.enabled,
                    BitField::Pending => i.pending() || (i.hw_level && !i.active),
                    BitField::Active => i.active,
                };
                out |= (b as u32) << n;
            }
        }
        out
    }

    /// A write to a set (`set`) or clear register of `field` for the 32
    /// INTIDs from `first`; for `Group` the value is written as is.
    pub fn write_bits(
        &mut self,
        v: usize,
        first: u32,
        field: BitField,
        set: bool,
        val: u32,
    ) -> VcpuMask {
        let mut mask = 0;
        for n in 0..32 {
            let intid = first + n;
            let on = val & (1 << n) != 0;
            if !on && field != BitField::Group {
                continue;
            }
            // Affected vCPUs before the change (the old target) and after.
            let before = self.affected(v, intid);
            let Some(i) = self.irq_mut(v, intid) else {
                continue;
            };
            let mut deactivate = None;
            match field {
                BitField::Group => i.group1 = on,
                BitField::Enable => i.enabled = set,
                BitField::Pending => {
                    if set {
                        i.pending = true;
                    } else {
                        i.pending = false;
                        i.sources = 0;
                        if !i.active {
                            deactivate = i.hw;
                        }
                    }
                }
                BitField::Active => {
                    if !set && i.active {
                        deactivate = i.hw;
                    }
                    i.active = set;
                }
            }
            match deactivate {
                Some(p) if intid < PRIVATE && p < PRIVATE => {
                    if let Some(c) = self.vcpus.get_mut(v) {
                        c.hw_deactivate |= 1 << p;
                    }
                }
                Some(p) if intid >= PRIVATE => {
                    if let Some(n) = self.hw_spis.iter().position(|&(id, _)| id == p) {
                        self.spi_deactivate[n] = true;
                    }
                }
                _ => {}
            }
            mask |= before | self.affected(v, intid);
        }
        mask
    }

    /// IPRIORITYR byte for `intid`.
    pub fn priority(&self, v: usize, intid: u32) -> u8 {
        self.irq(v, intid).map_or(0, |i| i.priority)
    }

    pub fn set_priority(&mut self, v: usize, intid: u32, p: u8) -> VcpuMask {
        match self.irq_mut(v, intid) {
            Some(i) => i.priority = p & PRIORITY_MASK,
            None => return 0,
        }
        self.affected(v, intid)
    }

    /// 16 two-bit ICFGR fields from `first` (a multiple of 16).
    pub fn read_config(&self, v: usize, first: u32) -> u32 {
        (0..16).fold(0, |acc, n| match self.irq(v, first + n) {
            Some(i) if i.edge => acc | (2 << (2 * n)),
            _ => acc,
        })
    }

    /// ICFGR write: SGIs stay edge-triggered (read-only).
    pub fn write_config(&mut self, v: usize, first: u32, val: u32) -> VcpuMask {
        let mut mask = 0;
        for n in 0..16 {
            let intid = first + n;
            if intid < SGIS {
                continue;
            }
            if let Some(i) = self.irq_mut(v, intid) {
                i.edge = val & (2 << (2 * n)) != 0;
                mask |= self.affected(v, intid);
            }
        }
        mask
    }

    /// IROUTER (GICv3) or ITARGETSR (GICv2) of an SPI.
    pub fn route(&self, intid: u32) -> u64 {
        match intid {
            PRIVATE.. => self.irq(0, intid).map_or(0, |i| i.route),
            _ => 0,
        }
    }

    pub fn set_route(&mut self, intid: u32, route: u64) -> VcpuMask {
        if intid < PRIVATE {
            return 0;
        }
        let before = self.affected(0, intid);
        match self.irq_mut(0, intid) {
            Some(i) => i.route = route,
            None => return 0,
        }
        before | self.affected(0, intid)
    }

    /// GICD_CTLR group enables changed: every vCPU's lists may change.
    pub fn set_groups(&mut self, groups: u32) -> VcpuMask {
        self.groups = groups & 3;
        self.all()
    }

    // ---- list registers ----------------------------------------------

    /// Takes back what vCPU `v`'s list registers hold now (`state[i]` is
    /// list register i's state field as the hardware shows it). Each
    /// interrupt leaves its list register: pending only if the guest has
    /// not acknowledged it, active until the guest deactivates it. After
    /// this, the software state is complete and may be changed.
    pub fn sync_lrs(&mut self, v: usize, state: &[LrState]) {
        let Some(c) = self.vcpus.get_mut(v) else {
            return;
        };
        let mut taken = [(EMPTY, LrState::Invalid); MAX_LRS];
        for (n, s) in state.iter().enumerate().take(MAX_LRS) {
            taken[n] = (core::mem::replace(&mut c.lr[n], EMPTY), *s);
        }
        for (slot, now) in taken {
            let Some(i) = self.irq_mut(v, slot.intid) else {
                continue;
            };
            i.in_lr = false;
            i.active = now.active();
            if let (Some(src), true) = (slot.source, now.active()) {
                i.active_source = src;
            }
            // Still pending in the list register: not yet acknowledged.
            // (A new edge while it sat there has set the latch again.)
            if now.pending() {
                match slot.source {
                    Some(src) => i.sources |= 1 << src,
                    None if slot.latched => i.pending = true,
                    None => {}
                }
            }
        }
    }

    /// Chooses what vCPU `v`'s `out.len()` list registers hold next:
    /// every active interrupt first (the guest must be able to
    /// deactivate it), then pending ones, highest priority (lowest value)
    /// first, lower INTID first among equals.
    pub fn fill_lrs(&mut self, v: usize, out: &mut [Lr]) -> Fill {
        let n = out.len().min(MAX_LRS);
        for o in out.iter_mut() {
            *o = Lr::default();
        }
        if v >= self.vcpus.len() || n == 0 {
            return Fill::default();
        }
        let mut best: [(u8, u8, u32); MAX_LRS] = [(0, 0, 0); MAX_LRS];
        let (count, waiting) = self.best_candidates(v, &mut best[..n]);
        let mut any_pending = false;
        let mut all_active = true;
        for (slot, &(_, _, id)) in best[..count].iter().enumerate() {
            let Some((lr, lr_slot)) = self.take_into_lr(v, id) else {
                continue;
            };
            let pending = lr.state.pending();
            any_pending |= pending;
            all_active &= !pending;
            out[slot] = lr;
            self.vcpus[v].lr[slot] = lr_slot;
        }
        let more = waiting > count;
        Fill {
            used: count,
            no_pending_irq: more && any_pending,
            underflow_irq: more && all_active && count > 0,
        }
    }

    /// The best `best.len()` interrupts waiting for vCPU `v`, sorted by
    /// key (not active, priority, INTID), and how many wait in all.
    fn best_candidates(&self, v: usize, best: &mut [(u8, u8, u32)]) -> (usize, usize) {
        let n = best.len();
        let mut count = 0;
        let mut waiting = 0;
        for id in 0..self.intid_end() {
            let Some(i) = self.irq(v, id) else { continue };
            // In another vCPU's list registers (an SPI routed elsewhere
            // since): it comes back at that vCPU's next sync. The cheap
            // tests first: most interrupts are idle.
            if i.in_lr || !i.candidate(self.groups) {
                continue;
            }
            if id >= PRIVATE && self.spi_target(id) != Some(v) {
                continue;
            }
            waiting += 1;
            let key = (!i.active as u8, i.priority, id);
            let mut pos = count;
            while pos > 0 && best[pos - 1] > key {
                pos -= 1;
            }
            if pos >= n {
                continue;
            }
            let mut k = count.min(n - 1);
            while k > pos {
                best[k] = best[k - 1];
                k -= 1;
            }
            best[pos] = key;
            count = (count + 1).min(n);
        }
        (count, waiting)
    }

    /// Interrupt `id` of vCPU `v` into a list register: its pending state
    /// (a GICv2 SGI: one source; else the latch moves into the register)
    /// and active state, and what the vGIC remembers of the slot.
    fn take_into_lr(&mut self, v: usize, id: u32) -> Option<(Lr, LrSlot)> {
        let v2 = self.version == GicVersion::V2;
        let groups = self.groups;
        let i = self.irq_mut(v, id)?;
        let mut source = None;
        let mut latched = false;
        let pending = if v2 && id < SGIS {
            // One source per list register; the others stay queued.
            if i.active {
                // Its active source keeps the list register.
                source = Some(i.active_source);
                false
            } else if i.sources != 0 {
                let s = i.sources.trailing_zeros() as u8;
                i.sources &= !(1 << s);
                source = Some(s);
                true
            } else {
                false
            }
        } else {
            let p = i.enabled && i.pending() && groups & (1 << i.group1 as u32) != 0;
            // The latch moves into the list register.
            if p && i.pending {
                i.pending = false;
                latched = true;
            }
            p
        };
        i.in_lr = true;
        let lr = Lr {
            intid: id,
            pintid: i.hw,
            priority: i.priority,
            group1: i.group1,
            state: LrState::of(pending, i.active),
            // A level line emulated in software is sampled again when
            // the guest deactivates it.
            eoi_maintenance: !i.edge && i.hw.is_none() && id >= SGIS,
            source: source.unwrap_or(0),
        };
        let slot = LrSlot {
            intid: id,
            latched,
            source,
        };
        Some((lr, slot))
    }

    /// GICv2 SPENDSGIR (`set`) or CPENDSGIR write for vCPU `v`'s SGI
    /// `sgi`: sets or clears these source bits (bit n = vCPU n). Returns
    /// `v` if its pending sources changed.
    pub fn write_sgi_sources(&mut self, v: usize, sgi: u32, sources: u8, set: bool) -> VcpuMask {
        if sgi >= SGIS {
            return 0;
        }
        let Some(i) = self.irq_mut(v, sgi) else {
            return 0;
        };
        let old = i.sources;
        if set {
            i.sources |= sources;
        } else {
            i.sources &= !sources;
        }
        if i.sources != old {
            bit(v)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_prop;
#[cfg(test)]
mod tests_v2;
