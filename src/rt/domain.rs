//! One domain as the run-time runs it ([`Vm`]) and its vCPUs: built once
//! from the plan's [`DomainSpec`], then shared read-only except for
//! atomics and the per-device locks.

use super::hw::Hw;
use super::Lock;
use crate::emul::console::LineQueue;
use crate::emul::vpl011::{self, Vpl011};
use crate::mm::stage2::Stage2Tables;
use crate::mm::Range;
use crate::psci::VcpuPower;
use crate::vgic::{v2, v3, GicVersion, Vgic};
use crate::vm::build::DomainSpec;
use crate::vm::guest_dtb::{self, GuestMap};
use crate::vm::lifecycle::Lifecycle;
use crate::vm::load::Restart;
use crate::vm::ratelimit::LogLimit;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Bytes of console output a domain may have waiting (whole lines).
pub const OUT_QUEUE: usize = 4096;

/// One vCPU: its power state (PSCI), the pCPU it is pinned to, and
/// whether its list registers are stale (something was posted to it).
pub struct Vcpu {
    pub power: VcpuPower,
    pub pcpu: usize,
    pub(super) posted: AtomicBool,
}

impl AsRef<VcpuPower> for Vcpu {
    fn as_ref(&self) -> &VcpuPower {
        &self.power
    }
}

/// One domain.
pub struct Vm<H: Hw> {
    pub name: String,
    /// Domain id from the plan.
    pub id: u16,
    pub vtcr: u64,
    pub vttbr: u64,
    /// Guest-physical RAM banks.
    pub ram_ipa: Vec<Range>,
    pub vcpus: Vec<Vcpu>,
    pub vpl011: Option<Lock<Vpl011, H>>,
    /// Its whole lines of console output waiting for the shared UART.
    pub(super) out: Lock<LineQueue<OUT_QUEUE>, H>,
    /// The virtual GIC (none when the host GIC is unusable). Locked only
    /// inside trap handling, never across a guest entry.
    pub vgic: Option<Lock<Vgic, H>>,
    /// Its version (immutable: read without the lock).
    pub(super) vgic_version: Option<GicVersion>,
    /// Where the guest sees its vGIC and vPL011.
    pub(super) map: GuestMap,
    /// Bytes of the GICv3 redistributor region that trap to the vGIC: Xen's
    /// 16 MiB window, or in a direct-mapped domain (at the host's
    /// redistributor address) only the frames of its vCPUs, so that the
    /// vPL011 or a device the host has above them is not taken for one.
    pub(super) gicr_size: u64,
    /// SPIs of assigned devices, and the pCPU each is routed to now.
    pub(super) hw_spis: Vec<(u32, AtomicUsize)>,
    /// What each (re)start does to its memory: pages shared with its boot
    /// modules, copies, scrubbing, cleaning.
    pub(super) restart: Restart,
    /// Its stage-2 tables: a copy on write changes them while it runs.
    pub(super) s2: Lock<Stage2Tables<H::Pages>, H>,
    /// Pages copied on write since it last started.
    pub(super) cow_pages: AtomicU32,
    pub entry_ipa: u64,
    pub dtb_ipa: u64,
    /// CNTVOFF_EL2: the system counter when the domain last started, so
    /// its virtual counter starts at zero at every (re)start.
    pub(super) cntvoff: AtomicU64,
    /// Log lines a guest can cause, rate limited: unhandled traps and
    /// stray interrupts, its accesses that hit nothing, SMCCC calls it
    /// made with function ids nothing implements, its accesses to the vGIC
    /// frames the GIC does not allow.
    pub unhandled: LogLimit,
    pub faults: LogLimit,
    pub unknown_calls: LogLimit,
    pub bad_gic: LogLimit,
    /// Its resets: their lines are rate limited too.
    pub(super) resets: LogLimit,
    /// Loading (built; the pCPU of vCPU 0 loads it, domains load in
    /// parallel, each on its own pCPU), running, stopping, off, resetting.
    pub(super) life: Lifecycle,
}

impl<H: Hw> Vm<H> {
    /// The domain `s` with its stage-2 translation and a vGIC of `vgic`'s
    /// version (none: the host GIC is not usable).
    pub fn new(
        s: DomainSpec,
        vtcr: u64,
        s2: Stage2Tables<H::Pages>,
        vgic: Option<GicVersion>,
    ) -> Self {
        let vttbr = s2.vttbr(s.layout.vmid);
        let affinities: Vec<u64> = (0..s.layout.pcpus.len() as u64).map(vmpidr_aff).collect();
        let vcpus = s
            .layout
            .pcpus
            .iter()
            .zip(&affinities)
            .map(|(&p, &a)| Vcpu {
                power: VcpuPower::new(a),
                pcpu: p,
                posted: AtomicBool::new(false),
            })
            .collect();
        let mut vgic_state = vgic.map(|v| Vgic::new(v, &affinities, s.spis));
        // Only the SPIs the vGIC can link to their physical ones are
        // the domain's (the others were refused with a line by the vGIC).
        let hw_spis = match vgic_state.as_mut() {
            Some(g) => s
                .devices
                .iter()
                .flat_map(|d| &d.irqs)
                .filter(|i| g.link_spi(i.intid, i.edge))
                .map(|i| (i.intid, AtomicUsize::new(s.layout.pcpus[0])))
                .collect(),
            None => Vec::new(),
        };
        Vm {
            name: s.name,
            id: s.id,
            vtcr,
            vttbr,
            ram_ipa: s.layout.banks,
            vcpus,
            vpl011: s.vpl011.then(|| Lock::<Vpl011, H>::new(Vpl011::new())),
            out: Lock::<_, H>::new(LineQueue::new()),
            vgic: vgic_state.map(Lock::<_, H>::new),
            vgic_version: vgic,
            gicr_size: if s.map.gicr == GuestMap::XEN.gicr {
                v3::GICR_SIZE
            } else {
                s.layout.pcpus.len() as u64 * guest_dtb::GICR_STRIDE
            },
            map: s.map,
            hw_spis,
            restart: s.restart,
            s2: Lock::<_, H>::new(s2),
            cow_pages: AtomicU32::new(0),
            entry_ipa: s.entry_ipa,
            dtb_ipa: s.dtb_ipa,
            cntvoff: AtomicU64::new(0),
            unhandled: LogLimit::new(),
            faults: LogLimit::new(),
            unknown_calls: LogLimit::new(),
            bad_gic: LogLimit::new(),
            resets: LogLimit::new(),
            life: Lifecycle::new(),
        }
    }

    /// SYSTEM_OFF or a reset is under way (or done): vCPUs park at their
    /// next trap.
    pub fn stopping(&self) -> bool {
        self.life.stopping()
    }

    /// Its lifecycle (loading, running, stopping, off, resetting).
    pub fn life(&self) -> &Lifecycle {
        &self.life
    }

    /// CNTVOFF_EL2 for its vCPUs.
    pub fn cntvoff(&self) -> u64 {
        self.cntvoff.load(Ordering::Acquire)
    }

    pub(super) fn powers(&self) -> impl Iterator<Item = &VcpuPower> + Clone {
        self.vcpus.iter().map(|c| &c.power)
    }

    /// Which vGIC frame `ipa` is in: (offset in it, the distributor (either
    /// version) or else a GICv3 redistributor).
    pub(super) fn vgic_frame(&self, ipa: u64) -> Option<(u64, bool)> {
        self.vgic.as_ref()?;
        let in_frame =
            |base: u64, size: u64| (base..base + size).contains(&ipa).then(|| ipa - base);
        let m = &self.map;
        match self.vgic_version? {
            GicVersion::V3 => match in_frame(m.gicd, v3::GICD_SIZE) {
                Some(off) => Some((off, true)),
                None => Some((in_frame(m.gicr, self.gicr_size)?, false)),
            },
            GicVersion::V2 => Some((in_frame(m.gicd, v2::GICD_SIZE)?, true)),
        }
    }

    /// Whether `ipa` is in its vPL011's frame.
    pub(super) fn in_vpl011(&self, ipa: u64) -> bool {
        let base = self.map.vpl011;
        self.vpl011.is_some() && (base..base + vpl011::SIZE).contains(&ipa)
    }

    /// The device dtvisor emulates at `ipa` for this domain, by name.
    pub fn emulated_device(&self, ipa: u64) -> Option<&'static str> {
        if self.in_vpl011(ipa) {
            return Some("vPL011");
        }
        self.vgic_frame(ipa).map(|(_, dist)| {
            if dist {
                "vGIC distributor"
            } else {
                "vGIC redistributor"
            }
        })
    }

    /// "(dtvisor) <domain>: <message>" on the console.
    pub fn log(&self, args: fmt::Arguments) {
        log::info!("{}: {}", self.name, args);
    }
}

use core::fmt;

/// Guest MPIDR affinity of vCPU `n` (Xen's rule: Aff0 = n & 0xf, Aff1 = n >> 4).
pub fn vmpidr_aff(n: u64) -> u64 {
    (n & 0xf) | ((n >> 4) << 8)
}

/// The MPIDR_EL1 a vCPU reads (VMPIDR_EL2): RES1 bit 31 and its affinity.
pub fn vcpu_mpidr(n: u64) -> u64 {
    (1 << 31) | vmpidr_aff(n)
}
