//! Guest traps: what each exception from a guest means, and the answer.
//! Runs on the pCPU that owns the trapping vCPU, with the guest's
//! registers in the trap frame; no allocation, no lock held across the
//! return to the guest.

use crate::arch;
use crate::arch::exception::{self, exception_class_name, TrapFrame};
use crate::arch::vcpu::{self, sysreg};
use crate::vmm::{self, ImageHw, Vm};
use dtvisor::emul::inject::{self, Trap};
use dtvisor::emul::mmio::{emulable, fault_ipa, Access};
use dtvisor::emul::sysreg::{SysReg, SysRegAccess};
use dtvisor::hw::spectre;
use dtvisor::psci::{self, Call};
use dtvisor::rt::Runtime;

/// Called by the vectors (arch/aarch64/vectors.S) for every exception
/// taken to EL2: a guest's trap is handled and returns to it; anything
/// else is reported and this CPU halts instead of looping on the fault.
#[unsafe(no_mangle)]
extern "C" fn el2_exception(kind: u64, frame: &mut TrapFrame) {
    exception::trap_begins(kind);
    let handled = handle(kind, frame);
    exception::trap_ends(kind);
    if handled == Some(true) {
        return;
    }
    use core::fmt::Write;
    let report = exception::Unexpected { kind, frame };
    let _ = writeln!(crate::console::PanicWriter, "{report}");
    arch::halt();
}

/// Handles an exception from a guest. Returns None for anything that is
/// not a guest trap (the caller reports it as unexpected), Some(true) when
/// the guest may resume.
fn handle(kind: u64, frame: &mut TrapFrame) -> Option<bool> {
    if !crate::arch::boot::stack_intact(crate::arch::cpu_index()) {
        crate::fatal::fatal("stack overflow on this CPU");
    }
    let rt = vmm::runtime()?;
    let (vm, vi) = rt.current()?;
    match kind {
        8 => {} // synchronous, lower EL AArch64
        9 | 10 => {
            // Physical IRQ/FIQ while a guest ran: a kick, the timers,
            // maintenance, console input.
            rt.irq(vm, vi);
            if vm.stopping() {
                vmm::park(rt, vm, vi);
            }
            rt.resume(vm, vi);
            return Some(true);
        }
        11 => {
            vmm::system_off(rt, vm, vi, "SError from the guest: domain stopped");
        }
        _ => return None,
    }
    if vm.stopping() {
        vmm::park(rt, vm, vi);
    }
    let esr = sysreg!(read "esr_el2");
    match Trap::of(esr) {
        Trap::Hvc => hypercall(rt, vm, vi, frame),
        Trap::Smc => {
            frame.elr += 4; // SMC traps with the preferred return on itself
            hypercall(rt, vm, vi, frame)
        }
        Trap::Wfx => frame.elr += 4,
        Trap::DataAbort => data_abort(rt, vm, vi, frame, esr),
        Trap::InstAbort => {
            let far = sysreg!(read "far_el2");
            let hpfar = sysreg!(read "hpfar_el2");
            // A fetch in the instant a shared page is switched: retry.
            if rt.shared_fault(vm, fault_ipa(hpfar, far)) {
                rt.resume(vm, vi);
                return Some(true);
            }
            if let Some(n) = vm.faults.due() {
                vm.log(format_args!(
                    "instruction fetch from {far:#x} outside its memory: abort injected ({n} faults so far)"
                ));
            }
            let esr = inject::external_abort_esr(true, vcpu::from_el1(frame), false);
            vcpu::inject_sync(frame, esr, far);
        }
        Trap::SysReg => sysreg(rt, vm, vi, frame, esr),
        Trap::Other(ec) => {
            if let Some(n) = vm.unhandled.due() {
                vm.log(format_args!(
                    "unhandled trap, class {ec:#04x} ({}) at {:#x}: undefined instruction injected ({n} so far)",
                    exception_class_name(ec),
                    frame.elr
                ));
            }
            undefined(frame);
        }
    }
    rt.resume(vm, vi);
    Some(true)
}

/// A trapped MSR/MRS: the SGI registers go to the vGIC; anything else
/// is logged (rate limited) and answered with an undefined instruction.
fn sysreg(rt: &Runtime<ImageHw>, vm: &Vm, vi: usize, frame: &mut TrapFrame, esr: u64) {
    let a = SysRegAccess::decode(esr);
    match a.reg() {
        SysReg::IccSgi1r | SysReg::IccAsgi1r | SysReg::IccSgi0r if !a.read && vm.vgic.is_some() => {
            let v = if a.rt == 31 {
                0
            } else {
                frame.x[a.rt as usize]
            };
            rt.sgi(vm, vi, v);
            frame.elr += 4;
        }
        SysReg::Actlr => read_only(frame, &a, sysreg!(read "actlr_el1")),
        SysReg::ErrorRecord => read_only(frame, &a, 0),
        _ => {
            if let Some(n) = vm.unhandled.due() {
                vm.log(format_args!(
                        "trapped system register access {a} at {:#x}: undefined instruction injected ({n} so far)",
                        frame.elr
                    ),
                );
            }
            undefined(frame);
        }
    }
}

/// A register emulated as read-only with value `v` (writes ignored).
fn read_only(frame: &mut TrapFrame, a: &SysRegAccess, v: u64) {
    if a.read && a.rt != 31 {
        frame.x[a.rt as usize] = v;
    }
    frame.elr += 4;
}

fn undefined(frame: &mut TrapFrame) {
    vcpu::inject_sync(frame, inject::undefined_esr(), 0);
}

// Inlined into the trap path, as it was before the run-time moved to the
// library (out of line, the MMIO micro-benchmarks took 5% longer).
#[inline(always)]
fn data_abort(rt: &Runtime<ImageHw>, vm: &Vm, vi: usize, frame: &mut TrapFrame, esr: u64) {
    let far = sysreg!(read "far_el2");
    let hpfar = sysreg!(read "hpfar_el2");
    let ipa = fault_ipa(hpfar, far);
    let decoded = emulable(esr)
        .then(|| Access::decode(esr, hpfar, far))
        .flatten();
    if let Some(a) = decoded {
        let src = if a.reg == 31 {
            0
        } else {
            frame.x[a.reg as usize]
        };
        if let Some(v) = rt.mmio(vm, vi, &a, a.store_value(src)) {
            if !a.write && a.reg != 31 {
                frame.x[a.reg as usize] = a.load_value(v);
            }
            frame.elr += 4;
            return;
        }
    }
    // A page shared with a boot module (after the devices: MMIO is the
    // hot path): copied on the first write, then the access is retried.
    if rt.shared_fault(vm, ipa) {
        return;
    }
    let device = vm.emulated_device(ipa);
    // A decoded access a device refused was logged (rate limited) by it.
    let refused = decoded.is_some() && device.is_some();
    if let Some(n) = (!refused).then(|| vm.faults.due()).flatten() {
        let what = if inject::is_write(esr) {
            "write"
        } else {
            "read"
        };
        match device {
            // A device's address, but an access with no syndrome to
            // emulate it from (ESR ISV clear): a load/store pair, pre- or
            // post-indexed, SIMD, atomic or exclusive. The architecture
            // leaves it to the hypervisor; like KVM, dtvisor aborts it.
            Some(dev) => vm.log(format_args!(
                    "{what} at {dev} address {ipa:#x} (pc {:#x}) is not a single load or store (no syndrome): \
                     only those are emulated; external abort injected ({n} faults so far)",
                    frame.elr
                ),
            ),
            None => vm.log(format_args!(
                    "{what} at IPA {ipa:#x} (pc {:#x}) hits nothing: external abort injected ({n} faults so far)",
                    frame.elr
                ),
            ),
        }
    }
    let esr = inject::external_abort_esr(false, vcpu::from_el1(frame), inject::is_write(esr));
    vcpu::inject_sync(frame, esr, far);
}

fn hypercall(rt: &Runtime<ImageHw>, vm: &Vm, vi: usize, frame: &mut TrapFrame) {
    let call = Call::decode([frame.x[0], frame.x[1], frame.x[2], frame.x[3]]);
    let ret = match call {
        Call::Version => psci::VERSION_1_1,
        Call::Features(fid) => psci::features(fid),
        Call::CpuSuspend => psci::NOT_SUPPORTED,
        Call::CpuOn {
            target,
            entry,
            context,
        } => {
            let r = psci::cpu_on(&vm.vcpus, &vm.ram_ipa, target, entry, context);
            if r == psci::SUCCESS {
                vmm::wake_all();
            }
            r
        }
        Call::CpuOff => vmm::park(rt, vm, vi),
        Call::AffinityInfo { target, level } => psci::affinity_info(&vm.vcpus, target, level),
        Call::MigrateInfoType => psci::MIGRATE_NONE,
        Call::SystemOff => vmm::system_off(rt, vm, vi, "SYSTEM_OFF: domain powered off"),
        Call::SystemReset => vmm::system_reset(rt, vm, vi),
        Call::SmcccVersion => psci::SMCCC_1_1,
        // The speculation workarounds: what this pCPU's plan says (the
        // vCPU is pinned to it). A guest's own workaround calls need
        // nothing more than what its exit to EL2 already ran.
        Call::ArchFeatures(fid) => arch::spectre::plan_here()
            .and_then(|p| p.features(fid))
            .unwrap_or(psci::NOT_SUPPORTED),
        Call::Unknown(fid) if spectre::is_workaround(fid) => arch::spectre::plan_here()
            .and_then(|p| p.guest_call(fid))
            .unwrap_or(psci::NOT_SUPPORTED),
        Call::Unknown(fid) => {
            if let Some(n) = vm.unknown_calls.due() {
                vm.log(format_args!("SMCCC function {fid:#x} is not implemented: NOT_SUPPORTED ({n} such calls so far)"),
                );
            }
            psci::NOT_SUPPORTED
        }
    };
    frame.x[0] = ret as u64;
}
