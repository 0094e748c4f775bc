//! The vGIC at run time: list registers, posting to vCPUs (and kicking
//! their pCPUs), the distributor and redistributor MMIO, SGIs, the
//! physical interrupts taken at EL2, and emulated-MMIO dispatch.

use super::domain::Vm;
use super::hw::{self, Hw};
use super::Runtime;
use crate::emul::mmio::Access;
use crate::emul::vpl011::Vpl011;
use crate::psci::Power;
use crate::vgic::{self, v2, v3, GicVersion, Lr, LrState, VcpuMask, Vgic, MAX_LRS};
use core::sync::atomic::Ordering;

impl<H: Hw> Runtime<H> {
    /// Marks vCPUs `mask` of `vm` as having stale list registers and kicks
    /// the pCPUs of those running elsewhere, so they refill at once.
    pub(super) fn post(&self, vm: &Vm<H>, mask: VcpuMask, me: Option<usize>) {
        for (v, c) in vm.vcpus.iter().enumerate() {
            if mask & (1 << v) == 0 {
                continue;
            }
            c.posted.store(true, Ordering::Release);
            if Some(v) != me && c.power.state() == Power::On {
                self.hw.kick(c.pcpu, self.mpidr_of(c.pcpu));
            }
        }
    }

    /// Makes every other vCPU of `vm` that is running leave its guest, so
    /// it sees the domain stopping at once.
    pub(super) fn kick_others(&self, vm: &Vm<H>, vi: usize) {
        for (i, c) in vm.vcpus.iter().enumerate() {
            if i != vi && c.power.state() == Power::On {
                self.hw.kick(c.pcpu, self.mpidr_of(c.pcpu));
            }
        }
    }

    /// Takes this pCPU's list registers back into the vGIC state and leaves
    /// them empty in the hardware. The caller holds the vGIC lock.
    fn sync_here(&self, g: &mut Vgic, vi: usize) {
        let pc = self.this_cpu();
        let used = pc.lrs_used.load(Ordering::Relaxed);
        if used == 0 {
            return;
        }
        let mut states = [LrState::Invalid; MAX_LRS];
        let hidden = pc.lrs_hidden_pending.swap(0, Ordering::Relaxed);
        for (n, s) in states.iter_mut().enumerate().take(used) {
            *s = self.hw.lr_state(n);
            self.hw.clear_lr(n);
            if hidden & (1 << n) != 0 {
                // Written active only (`hide_pending_active`): the pending
                // half is still owed.
                *s = match *s {
                    LrState::Invalid => LrState::Pending,
                    _ => LrState::PendingActive,
                };
            }
        }
        g.sync_lrs(vi, &states[..used]);
        pc.lrs_used.store(0, Ordering::Relaxed);
    }

    /// Samples the outputs of this vCPU's EL1 timers (enabled, condition
    /// met, not masked): a timer the guest disabled or masked no longer
    /// delivers an interrupt it had raised, and the pending state the
    /// guest reads is the line's. Called with the list registers taken
    /// back, the vGIC locked.
    fn sample_timers(&self, g: &mut Vgic, vi: usize) {
        const FIRING: u64 = 0b101; // ENABLE and ISTATUS set, IMASK clear
        let (v, p) = self.hw.timer_controls();
        g.set_hw_level(vi, hw::VTIMER, v & 0b111 == FIRING);
        g.set_hw_level(vi, hw::PTIMER, p & 0b111 == FIRING);
    }

    /// A vCPU starts on this pCPU: a fresh virtual CPU interface, timers
    /// an earlier life left active deactivated, its list registers filled.
    pub fn vcpu_starts(&self, vm: &Vm<H>, vi: usize) {
        if vm.vgic.is_none() {
            return;
        }
        self.hw.reset_virtual_interface();
        self.this_cpu().lrs_used.store(0, Ordering::Relaxed);
        self.hw
            .clear_active_private((1 << hw::VTIMER) | (1 << hw::PTIMER));
        vm.vcpus[vi].posted.store(true, Ordering::Release);
        self.resume(vm, vi);
    }

    /// Just before the guest runs again: if anything was posted to this
    /// vCPU or its list registers are in use, take them back and refill
    /// them, highest priority first, and ask for the maintenance
    /// interrupts the fill needs.
    pub fn resume(&self, vm: &Vm<H>, vi: usize) {
        let Some(vg) = &vm.vgic else { return };
        let pc = self.this_cpu();
        let posted = vm.vcpus[vi].posted.swap(false, Ordering::AcqRel);
        if !posted && pc.lrs_used.load(Ordering::Relaxed) == 0 {
            return;
        }
        let n = pc.nr_lrs.load(Ordering::Relaxed);
        let mut out = [Lr::default(); MAX_LRS];
        if self.settings.virq_by_hcr {
            // No maintenance interrupt while the list registers are taken
            // back and refilled (emptied, none is pending for a moment).
            self.hw.write_hcr(hw::ICH_HCR_EN);
        }
        let (fill, deactivate) = {
            let mut g = vg.lock();
            self.sync_here(&mut g, vi);
            self.sample_timers(&mut g, vi);
            let f = g.fill_lrs(vi, &mut out[..n]);
            (f, g.take_hw_deactivate(vi))
        };
        self.hw.clear_active_private(deactivate);
        // Under the HCR_EL2.VI fallback: VI up while a list register is
        // pending, and the no-pending maintenance interrupt to drop it
        // once the guest has taken them all.
        let mut raise_vi = false;
        if self.settings.virq_by_hcr {
            let hidden = hide_pending_active(&mut out[..fill.used]);
            pc.lrs_hidden_pending.store(hidden, Ordering::Relaxed);
            raise_vi = out[..fill.used].iter().any(|l| l.state == LrState::Pending);
            self.hw.set_virtual_irq(raise_vi);
        }
        for (i, lr) in out.iter().enumerate().take(fill.used) {
            self.hw.set_lr(i, lr);
        }
        pc.lrs_used.store(fill.used, Ordering::Relaxed);
        let mut hcr = hw::ICH_HCR_EN;
        if fill.no_pending_irq || raise_vi {
            hcr |= hw::ICH_HCR_NPIE;
        }
        if fill.underflow_irq {
            hcr |= hw::ICH_HCR_UIE;
        }
        self.hw.write_hcr(hcr);
    }

    /// An access to the vGIC's distributor or redistributors: Some(Some(v))
    /// answered, Some(None) refused (bad size or alignment), None not a
    /// vGIC address. Inlined into `mmio`, like it.
    #[inline(always)]
    fn vgic_mmio(&self, vm: &Vm<H>, vi: usize, a: &Access, val: u64) -> Option<Option<u64>> {
        let vg = vm.vgic.as_ref()?;
        let version = vm.vgic_version?;
        let (off, dist) = vm.vgic_frame(a.ipa)?;
        let acc = v3::Access {
            off,
            size: a.size,
            write: a.write.then_some(val),
        };
        // A write, or a read of pending/active state, needs this vCPU's
        // list registers taken back first; other reads leave them alone
        // (and need no refill).
        let sync = a.write || vgic::read_sees_list_registers(version, dist, off);
        let out = {
            let mut g = vg.lock();
            if sync {
                self.sync_here(&mut g, vi);
                self.sample_timers(&mut g, vi);
            }
            let out = match (version, dist) {
                (GicVersion::V2, _) => v2::distributor(&mut g, vi, &acc),
                (GicVersion::V3, true) => v3::distributor(&mut g, vi, &acc),
                (GicVersion::V3, false) => v3::redistributor(&mut g, vi, &acc),
            };
            if dist && a.write && !vm.hw_spis.is_empty() {
                self.follow_hw_spis(vm, &mut g);
            }
            out
        };
        // Our own list registers were taken back: refill them before entry.
        if sync {
            vm.vcpus[vi].posted.store(true, Ordering::Relaxed);
        }
        match out {
            v3::Outcome::Done { value, changed } => {
                self.post(vm, changed, Some(vi));
                Some(Some(value))
            }
            v3::Outcome::Abort => Some(None),
        }
    }

    /// After a distributor write: each assigned SPI is routed to the pCPU
    /// of the vCPU the guest now targets, and those whose state the guest
    /// cleared are deactivated. The caller holds the vGIC lock.
    fn follow_hw_spis(&self, vm: &Vm<H>, g: &mut Vgic) {
        for id in g.take_spi_deactivate() {
            self.hw.clear_active_spi(id);
        }
        for (id, at) in &vm.hw_spis {
            let Some(p) = g
                .spi_target(*id)
                .and_then(|v| vm.vcpus.get(v))
                .map(|c| c.pcpu)
            else {
                continue;
            };
            if at.swap(p, Ordering::Relaxed) != p {
                self.hw.route_spi(*id, p, self.mpidr_of(p));
            }
        }
    }

    /// A trapped ICC_SGI1R_EL1 / ICC_ASGI1R_EL1 / ICC_SGI0R_EL1 write.
    pub fn sgi(&self, vm: &Vm<H>, vi: usize, val: u64) {
        let Some(vg) = &vm.vgic else { return };
        let mask = {
            let mut g = vg.lock();
            let (sgi, targets) = v3::sgi_targets(&g, vi, val);
            g.send_sgi(vi, targets, sgi)
        };
        self.post(vm, mask, Some(vi));
    }

    /// Raises or lowers the vPL011's interrupt line after its state
    /// changed. Called with the vPL011 locked (lock order: vPL011, then
    /// vGIC), so line changes reach the vGIC in the order they happen.
    pub(super) fn uart_line(&self, vm: &Vm<H>, u: &Vpl011, me: Option<usize>) {
        let Some(vg) = &vm.vgic else { return };
        let mask = vg.lock().set_line(0, vm.map.vpl011_intid, u.irq_pending());
        self.post(vm, mask, me);
    }

    /// A hardware-linked interrupt (a timer, an assigned device's SPI) for
    /// vCPU `vi`: it stays active until the guest deactivates the virtual
    /// one. False: no vGIC to take it.
    fn forward(&self, vm: &Vm<H>, vi: usize, id: u32) -> bool {
        let Some(vg) = &vm.vgic else { return false };
        let mask = vg.lock().inject_hw(vi, id, id);
        self.post(vm, mask, Some(vi));
        true
    }

    /// Physical interrupts taken at EL2 while vCPU `vi` of `vm` ran:
    /// kicks, maintenance, the timers (forwarded to the guest, linked to
    /// the physical interrupt) and console input.
    pub fn irq(&self, vm: &Vm<H>, vi: usize) {
        if !self.hw.gic_present() {
            return;
        }
        // A bounded batch: whatever is still pending is taken at the next
        // exception, so a flood of one source cannot hold this CPU at EL2.
        for _ in 0..16 {
            let Some(a) = self.hw.ack() else { break };
            let id = a.id;
            self.hw.eoi(a);
            match id {
                hw::VTIMER | hw::PTIMER => {
                    if !self.forward(vm, vi, id) {
                        self.hw.deactivate(a);
                    }
                    continue;
                }
                // Level-sensitive, asserted while ICH_MISR_EL2 says why: it
                // drops once the list registers are taken back and refilled.
                hw::MAINTENANCE => {
                    vm.vcpus[vi].posted.store(true, Ordering::Relaxed);
                    self.resume(vm, vi);
                }
                hw::KICK => {}
                _ if id == self.settings.console_irq => self.poll_console(),
                _ if vm.hw_spis.iter().any(|(s, _)| *s == id) => {
                    if self.forward(vm, vi, id) {
                        continue;
                    }
                }
                _ => {
                    if let Some(n) = vm.unhandled.due() {
                        vm.log(format_args!(
                            "stray physical interrupt {id} ({n} unhandled so far)"
                        ));
                    }
                }
            }
            self.hw.deactivate(a);
        }
    }

    /// Emulated MMIO: Some(value read) if the access hit a device. Inlined
    /// into the image's trap path (out of line, the MMIO micro-benchmarks
    /// took 5% longer under icount).
    #[inline(always)]
    pub fn mmio(&self, vm: &Vm<H>, vi: usize, a: &Access, val: u64) -> Option<u64> {
        // The vPL011 first: the hottest device (console output).
        if let Some(u) = vm.vpl011.as_ref().filter(|_| vm.in_vpl011(a.ipa)) {
            // Input comes by the console's interrupt; only while there is
            // none does a guest's access fetch it.
            if self.settings.console_irq == 0 {
                self.poll_console();
            }
            let off = a.ipa - vm.map.vpl011;
            let mut u = u.lock();
            let before = u.irq_pending();
            let v = if a.write {
                u.write(off, val as u32, &mut |line| self.print_line(vm, line));
                0
            } else {
                u.read(off) as u64
            };
            // Every other change of its line is followed by uart_line, so
            // only an access that changed it here needs the vGIC.
            if u.irq_pending() != before {
                self.uart_line(vm, &u, Some(vi));
            }
            return Some(v);
        }
        let r = self.vgic_mmio(vm, vi, a, val)?;
        if let Some(n) = r.is_none().then(|| vm.bad_gic.due()).flatten() {
            vm.log(format_args!(
                "{}-byte {} at vGIC address {:#x}: not an access the GIC allows, abort injected ({n} so far)",
                a.size,
                if a.write { "write" } else { "read" },
                a.ipa
            ));
        }
        r
    }
}

/// Under the HCR_EL2.VI fallback an interrupt both pending and active in
/// a list register would keep VI up while the guest cannot take it (it
/// must deactivate it first), and the no-pending maintenance interrupt
/// does not count it as pending: a storm of maintenance interrupts. So
/// such a list register is written active only, the pending half kept
/// aside (the bits returned, one per list register) and given back when
/// the list registers are taken back; an emulated interrupt asks for the
/// maintenance interrupt at its deactivation, so the pending half is
/// delivered at once, and a hardware-linked one (a timer) fires again
/// from its device if it is still due.
fn hide_pending_active(lrs: &mut [Lr]) -> usize {
    let mut hidden = 0;
    for (i, lr) in lrs.iter_mut().enumerate() {
        if lr.state == LrState::PendingActive {
            lr.state = LrState::Active;
            if lr.pintid.is_none() {
                lr.eoi_maintenance = true;
            }
            hidden |= 1 << i;
        }
    }
    hidden
}
