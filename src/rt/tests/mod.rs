//! The run-time against a fake machine: scenarios across pCPUs (threads),
//! what reaches the hardware, what the console shows.

extern crate std;

mod fake;

use super::{ResetEnd, Runtime, Settings, Vm};
use crate::config::model::{Device, DeviceIrq};
use crate::emul::mmio::Access;
use crate::emul::vpl011;
use crate::mm::stage2::{HostPages, Stage2Tables};
use crate::mm::Range;
use crate::placement::{DomainLayout, RamMap};
use crate::psci::{self, Power};
use crate::vgic::{v3, GicVersion, LrState};
use crate::vm::build::DomainSpec;
use crate::vm::guest_dtb::GuestMap;
use crate::vm::lifecycle::DomainState;
use crate::vm::load::{Load, Restart, Shared, PAGE};
use alloc::string::ToString;
use alloc::vec::Vec;
use fake::{capture_log, log_lines, on_cpu, Ev, Fake};
use std::sync::Barrier;

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 0x800_0000;
const CONSOLE_IRQ: u32 = 40;

/// Domain `name` with a vPL011, its vCPUs on `pcpus`, 128 MiB of RAM.
fn spec(name: &str, pcpus: &[usize]) -> DomainSpec {
    let ram = Range::new(RAM, RAM + RAM_SIZE);
    DomainSpec {
        name: name.to_string(),
        id: 1,
        layout: DomainLayout {
            name: name.to_string(),
            ram: alloc::vec![RamMap {
                ipa: ram,
                pa: 0x8000_0000
            }],
            banks: alloc::vec![ram],
            kernel_ipa: Range::new(RAM, RAM + 0x20_0000),
            initrd_ipa: None,
            dtb_ipa: Range::new(RAM + 0x400_0000, RAM + 0x401_0000),
            pristine: Vec::new(),
            pcpus: pcpus.to_vec(),
            vmid: 1,
        },
        vpl011: true,
        map: GuestMap::XEN,
        spis: 32,
        devices: Vec::new(),
        reserved_memory: Vec::new(),
        restart: Restart::default(),
        entry_ipa: RAM,
        dtb_ipa: RAM + 0x400_0000,
    }
}

fn vm(s: DomainSpec) -> Vm<Fake> {
    let mut t = Stage2Tables::new(HostPages(0));
    for sh in &s.restart.shared {
        t.map_shared(sh.ipa, sh.module).unwrap();
    }
    Vm::new(s, 0, t, Some(GicVersion::V3))
}

/// The run-time over `specs` on `cpus` pCPUs with 4 list registers each,
/// published, the calling thread pCPU 0.
fn runtime(specs: Vec<DomainSpec>, cpus: usize, console_irq: u32) -> Runtime<Fake> {
    runtime_on(Fake::new(cpus), specs, cpus, console_irq)
}

fn settings(console_irq: u32) -> Settings {
    Settings {
        console_irq,
        boot_scrub: true,
        modules_kept: 0,
        virq_by_hcr: false,
    }
}

fn runtime_on(hw: Fake, specs: Vec<DomainSpec>, cpus: usize, console_irq: u32) -> Runtime<Fake> {
    runtime_with(hw, specs, cpus, settings(console_irq))
}

fn runtime_with(
    hw: Fake,
    specs: Vec<DomainSpec>,
    cpus: usize,
    settings: Settings,
) -> Runtime<Fake> {
    let mpidrs: Vec<u64> = (0..cpus as u64).collect();
    let rt = Runtime::new(
        hw,
        specs.into_iter().map(vm).collect(),
        &mpidrs,
        4,
        settings,
    );
    for c in 1..cpus {
        on_cpu(c);
        rt.cpu_ready(4);
    }
    on_cpu(0);
    rt.publish();
    rt
}

/// pCPU `pcpu` enters the vCPU it runs (loading the domain first if it
/// is vCPU 0's); returns which one.
fn enter(rt: &Runtime<Fake>, pcpu: usize) -> usize {
    on_cpu(pcpu);
    let (vm, vi, _) = rt.next_run().expect("a vCPU to enter");
    rt.vcpu_starts(vm, vi);
    vi
}

/// Domain 0's vCPU 0 entered on pCPU 0, then vCPU 1 (CPU_ON) on pCPU 1.
fn both_running(rt: &Runtime<Fake>) -> &Vm<Fake> {
    enter(rt, 0);
    let vm = &rt.vms()[0];
    assert_eq!(
        psci::cpu_on(&vm.vcpus, &vm.ram_ipa, 1, RAM, 0),
        psci::SUCCESS
    );
    enter(rt, 1);
    vm
}

fn access(ipa: u64, write: bool) -> Access {
    Access {
        ipa,
        size: 4,
        write,
        reg: 0,
        sign_extend: false,
        sixty_four: false,
    }
}

/// A guest write of `val` to `ipa`, answered by an emulated device.
fn write(rt: &Runtime<Fake>, d: usize, vi: usize, ipa: u64, val: u64) {
    let vm = &rt.vms()[d];
    assert_eq!(
        rt.mmio(vm, vi, &access(ipa, true), val),
        Some(0),
        "write to {ipa:#x}"
    );
}

fn read(rt: &Runtime<Fake>, d: usize, vi: usize, ipa: u64) -> Option<u64> {
    rt.mmio(&rt.vms()[d], vi, &access(ipa, false), 0)
}

/// Group 1 on in the distributor, SGI `sgi` enabled for vCPU `target`.
fn enable_sgi(rt: &Runtime<Fake>, d: usize, target: usize, sgi: u32) {
    write(rt, d, 0, v3::GICD_BASE, 2);
    let isenabler0 = v3::GICR_BASE + target as u64 * v3::GICR_STRIDE + 0x1_0100;
    write(rt, d, 0, isenabler0, 1 << sgi);
}

fn kicks(ev: &[Ev]) -> Vec<usize> {
    ev.iter()
        .filter_map(|e| match e {
            Ev::Kick(p) => Some(*p),
            _ => None,
        })
        .collect()
}

#[test]
fn a_kick_while_the_target_idles_waits_for_its_start() {
    let rt = runtime(alloc::vec![spec("k", &[0, 1])], 2, 0);
    assert_eq!(enter(&rt, 0), 0);
    enable_sgi(&rt, 0, 1, 3);
    let vm = &rt.vms()[0];
    rt.hw.take();
    // vCPU 1 is off: the SGI waits in the vGIC, and its idle pCPU is not
    // interrupted for it.
    rt.sgi(vm, 0, (3 << 24) | (1 << 1));
    assert_eq!(kicks(&rt.hw.take()), [] as [usize; 0]);
    let r = psci::cpu_on(&vm.vcpus, &vm.ram_ipa, 1, RAM + 0x1000, 7);
    assert_eq!(r, psci::SUCCESS);
    // Its pCPU enters it: the list registers hold the SGI at once.
    assert_eq!(enter(&rt, 1), 1);
    assert_eq!(rt.hw.lr_intids(1), [3]);
    assert_eq!(vm.vcpus[1].power.state(), Power::On);
    // Now it runs: a second SGI kicks its pCPU.
    on_cpu(0);
    enable_sgi(&rt, 0, 1, 4);
    rt.hw.take();
    rt.sgi(vm, 0, (4 << 24) | (1 << 1));
    assert_eq!(kicks(&rt.hw.take()), [1]);
}

#[test]
fn a_reset_waits_for_the_vcpu_in_a_trap_then_reloads() {
    let mut s = spec("r", &[0, 1]);
    s.restart.copies = alloc::vec![Load {
        src: 0x9000_0000,
        dst: 0x8000_0000,
        len: 0x1000
    }];
    s.restart.zero = alloc::vec![Range::new(0x8000_1000, 0x8800_0000)];
    let rt = runtime(alloc::vec![s], 2, 0);
    let vm = both_running(&rt);
    rt.hw.take();
    let start = Barrier::new(2);
    let end = std::thread::scope(|sc| {
        let a = sc.spawn(|| {
            on_cpu(0);
            start.wait();
            rt.system_reset(vm, 0)
        });
        sc.spawn(|| {
            // vCPU 1 is in a trap of its own; at its end it sees the
            // domain stopping and leaves, once its pCPU was kicked (the
            // reset marks the domain stopping before it kicks: leaving
            // in between, as a loaded host once scheduled it, leaves no
            // vCPU to kick).
            on_cpu(1);
            start.wait();
            while !vm.stopping() || !kicks(&rt.hw.events.lock().unwrap()).contains(&1) {
                std::thread::yield_now();
            }
            rt.leave(vm, 1);
        });
        a.join().unwrap()
    });
    assert_eq!(end, ResetEnd::Restarted);
    let ev = rt.hw.take();
    assert!(kicks(&ev).contains(&1), "vCPU 1's pCPU kicked: {ev:?}");
    let copy = ev
        .iter()
        .position(|e| matches!(e, Ev::Copy { .. }))
        .unwrap();
    let zero = ev.iter().position(|e| matches!(e, Ev::Zero(_))).unwrap();
    assert!(zero < copy, "scrub, then the images: {ev:?}");
    assert_eq!(vm.life().state(), DomainState::Running);
    assert_eq!(vm.vcpus[0].power.state(), Power::Pending);
    assert_eq!(vm.vcpus[1].power.state(), Power::Off);
    // vCPU 0's pCPU enters it again, at the kernel entry.
    on_cpu(0);
    let (_, vi, (entry, dtb)) = rt.next_run().unwrap();
    assert_eq!((vi, entry, dtb), (0, RAM, RAM + 0x400_0000));
}

#[test]
fn a_second_reset_during_a_reset_parks() {
    let rt = runtime(alloc::vec![spec("r2", &[0, 1])], 2, 0);
    let vm = both_running(&rt);
    assert_eq!(
        vm.life().request_reset(),
        crate::vm::lifecycle::Request::Accepted
    );
    on_cpu(1);
    assert_eq!(rt.system_reset(vm, 1), ResetEnd::Park);
}

#[test]
fn console_focus_cycles_and_the_interrupt_follows_it() {
    capture_log();
    let rt = runtime(
        alloc::vec![spec("fa", &[0]), spec("fb", &[1])],
        2,
        CONSOLE_IRQ,
    );
    rt.hw.type_bytes(&[1, 1, 1, b'x']);
    rt.poll_console();
    assert_eq!(read(&rt, 0, 0, vpl011::BASE), Some(b'x' as u64));
    rt.hw.type_bytes(&[1, 1, 1]);
    rt.poll_console();
    rt.hw.type_bytes(&[1, 1, 1]);
    rt.poll_console();
    let routes: Vec<Ev> = rt
        .hw
        .take()
        .into_iter()
        .filter(|e| matches!(e, Ev::Route { .. }))
        .collect();
    assert_eq!(
        routes,
        [
            Ev::Route {
                id: CONSOLE_IRQ,
                pcpu: 0
            },
            Ev::Route {
                id: CONSOLE_IRQ,
                pcpu: 1
            }
        ]
    );
    let log = log_lines();
    let focus: Vec<&str> = log
        .iter()
        .filter(|l| l.starts_with("console input now goes to"))
        .map(|l| l.as_str())
        .collect();
    assert_eq!(focus.len(), 3, "{log:?}");
    assert!(focus[0].contains("to fa ") && focus[0].ends_with("pCPU 0 takes its interrupt"));
    assert!(focus[1].contains("to fb ") && focus[1].ends_with("pCPU 1 takes its interrupt"));
    assert!(focus[2].contains("to the hypervisor"));
}

#[test]
fn a_domain_powered_off_loses_the_focus() {
    capture_log();
    let rt = runtime(
        alloc::vec![spec("pa", &[0]), spec("pb", &[1])],
        2,
        CONSOLE_IRQ,
    );
    enter(&rt, 0);
    rt.hw.type_bytes(&[1, 1, 1]);
    rt.poll_console();
    rt.system_off(&rt.vms()[0], 0, "SYSTEM_OFF: domain powered off");
    assert_eq!(rt.vms()[0].life().state(), DomainState::Off);
    rt.hw.type_bytes(b"y");
    rt.poll_console();
    let log = log_lines();
    assert!(
        log.iter()
            .any(|l| l == "pa is powered off: what was typed for it is dropped"),
        "{log:?}"
    );
    assert!(log.last().unwrap().contains("now goes to pb"), "{log:?}");
    // The byte typed for the domain that went off went nowhere.
    assert_eq!(read(&rt, 1, 0, vpl011::BASE), Some(0));
}

#[test]
fn input_for_a_domain_that_does_not_read_is_dropped_and_counted() {
    capture_log();
    let rt = runtime(alloc::vec![spec("d", &[0])], 1, CONSOLE_IRQ);
    rt.hw.type_bytes(&[1, 1, 1]);
    rt.hw.type_bytes(&[b'z'; 1100]);
    rt.poll_console();
    // Ctrl-a still reaches the hypervisor, and the burst is reported.
    rt.hw.type_bytes(&[1, 1, 1]);
    rt.poll_console();
    let log = log_lines();
    assert!(
        log.iter()
            .any(|l| l.starts_with("d: takes no console input")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l == "d: 76 bytes of console input dropped (its receive FIFO was full)"),
        "{log:?}"
    );
    assert!(log.last().unwrap().contains("to the hypervisor"));
}

/// A CPU that finds the receive side held disables the interrupt; if the
/// holder lets go and enables it between that CPU's decision and its
/// write, the interrupt must still end enabled (it once stayed disabled
/// for good: console input died after a focus change moved the
/// interrupt to a CPU that took it while the old one still read).
#[test]
fn an_enable_between_a_disable_decision_and_its_write_is_not_lost() {
    let rt = runtime(alloc::vec![spec("h", &[0])], 2, CONSOLE_IRQ);
    let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
    *rt.hw.disable_gate.lock().unwrap() = Some(gate.clone());
    let held = crate::rt::Hw::try_rx(&rt.hw);
    std::thread::scope(|sc| {
        let b = sc.spawn(|| {
            on_cpu(1);
            rt.poll_console();
        });
        gate.wait(); // B is about to write the disable
        drop(held);
        rt.hw.type_bytes(b"x");
        rt.poll_console(); // the holder's successor reads and lets go
        gate.wait();
        b.join().unwrap();
    });
    let ev: Vec<Ev> = rt
        .hw
        .take()
        .into_iter()
        .filter(|e| matches!(e, Ev::SpiEnabled { .. }))
        .collect();
    assert_eq!(
        ev.last(),
        Some(&Ev::SpiEnabled {
            id: CONSOLE_IRQ,
            on: true
        }),
        "{ev:?}"
    );
}

#[test]
fn a_busy_receive_side_leaves_input_to_its_holder() {
    let rt = runtime(alloc::vec![spec("h", &[0])], 1, CONSOLE_IRQ);
    let held = crate::rt::Hw::try_rx(&rt.hw);
    rt.poll_console();
    drop(held);
    // The CPU that found it held disabled the interrupt; the holder (here:
    // the next poll) reads and enables it again.
    rt.poll_console();
    let ev = rt.hw.take();
    assert_eq!(
        ev,
        [
            Ev::SpiEnabled {
                id: CONSOLE_IRQ,
                on: false
            },
            Ev::SpiEnabled {
                id: CONSOLE_IRQ,
                on: true
            }
        ]
    );
}

#[test]
fn a_shared_page_fault_race_copies_once() {
    let module = Page::filled(0x5a);
    let own = Page::filled(0);
    let mut s = spec("s", &[0, 1]);
    s.restart.shared = alloc::vec![Shared {
        ipa: Range::new(RAM, RAM + PAGE),
        module: module.addr(),
        backing: own.addr(),
    }];
    let mut hw = Fake::new(2);
    hw.real_memory = true;
    let rt = runtime_on(hw, alloc::vec![s], 2, 0);
    let vm = &rt.vms()[0];
    let start = Barrier::new(2);
    let retried: Vec<bool> = std::thread::scope(|sc| {
        let t: Vec<_> = (0..2)
            .map(|c| {
                let (rt, start) = (&rt, &start);
                sc.spawn(move || {
                    on_cpu(c);
                    start.wait();
                    rt.shared_fault(vm, RAM + 0x10 + c as u64 * 8)
                })
            })
            .collect();
        t.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(retried, [true, true]);
    let ev = rt.hw.take();
    let copies = ev.iter().filter(|e| matches!(e, Ev::Copy { .. })).count();
    assert_eq!(copies, 1, "{ev:?}");
    assert!(ev.contains(&Ev::InvalidateIpa(RAM)));
    assert_eq!(vm.s2.lock().writable(RAM), Some(true));
    assert_eq!(vm.cow_pages.load(core::sync::atomic::Ordering::Relaxed), 1);
    assert!(own.bytes().iter().all(|&b| b == 0x5a));
    // Not a shared page: not retried.
    assert!(!rt.shared_fault(vm, RAM + PAGE));
}

#[test]
fn guest_lines_reach_the_console_with_the_domain_name() {
    let rt = runtime(alloc::vec![spec("o", &[0])], 1, 0);
    for b in b"hi\x1b[2J\n" {
        write(&rt, 0, 0, vpl011::BASE, *b as u64);
    }
    assert_eq!(rt.hw.output(), "(o) hi^[[2J\n");
}

#[test]
fn physical_interrupts_are_dispatched() {
    capture_log();
    let rt = runtime(alloc::vec![spec("i", &[0])], 1, 0);
    enter(&rt, 0);
    let vm = &rt.vms()[0];
    rt.hw.take();
    rt.hw.raise(0, crate::rt::hw::KICK);
    rt.hw.raise(0, 99);
    rt.hw.raise(0, crate::rt::hw::VTIMER);
    rt.irq(vm, 0);
    let ev = rt.hw.take();
    // A kick and a stray SPI are deactivated; the timer stays active
    // until the guest deactivates the virtual one.
    assert!(
        ev.contains(&Ev::Deactivate(0)) && ev.contains(&Ev::Deactivate(99)),
        "{ev:?}"
    );
    assert!(ev.contains(&Ev::Eoi(crate::rt::hw::VTIMER)), "{ev:?}");
    assert!(
        !ev.contains(&Ev::Deactivate(crate::rt::hw::VTIMER)),
        "{ev:?}"
    );
    assert!(log_lines()
        .iter()
        .any(|l| l.starts_with("i: stray physical interrupt 99")));
}

#[test]
fn emulated_devices_by_guest_address() {
    let rt = runtime(alloc::vec![spec("e", &[0, 1])], 2, 0);
    let vm = &rt.vms()[0];
    assert_eq!(vm.emulated_device(vpl011::BASE + 0x18), Some("vPL011"));
    assert_eq!(
        vm.emulated_device(v3::GICD_BASE + 4),
        Some("vGIC distributor")
    );
    assert_eq!(
        vm.emulated_device(v3::GICR_BASE + 0x2_0000),
        Some("vGIC redistributor")
    );
    assert_eq!(vm.emulated_device(RAM), None);
    // A refused access (a 1-byte read of a 32-bit register) is no value.
    let mut a = access(v3::GICD_BASE + 4, false);
    a.size = 1;
    assert_eq!(rt.mmio(vm, 0, &a, 0), None);
}

#[test]
fn direct_mapped_redistributors_cover_only_its_vcpus() {
    let mut s = spec("dm", &[0, 1]);
    s.map.gicr = 0x0800_0000;
    let v = vm(s);
    assert_eq!(
        v.emulated_device(0x0800_0000 + 0x3_ffff),
        Some("vGIC redistributor")
    );
    assert_eq!(v.emulated_device(0x0800_0000 + 0x4_0000), None);
}

#[test]
fn assigned_spis_are_linked_only_when_offered() {
    let mut s = spec("a", &[2]);
    s.devices = alloc::vec![Device {
        node: "/passthrough/dev".to_string(),
        host_path: None,
        regions: Vec::new(),
        irqs: alloc::vec![
            DeviceIrq {
                intid: 40,
                edge: false
            },
            DeviceIrq {
                intid: 1000,
                edge: true
            }
        ],
    }];
    let v = vm(s);
    let spis: Vec<u32> = v.hw_spis.iter().map(|(i, _)| *i).collect();
    assert_eq!(spis, [40]);
    assert_eq!(v.vcpus[0].pcpu, 2);
    assert_eq!(crate::rt::vmpidr_aff(17), 0x101);
    assert_eq!(crate::rt::vcpu_mpidr(1), 0x8000_0001);
}

/// One page of host memory the tests hand the run-time as "host RAM".
struct Page(std::boxed::Box<Aligned>);

#[repr(C, align(4096))]
struct Aligned([u8; PAGE as usize]);

impl Page {
    fn filled(b: u8) -> Page {
        Page(std::boxed::Box::new(Aligned([b; PAGE as usize])))
    }
    fn addr(&self) -> u64 {
        self.0 .0.as_ptr() as u64
    }
    fn bytes(&self) -> &[u8] {
        &self.0 .0[..]
    }
}

/// An SGI vCPU 0 sends itself, taken back from the list registers.
fn sgi_to_self(virq_by_hcr: bool) -> (Runtime<Fake>, Vec<Ev>) {
    let s = Settings {
        virq_by_hcr,
        ..settings(0)
    };
    let rt = runtime_with(Fake::new(1), alloc::vec![spec("v", &[0])], 1, s);
    enter(&rt, 0);
    enable_sgi(&rt, 0, 0, 3);
    rt.hw.take();
    let vm = &rt.vms()[0];
    rt.sgi(vm, 0, (3 << 24) | 1);
    rt.resume(vm, 0);
    let ev = rt.hw.take();
    (rt, ev)
}

fn npie(ev: &[Ev]) -> bool {
    ev.iter()
        .any(|e| matches!(e, Ev::Hcr { v, .. } if v & crate::rt::hw::ICH_HCR_NPIE != 0))
}

#[test]
fn without_a_wired_virtual_irq_hcr_vi_follows_the_pending_list_registers() {
    let (rt, ev) = sgi_to_self(true);
    assert_eq!(rt.hw.lr_intids(0), [3]);
    assert!(ev.contains(&Ev::Vi { pcpu: 0, on: true }), "{ev:?}");
    assert!(
        npie(&ev),
        "a maintenance interrupt once none is pending: {ev:?}"
    );
    // The guest takes it (active, no longer pending); the maintenance
    // interrupt drops VI and asks for no more.
    rt.hw.set_lr_state(0, 0, LrState::Active);
    rt.hw.raise(0, crate::rt::hw::MAINTENANCE);
    rt.irq(&rt.vms()[0], 0);
    let ev = rt.hw.take();
    assert!(ev.contains(&Ev::Vi { pcpu: 0, on: false }), "{ev:?}");
    assert!(!npie(&ev), "{ev:?}");
}

#[test]
fn with_a_wired_virtual_irq_hcr_vi_is_never_touched() {
    let (_rt, ev) = sgi_to_self(false);
    assert!(!ev.iter().any(|e| matches!(e, Ev::Vi { .. })), "{ev:?}");
    assert!(!npie(&ev), "{ev:?}");
}
