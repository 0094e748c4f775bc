//! No heap allocation on a trap path: everything the image calls while a
//! guest runs (vGIC register views, list-register fill and sync, the
//! timers' levels, hardware-linked deactivation, the vPL011, console
//! input, SMCCC decoding and the speculation answers) is driven here under
//! a counting allocator, after the domain was built, and must allocate
//! nothing. (An ICPENDR write on an assigned SPI used to allocate.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dtvisor::emul::console::Input;
use dtvisor::emul::vpl011::Vpl011;
use dtvisor::hw::cpufeat::IdRegs;
use dtvisor::hw::spectre::{self, Firmware};
use dtvisor::psci::Call;
use dtvisor::vgic::{v2, v3, GicVersion, Lr, LrState, Vgic};

struct Counting;

thread_local! {
    /// Allocations made by this thread while armed (None: not armed).
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Runs `f` and returns how many allocations this thread made in it.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(Some(0)));
    f();
    COUNT.with(|c| c.take()).unwrap_or(0)
}

fn access(off: u64, size: u8, write: Option<u64>) -> v3::Access {
    v3::Access { off, size, write }
}

/// Every 32-bit-aligned offset of the first 64 KiB of a frame, read and
/// written with all ones and zero, at 4 and 8 bytes.
fn every_register(mut op: impl FnMut(&v3::Access)) {
    for off in (0..0x1_0000u64).step_by(4) {
        for size in [4u8, 8] {
            op(&access(off, size, None));
            op(&access(off, size, Some(!0)));
            op(&access(off, size, Some(0)));
        }
    }
}

fn built(version: GicVersion) -> Vgic {
    let mut g = Vgic::new(version, &[0, 1], 64);
    assert!(g.link_spi(40, false));
    assert!(g.link_spi(41, true));
    g
}

fn lr_round(g: &mut Vgic, v: usize) {
    let mut out = [Lr::default(); 4];
    let fill = g.fill_lrs(v, &mut out);
    let states = [
        LrState::Pending,
        LrState::Active,
        LrState::Invalid,
        LrState::Invalid,
    ];
    g.sync_lrs(v, &states[..fill.used]);
    let _ = g.take_hw_deactivate(v);
    for _ in g.take_spi_deactivate() {}
}

#[test]
fn vgic_v3_trap_paths_do_not_allocate() {
    let mut g = built(GicVersion::V3);
    let n = allocations(|| {
        for v in 0..2 {
            g.inject_hw(v, 27, 27);
            g.inject_hw(v, 40, 40);
            g.set_hw_level(v, 27, true);
            every_register(|a| {
                let _ = v3::distributor(&mut g, v, a);
            });
            every_register(|a| {
                let _ = v3::redistributor(&mut g, v, a);
            });
            every_register(|a| {
                let _ = v3::redistributor(&mut g, v, &access(0x1_0000 + a.off, a.size, a.write));
            });
            g.set_hw_level(v, 27, false);
            let _ = g.send_sgi(v, 0b11, 1);
            let _ = g.set_line(v, 32, true);
            lr_round(&mut g, v);
        }
        // Clearing pending and active of the linked SPIs (ICPENDR,
        // ICACTIVER), the case that allocated.
        g.inject_hw(0, 40, 40);
        let _ = v3::distributor(&mut g, 0, &access(0x280 + 4, 4, Some(3 << 8)));
        let _ = v3::distributor(&mut g, 0, &access(0x380 + 4, 4, Some(3 << 8)));
        for _ in g.take_spi_deactivate() {}
    });
    assert_eq!(n, 0, "allocations on the vGICv3 trap paths");
}

#[test]
fn vgic_v2_trap_paths_do_not_allocate() {
    let mut g = built(GicVersion::V2);
    let n = allocations(|| {
        for v in 0..2 {
            g.inject_hw(v, 27, 27);
            every_register(|a| {
                let _ = v2::distributor(&mut g, v, a);
            });
            lr_round(&mut g, v);
        }
    });
    assert_eq!(n, 0, "allocations on the vGICv2 trap paths");
}

#[test]
fn console_uart_and_calls_do_not_allocate() {
    let mut u = Vpl011::new();
    let mut input = Input::new();
    let plan = spectre::plan(
        &IdRegs {
            midr: 0x410f_d083,
            ..IdRegs::default()
        },
        Firmware::default(),
    );
    let n = allocations(|| {
        for b in 0..=255u8 {
            let _ = u.push_rx(b);
            match input.byte(b, 2, |d| d == 1) {
                dtvisor::emul::console::Step::Deliver { .. } => {}
                _ => {
                    let _ = input.dropped(1);
                }
            }
            let _ = input.burst_over();
        }
        for off in (0..0x1000u64).step_by(4) {
            let _ = u.read(off);
            u.write(off, 0x41, &mut |_| {});
        }
        for fid in [
            0x8400_0000u32,
            0xc400_0003,
            0x8000_0001,
            0x8000_8000,
            0x8000_7fff,
            0x1234,
        ] {
            let call = Call::decode([fid as u64, 0x8000_8000, 0, 0]);
            let _ = plan.features(fid);
            let _ = plan.guest_call(fid);
            let _ = call;
        }
    });
    assert_eq!(
        n, 0,
        "allocations in the vPL011, console input or SMCCC handling"
    );
}
