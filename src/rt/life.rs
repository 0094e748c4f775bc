//! A domain's life at run time: its first load on vCPU 0's pCPU, entering
//! vCPUs, leaving them, SYSTEM_OFF and SYSTEM_RESET (the stop protocol of
//! `vm::lifecycle`), the reload a reset does, and copy on write of the
//! pages shared with the boot modules.

use super::domain::Vm;
use super::hw::Hw;
use super::Runtime;
use crate::emul::vpl011::Vpl011;
use crate::mm::range::Bytes;
use crate::mm::Range;
use crate::vm::lifecycle::{self, After, DomainState, Entry, Request};
use crate::vm::load::{Work, PAGE};
use core::fmt;
use core::sync::atomic::Ordering;

/// What a SYSTEM_RESET ended in, for the vCPU that asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetEnd {
    /// The domain restarts: vCPU 0 is pending; the caller idles.
    Restarted,
    /// Another vCPU stops it, or it ended off: the caller parks.
    Park,
}

impl<H: Hw> Runtime<H> {
    /// The vCPU this pCPU should enter now, if any, with its entry point
    /// and context: vCPU 0's pCPU first loads its domain (domains load in
    /// parallel, each on its own pCPU).
    pub fn next_run(&self) -> Option<(&Vm<H>, usize, (u64, u64))> {
        let (vm, vi) = self.current()?;
        if vi == 0 && vm.life.state() == DomainState::Loading {
            self.load(vm, true, true);
            vm.life.loaded();
            self.power_on_first(vm);
        }
        let power = &vm.vcpus[vi].power;
        (lifecycle::try_enter(&vm.life, power) == Entry::Run).then(|| (vm, vi, power.entry()))
    }

    /// The calling vCPU leaves its guest: Off (CPU_OFF: CPU_ON may start
    /// it again) or, if its domain is stopping, Stopped.
    pub fn leave(&self, vm: &Vm<H>, vi: usize) {
        lifecycle::leave(&vm.life, &vm.vcpus[vi].power);
    }

    /// Waits until every vCPU of `vm` but `vi` has stopped, kicking those
    /// still running (see `vm::lifecycle`: pending ones are cancelled).
    fn wait_stopped(&self, vm: &Vm<H>, vi: usize) {
        self.kick_others(vm, vi);
        let t0 = self.hw.counter();
        let mut warned = false;
        while !lifecycle::poll_stopped(vm.powers(), vi) {
            if !warned && self.hw.counter() - t0 > self.hw.counter_freq() {
                vm.log(format_args!("still waiting for its other vCPUs to stop"));
                self.kick_others(vm, vi);
                warned = true;
            }
            self.hw.relax();
        }
    }

    /// SYSTEM_OFF (or an SError): this domain only; the other domains
    /// keep running. `why` is said once, when the domain starts stopping.
    /// The caller parks its vCPU afterwards.
    pub fn system_off(&self, vm: &Vm<H>, vi: usize, why: &str) {
        if vm.life.request_off() == Request::Accepted {
            // Said once the domain is stopping: from this line on, console
            // input no longer goes to it.
            vm.log(format_args!("{why}"));
            self.wait_stopped(vm, vi);
            vm.life.finish_stop();
        }
    }

    /// SYSTEM_RESET: restart this domain from its pristine images once
    /// every one of its vCPUs has stopped. A SYSTEM_OFF that comes in
    /// meanwhile wins: the domain then stays off.
    pub fn system_reset(&self, vm: &Vm<H>, vi: usize) -> ResetEnd {
        // A domain resetting in a loop must not flood the console every
        // domain shares: its reset and reload lines are rate limited (the
        // first ten resets, then one per power of two, with the count).
        let say = vm.resets.due();
        match say {
            Some(n) if n > 10 => vm.log(format_args!(
                "SYSTEM_RESET: restarting the domain (reset {n}; lines of other resets left out)"
            )),
            Some(_) => vm.log(format_args!("SYSTEM_RESET: restarting the domain")),
            None => {}
        }
        if vm.life.request_reset() != Request::Accepted {
            return ResetEnd::Park;
        }
        self.wait_stopped(vm, vi);
        if vm.life.finish_stop() == Some(After::Reset) {
            self.load(vm, false, say.is_some());
            lifecycle::power_off_all(vm.powers());
            vm.life.restarted();
            self.power_on_first(vm);
            return ResetEnd::Restarted;
        }
        vm.log(format_args!(
            "powered off (a SYSTEM_OFF overtook the reset)"
        ));
        ResetEnd::Park
    }

    /// Powers on vCPU 0 at the kernel entry (the domain is running).
    fn power_on_first(&self, vm: &Vm<H>) {
        log::info!(
            "{} (id {}): loaded, vCPU 0 starts at {:#x} with its device tree at {:#x}",
            vm.name,
            vm.id,
            vm.entry_ipa,
            vm.dtb_ipa
        );
        vm.vcpus[0].power.start(vm.entry_ipa, vm.dtb_ipa);
        self.hw.wake_all();
    }

    /// Loads the pristine images and resets the domain's devices. Runs on
    /// any pCPU of the domain while none of its vCPUs runs. `first`: its
    /// first start (its stage-2 tables are fresh; `bootscrub=0` may skip
    /// the scrub). `say`: print what the reload did (a reset's lines are
    /// rate limited).
    fn load(&self, vm: &Vm<H>, first: bool, say: bool) {
        let scrub = !first || self.settings.boot_scrub;
        if !first {
            self.reshare(vm);
        }
        self.load_memory(vm, scrub);
        let w = vm.restart.work(scrub);
        if first {
            self.first_load_done(vm, w);
        } else {
            let n = vm.cow_pages.swap(0, Ordering::Relaxed);
            if say {
                vm.log(format_args!(
                    "its last life copied {n} shared pages on write ({})",
                    Bytes(n as u64 * PAGE)
                ));
                vm.log(format_args!("{}", WorkLine(w)));
            }
        }
        self.reset_devices(vm);
        vm.cntvoff.store(self.hw.counter(), Ordering::Release);
    }

    /// The domain's memory as its images left it: its host RAM that no
    /// image overwrites, used by no one else while all its vCPUs are
    /// stopped, scrubbed (so no data crosses domains or boots), the
    /// images copied, and the caches made to agree.
    fn load_memory(&self, vm: &Vm<H>, scrub: bool) {
        let r = &vm.restart;
        if scrub {
            for z in &r.zero {
                // SAFETY: the domain's own RAM, and none of its vCPUs runs.
                unsafe { self.hw.zero(*z) };
            }
        }
        for l in &r.copies {
            // SAFETY: placement made `src` (a boot module, reserved and
            // never written, or the domain's DTB on the heap) and `dst`
            // (guest RAM of this stopped domain) disjoint host ranges.
            unsafe { self.hw.copy(l.src, l.dst, l.len) };
        }
        // The guest starts with its MMU off: memory must hold its images,
        // and the scrubbed RAM must hold zeroes for a guest that reads it
        // non-cacheably (no stale line of its RAM may stay cached either).
        for c in r.clean_ranges(scrub) {
            self.hw.clean_invalidate_dcache(*c);
        }
        // Every CPU may fetch the new images.
        self.hw.invalidate_icache_all();
    }

    /// The boot's totals count each domain's first load only. The line is
    /// printed with the totals locked, so every domain's line comes before
    /// the totals that the last domain to finish prints.
    fn first_load_done(&self, vm: &Vm<H>, w: Work) {
        let mut b = self.work.lock();
        b.0 += w;
        b.1 += 1;
        vm.log(format_args!("{}", WorkLine(w)));
        if b.1 == self.vms.len() {
            self.boot_memory_report(b.0);
        }
    }

    /// A (re)start resets the domain's devices: the vPL011 (a partial line
    /// it held is printed), the vGIC, and the assigned devices' SPIs:
    /// whatever an earlier life left active is deactivated; they go to
    /// vCPU 0's pCPU, as on a first boot, until the guest routes them
    /// (whichever vCPU asked for the reset).
    fn reset_devices(&self, vm: &Vm<H>) {
        if let Some(u) = &vm.vpl011 {
            let mut u = u.lock();
            if u.has_partial_line() {
                u.flush(&mut |line| self.print_line(vm, line));
            }
            *u = Vpl011::new();
        }
        if let Some(g) = &vm.vgic {
            g.lock().reset();
        }
        let first = vm.vcpus[0].pcpu;
        for (id, at) in &vm.hw_spis {
            self.hw.clear_active_spi(*id);
            at.store(first, Ordering::Relaxed);
            self.hw.route_spi(*id, first, self.mpidr_of(first));
        }
        for c in &vm.vcpus {
            c.posted.store(false, Ordering::Relaxed);
        }
    }

    /// Once every domain is loaded: what the boot moved, and what the
    /// hypervisor keeps for itself.
    fn boot_memory_report(&self, total: Work) {
        log::info!("all domains loaded, {}", WorkLine(total));
        let m = self.hw.memory();
        log::info!(
            "hypervisor memory: image {} + heap {} = {} ({} of the heap in use, at most {}, incl. stage-2 tables and guest device trees); boot modules kept once as the pristine images: {}",
            Bytes(m.image),
            Bytes(m.heap),
            Bytes(m.image + m.heap),
            Bytes(m.used),
            Bytes(m.peak),
            Bytes(self.settings.modules_kept)
        );
    }

    /// Maps every shared page back onto its module, read-only (a restart:
    /// the pages copied on write are left behind, unseen).
    fn reshare(&self, vm: &Vm<H>) {
        let mut t = vm.s2.lock();
        for s in &vm.restart.shared {
            let mut p = s.ipa.start;
            while p < s.ipa.end {
                let _ = t.unmap_page(p);
                p += PAGE;
            }
        }
        self.hw.invalidate_vmid();
        for s in &vm.restart.shared {
            if t.map_shared(s.ipa, s.module).is_err() {
                self.hw
                    .fatal("stage-2: a shared page cannot be mapped again");
            }
        }
        self.hw.tables_updated();
    }

    /// A guest access to `ipa` faulted. If the page is shared with a boot
    /// module, the first write copies it into the domain's own RAM and
    /// maps that instead; true: the access is to be retried (also when
    /// another vCPU copied it meanwhile, or the fault was a read in the
    /// instant the page was being switched).
    pub fn shared_fault(&self, vm: &Vm<H>, ipa: u64) -> bool {
        let Some((page, module, own)) = vm.restart.shared_page(ipa) else {
            return false;
        };
        let mut t = vm.s2.lock();
        if t.writable(page) == Some(true) {
            return true;
        }
        // SAFETY: `module` is a page of a boot module (reserved, never
        // written) and `own` the domain's page behind the same guest page,
        // disjoint host RAM; the guest cannot write `own` until it is
        // mapped, and the stage-2 lock keeps other vCPUs from copying it.
        unsafe { self.hw.copy(module, own, PAGE) };
        // The guest may read it with its MMU off, or execute it.
        let own = Range::new(own, own + PAGE);
        self.hw.clean_dcache(own);
        self.hw.invalidate_icache(own);
        // Break before make: invalid, TLBs invalidated, then the new page.
        if t.unmap_page(page).is_err() {
            return false;
        }
        self.hw.invalidate_ipa(page);
        if t.map_ram_page(page, own.start).is_err() {
            return false;
        }
        self.hw.tables_updated();
        vm.cow_pages.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// "memory: 33554432 B (32.0 MiB) shared with its modules (copy on
/// write), 6976 B (6.8 KiB) copied, ... zeroed, ... cleaned".
struct WorkLine(Work);

impl fmt::Display for WorkLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.0;
        write!(
            f,
            "memory: {} shared with its modules (copy on write), {} copied, {} zeroed, {} cleaned",
            Bytes(w.shared),
            Bytes(w.copied),
            Bytes(w.zeroed),
            Bytes(w.cleaned)
        )
    }
}
