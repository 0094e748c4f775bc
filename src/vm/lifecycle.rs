//! A domain's life (loading, running, stopping, off, resetting) and the
//! stop protocol between the vCPU that asks for SYSTEM_OFF or
//! SYSTEM_RESET, the domain's other vCPUs, and the pCPUs that enter them.
//!
//! Every change is a compare-and-swap from a known state, so concurrent
//! requests cannot undo each other: exactly one vCPU initiates a stop, a
//! second reset never restarts the domain a second time, and a powered-off
//! domain stays off.
//!
//! # Domain states
//!
//! ```text
//!  Loading --loaded--> Running --request_off---> Stopping{Off} --finish_stop--> Off
//!                       ^   \                       ^
//!                       |    \--request_reset--> Stopping{Reset} --finish_stop--> Resetting
//!                       |                     (request_off: becomes Stopping{Off})   |
//!                       \------------------------restarted---------------------------/
//! ```
//!
//! * [`Request::Accepted`]: the caller is the *initiator*. It kicks the
//!   other vCPUs, calls [`poll_stopped`] until it returns true, then
//!   [`Lifecycle::finish_stop`]. `Some(After::Reset)`: it reloads the
//!   images, calls [`power_off_all`], [`Lifecycle::restarted`], and only
//!   then makes vCPU 0 pending. `Some(After::Off)`: it parks its vCPU
//!   (the domain ended off, possibly because a SYSTEM_OFF overtook its
//!   reset).
//! * [`Request::AlreadyStopping`]: another vCPU initiated a stop; the
//!   caller parks its vCPU ([`leave`]) and must not start the domain.
//! * [`Request::Refused`]: the domain is not running (loading, off, or
//!   being reloaded); nothing is changed and the caller parks.
//!
//! # OFF wins over RESET, in both orders
//!
//! Powering off is the stronger request. A SYSTEM_RESET that arrives while
//! an OFF is in progress is answered `AlreadyStopping` and changes nothing;
//! a SYSTEM_OFF that arrives while a RESET is in progress turns
//! `Stopping{Reset}` into `Stopping{Off}` (also answered `AlreadyStopping`:
//! the reset initiator is already waiting for the vCPUs and will see
//! `finish_stop` return `Some(After::Off)` instead of restarting). Once the
//! domain is `Off`, nothing restarts it.
//!
//! # vCPU power states during a stop
//!
//! The vCPU power states are those of [`Power`], reached
//! through the [`PowerCell`] trait (one cell per vCPU). While the domain
//! stops, the initiator's sweep ([`poll_stopped`]) moves every other vCPU
//! to `Stopped`:
//!
//! * `Pending` (CPU_ON accepted, never entered) → `Stopped` by CAS: the
//!   vCPU never runs. This closes the old hang where SYSTEM_RESET waited
//!   forever for a pending vCPU that no pCPU would enter any more.
//! * `Off` → `Stopped` by CAS: a CPU_ON racing with the stop is DENIED.
//! * `On` → still running: the initiator kicks it (the `on_running`
//!   callback) and polls again; the vCPU [`leave`]s at its next trap.
//! * `Stopped` → done.
//!
//! A pCPU enters a pending vCPU only through [`try_enter`]: CAS
//! `Pending → On`, *then* re-check the domain state; if the domain is
//! stopping it CASes `On → Stopped` and does not enter.
//!
//! ## Why no vCPU runs after `poll_stopped` returns true
//!
//! All operations below are sequentially consistent (`SeqCst`), so reason
//! over one interleaving. Let T0 be the initiator's successful CAS to
//! `Stopping`; every sweep starts after T0.
//!
//! 1. A pCPU's `try_enter` whose state re-check comes after T0 sees the
//!    domain stopping and does not enter. So every vCPU that runs guest
//!    code after T0 was already `On` at T0 (it passed the check before
//!    T0) and stays `On` until it leaves. A CAS `Pending → On` and the
//!    initiator's CAS `Pending → Stopped` are on the same cell: exactly
//!    one of them wins.
//! 2. A sweep that reads such a vCPU as `Stopped` (or `Off`) reads it
//!    after it left the guest; it never runs again before the restart (by
//!    1). So when a whole sweep saw every other vCPU `Stopped`, no vCPU
//!    runs guest code any more, and every CPU_ON those vCPUs made (in
//!    `psci::cpu_on`: CAS `Off → Stopped` as a claim, then a store of
//!    `Pending`) is complete.
//! 3. One sweep is not enough: it may read a vCPU B in the transient
//!    `Stopped` of a CPU_ON claim, and only afterwards read the caller A,
//!    which meanwhile stored `Pending` into B and stopped. Hence
//!    [`poll_stopped`] runs a second sweep after a clean first one; by 2 no
//!    new `Pending` can appear after the first sweep, so the second sweep
//!    cancels any such leftover and, when it is clean too, every vCPU is
//!    `Stopped` for good (only [`power_off_all`] changes them again).
//!
//! The sweeps need `SeqCst` (not just acquire/release) for point 1: it is
//! a store-buffering pattern (initiator: write the domain state, then CAS
//! the cell; pCPU: CAS the cell, then read the domain state). With weaker
//! orderings the pCPU could enter on a stale `Running`, and a vCPU could
//! then make a CPU_ON behind the first sweep's back. [`PowerCell`]
//! implementations must therefore use `SeqCst` for `state`, `set` and
//! `cas` (on AArch64: LDAR, STLR, CASAL/LDAXR-STLXR; an `Acquire` load
//! may compile to LDAPR, which is not enough), and so should every other
//! access to the same byte (`psci::cpu_on`'s claim, `VcpuPower::start`'s
//! `Pending` store).
//!
//! # Wiring
//!
//! `crate::rt` drives it: `Runtime::system_off` and `system_reset` are the
//! initiator's side, `Runtime::next_run` the entering pCPU's (the first
//! load, then [`try_enter`]), `Runtime::leave` a vCPU's at a trap.

/// Power state of one vCPU (PSCI's view; `crate::psci` acts on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Power {
    Off = 0,
    /// CPU_ON accepted; the owning pCPU has not entered it yet.
    Pending = 1,
    On = 2,
    /// The domain was stopped (SYSTEM_OFF) or is being reset.
    Stopped = 3,
}

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering::SeqCst};

/// What happens once every vCPU of a stopping domain has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// SYSTEM_OFF: the domain stays off.
    Off,
    /// SYSTEM_RESET: the initiator reloads the images and restarts it.
    Reset,
}

/// The life of one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Built, its images not loaded yet.
    Loading,
    /// Loaded; its vCPUs may run.
    Running,
    /// SYSTEM_OFF or SYSTEM_RESET accepted: its vCPUs park at their next
    /// trap, pending vCPUs are cancelled.
    Stopping { then: After },
    /// Powered off for good.
    Off,
    /// Every vCPU stopped; the reset initiator reloads the images.
    Resetting,
}

impl DomainState {
    /// A vCPU found running must park: a stop is in progress, the domain
    /// is off, or it is being reloaded. False for `Loading` and `Running`.
    pub const fn is_stopping(self) -> bool {
        matches!(
            self,
            DomainState::Stopping { .. } | DomainState::Off | DomainState::Resetting
        )
    }

    const fn encode(self) -> u8 {
        match self {
            DomainState::Loading => LOADING,
            DomainState::Running => RUNNING,
            DomainState::Stopping { then: After::Off } => STOPPING_OFF,
            DomainState::Stopping { then: After::Reset } => STOPPING_RESET,
            DomainState::Off => OFF,
            DomainState::Resetting => RESETTING,
        }
    }

    const fn decode(v: u8) -> DomainState {
        match v {
            LOADING => DomainState::Loading,
            RUNNING => DomainState::Running,
            STOPPING_OFF => DomainState::Stopping { then: After::Off },
            STOPPING_RESET => DomainState::Stopping { then: After::Reset },
            RESETTING => DomainState::Resetting,
            // OFF; nothing else is ever stored (the cell is private). Off
            // is also the safe reading: stopped, never restarted.
            _ => DomainState::Off,
        }
    }
}

const LOADING: u8 = 0;
const RUNNING: u8 = 1;
const STOPPING_OFF: u8 = 2;
const STOPPING_RESET: u8 = 3;
const OFF: u8 = 4;
const RESETTING: u8 = 5;

/// The answer to [`Lifecycle::request_off`] and [`Lifecycle::request_reset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// The caller initiated the stop: it kicks the other vCPUs, waits with
    /// [`poll_stopped`], then calls [`Lifecycle::finish_stop`].
    Accepted,
    /// A stop was already in progress (it may have been turned from a reset
    /// into an off by this request): the caller only parks its vCPU.
    AlreadyStopping,
    /// The domain is not running (`Loading`, `Off` or `Resetting`):
    /// nothing changed; the caller parks.
    Refused,
}

/// One domain's state, changed only by compare-and-swap.
pub struct Lifecycle(AtomicU8);

impl Lifecycle {
    /// A domain that is built but not loaded yet ([`DomainState::Loading`]).
    pub const fn new() -> Self {
        Lifecycle(AtomicU8::new(LOADING))
    }

    /// The current state.
    pub fn state(&self) -> DomainState {
        DomainState::decode(self.0.load(SeqCst))
    }

    /// Its vCPUs may run.
    pub fn is_running(&self) -> bool {
        self.state() == DomainState::Running
    }

    /// vCPUs park at their next trap ([`DomainState::is_stopping`]).
    pub fn stopping(&self) -> bool {
        self.state().is_stopping()
    }

    fn cas(&self, from: DomainState, to: DomainState) -> Result<(), DomainState> {
        self.0
            .compare_exchange(from.encode(), to.encode(), SeqCst, SeqCst)
            .map(|_| ())
            .map_err(DomainState::decode)
    }

    /// The first load is done: `Loading → Running`. False (and no change)
    /// in any other state. Call it before making vCPU 0 pending.
    pub fn loaded(&self) -> bool {
        self.cas(DomainState::Loading, DomainState::Running).is_ok()
    }

    /// SYSTEM_OFF. `Running → Stopping{Off}`: [`Request::Accepted`].
    /// `Stopping{Reset} → Stopping{Off}` (OFF wins) and `Stopping{Off}`:
    /// [`Request::AlreadyStopping`]. `Loading`, `Off`, `Resetting`:
    /// [`Request::Refused`].
    pub fn request_off(&self) -> Request {
        let mut now = self.state();
        loop {
            let (to, answer) = match now {
                DomainState::Running => (STOPPING_OFF_STATE, Request::Accepted),
                DomainState::Stopping { then: After::Reset } => {
                    (STOPPING_OFF_STATE, Request::AlreadyStopping)
                }
                DomainState::Stopping { then: After::Off } => return Request::AlreadyStopping,
                DomainState::Loading | DomainState::Off | DomainState::Resetting => {
                    return Request::Refused
                }
            };
            match self.cas(now, to) {
                Ok(()) => return answer,
                Err(seen) => now = seen,
            }
        }
    }

    /// SYSTEM_RESET. `Running → Stopping{Reset}`: [`Request::Accepted`].
    /// `Stopping{..}` (either kind; a reset never overrides an off):
    /// [`Request::AlreadyStopping`], no change. `Loading`, `Off`,
    /// `Resetting`: [`Request::Refused`].
    pub fn request_reset(&self) -> Request {
        match self.cas(DomainState::Running, STOPPING_RESET_STATE) {
            Ok(()) => Request::Accepted,
            Err(DomainState::Stopping { .. }) => Request::AlreadyStopping,
            Err(_) => Request::Refused,
        }
    }

    /// Called by the initiator once every vCPU has stopped
    /// ([`poll_stopped`] returned true): `Stopping{Off} → Off` gives
    /// `Some(After::Off)`; `Stopping{Reset} → Resetting` gives
    /// `Some(After::Reset)` (the caller reloads the images, then calls
    /// [`power_off_all`] and [`Lifecycle::restarted`]). `None`, and no
    /// change, when no stop is in progress.
    pub fn finish_stop(&self) -> Option<After> {
        let mut now = self.state();
        loop {
            let (to, after) = match now {
                DomainState::Stopping { then: After::Off } => (DomainState::Off, After::Off),
                DomainState::Stopping { then: After::Reset } => {
                    (DomainState::Resetting, After::Reset)
                }
                _ => return None,
            };
            match self.cas(now, to) {
                Ok(()) => return Some(after),
                // A SYSTEM_OFF turned the reset into an off meanwhile.
                Err(seen) => now = seen,
            }
        }
    }

    /// The images are reloaded: `Resetting → Running`. False (and no
    /// change) in any other state. Call it before making vCPU 0 pending.
    pub fn restarted(&self) -> bool {
        self.cas(DomainState::Resetting, DomainState::Running)
            .is_ok()
    }
}

const STOPPING_OFF_STATE: DomainState = DomainState::Stopping { then: After::Off };
const STOPPING_RESET_STATE: DomainState = DomainState::Stopping { then: After::Reset };

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lifecycle").field(&self.state()).finish()
    }
}

/// One vCPU's power state as the stop protocol needs it. All three
/// operations must be `SeqCst` (see the module documentation).
///
/// `psci::VcpuPower` is meant to implement it over its `state` byte:
///
/// ```ignore
/// impl PowerCell for VcpuPower {
///     fn state(&self) -> Power { decode(self.state.load(SeqCst)) }
///     fn set(&self, p: Power) { self.state.store(p as u8, SeqCst) }
///     fn cas(&self, from: Power, to: Power) -> Result<(), Power> {
///         self.state
///             .compare_exchange(from as u8, to as u8, SeqCst, SeqCst)
///             .map(|_| ())
///             .map_err(decode)
///     }
/// }
/// ```
pub trait PowerCell {
    fn state(&self) -> Power;
    /// Unconditional store; only for [`power_off_all`] and the vCPU's own
    /// cell.
    fn set(&self, p: Power);
    /// `from → to` if the cell holds `from`; otherwise the value it holds.
    fn cas(&self, from: Power, to: Power) -> Result<(), Power>;
}

/// What a pCPU does with its vCPU after [`try_enter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The vCPU is now `On`: enter it at the CPU_ON entry point and
    /// context (read them after this call; the CAS ordered them).
    Run,
    /// It was pending but the domain is stopping: it is now `Stopped`
    /// and must not be entered.
    Cancelled,
    /// Nothing to run: not pending, or the domain is (re)loading (the
    /// vCPU stays pending until [`Lifecycle::loaded`] or
    /// [`Lifecycle::restarted`]). Wait for an event and try again.
    Idle,
}

/// The only way a pCPU may enter a pending vCPU: CAS `Pending → On`, then
/// re-check the domain; stopping → `On → Stopped` ([`Entry::Cancelled`]),
/// loading or resetting → back to `Pending` ([`Entry::Idle`]).
pub fn try_enter(life: &Lifecycle, cell: &impl PowerCell) -> Entry {
    if cell.cas(Power::Pending, Power::On).is_err() {
        return Entry::Idle;
    }
    match life.state() {
        DomainState::Running => Entry::Run,
        DomainState::Loading | DomainState::Resetting => {
            // Made pending before `loaded`/`restarted`: wait for them.
            let _ = cell.cas(Power::On, Power::Pending);
            Entry::Idle
        }
        DomainState::Stopping { .. } | DomainState::Off => {
            // Only this pCPU writes an `On` cell it owns (sweeps leave
            // `On` alone, CPU_ON needs `Off`), so this cannot fail.
            let _ = cell.cas(Power::On, Power::Stopped);
            Entry::Cancelled
        }
    }
}

/// The vCPU `cell` (now `On`, running hypervisor code for its trap) leaves
/// its guest for good: `Stopped` if the domain is stopping, else `Off`
/// (CPU_OFF; CPU_ON may start it again). Returns the state it set.
pub fn leave(life: &Lifecycle, cell: &impl PowerCell) -> Power {
    let p = if life.stopping() {
        Power::Stopped
    } else {
        Power::Off
    };
    cell.set(p);
    p
}

/// Cancels a CPU_ON that no pCPU has acted on: `Pending → Stopped`. True
/// if this call cancelled it; a racing [`try_enter`] then finds nothing to
/// enter (exactly one of the two wins).
pub fn cancel_pending(cell: &impl PowerCell) -> bool {
    cell.cas(Power::Pending, Power::Stopped).is_ok()
}

/// One pass over the vCPUs other than `me`: `Pending`/`Off` → `Stopped`
/// by CAS, `On` reported to `on_running`. True if every one was (or was
/// made) `Stopped`. A lost CAS counts as not stopped yet.
fn sweep<'a, C: PowerCell + 'a>(
    cells: impl Iterator<Item = &'a C>,
    me: usize,
    on_running: &mut impl FnMut(usize),
) -> bool {
    let mut all = true;
    for (i, c) in cells.enumerate() {
        if i == me {
            continue;
        }
        match c.state() {
            Power::Stopped => {}
            Power::On => {
                all = false;
                on_running(i);
            }
            s @ (Power::Pending | Power::Off) => {
                if let Err(now) = c.cas(s, Power::Stopped) {
                    all = false;
                    if now == Power::On {
                        on_running(i);
                    }
                }
            }
        }
    }
    all
}

/// The initiator's wait, one non-blocking step (the image loops with its
/// own spin and warning policy): moves the vCPUs other than `me` towards
/// `Stopped` and calls `on_running(i)` for each vCPU `i` still `On` (kick
/// it: it may have been entered after the first kick). True once every
/// vCPU other than `me` is `Stopped` for good: two consecutive clean sweeps
/// (see the module documentation for why one is not enough). `me` out of
/// range means the caller is no vCPU of the domain.
///
/// `cells` are the domain's vCPUs in index order: a slice of cells
/// (`&vm.power`), or any cloneable iterator of them
/// (`vm.vcpus.iter().map(|v| &v.power)`).
pub fn poll_stopped_with<'a, C, I>(cells: I, me: usize, mut on_running: impl FnMut(usize)) -> bool
where
    C: PowerCell + 'a,
    I: IntoIterator<Item = &'a C>,
    I::IntoIter: Clone,
{
    let cells = cells.into_iter();
    sweep(cells.clone(), me, &mut on_running) && sweep(cells, me, &mut on_running)
}

/// [`poll_stopped_with`] without a kick callback.
pub fn poll_stopped<'a, C, I>(cells: I, me: usize) -> bool
where
    C: PowerCell + 'a,
    I: IntoIterator<Item = &'a C>,
    I::IntoIter: Clone,
{
    poll_stopped_with(cells, me, |_| {})
}

/// Before a restart (after [`Lifecycle::finish_stop`] gave
/// `Some(After::Reset)`, before [`Lifecycle::restarted`]): every vCPU
/// `Off`, ready for the fresh boot's CPU_ONs.
pub fn power_off_all<'a, C: PowerCell + 'a>(cells: impl IntoIterator<Item = &'a C>) {
    for c in cells {
        c.set(Power::Off);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::{Arc, Barrier, Mutex};
    use std::time::{Duration, Instant};

    type Hook = Box<dyn FnOnce() + Send>;

    /// Test double for `psci::VcpuPower`'s state byte, with an optional
    /// hook run (once) on the next `state()` read, to force interleavings.
    struct Cell {
        v: AtomicU8,
        hook: Mutex<Option<Hook>>,
    }

    fn decode(v: u8) -> Power {
        match v {
            0 => Power::Off,
            1 => Power::Pending,
            2 => Power::On,
            _ => Power::Stopped,
        }
    }

    impl Cell {
        fn new(p: Power) -> Cell {
            Cell {
                v: AtomicU8::new(p as u8),
                hook: Mutex::new(None),
            }
        }
    }

    impl PowerCell for Cell {
        fn state(&self) -> Power {
            let hook = self.hook.lock().unwrap().take();
            if let Some(h) = hook {
                h();
            }
            decode(self.v.load(SeqCst))
        }
        fn set(&self, p: Power) {
            self.v.store(p as u8, SeqCst)
        }
        fn cas(&self, from: Power, to: Power) -> Result<(), Power> {
            self.v
                .compare_exchange(from as u8, to as u8, SeqCst, SeqCst)
                .map(|_| ())
                .map_err(decode)
        }
    }

    fn cells(ps: &[Power]) -> Vec<Cell> {
        ps.iter().map(|&p| Cell::new(p)).collect()
    }

    fn powers(cs: &[Cell]) -> Vec<Power> {
        cs.iter().map(|c| decode(c.v.load(SeqCst))).collect()
    }

    /// `psci::cpu_on`'s power-state steps: claim `Off → Stopped`, then
    /// store `Pending`. Some(true) success, Some(false) DENIED etc.
    fn cpu_on(c: &Cell) -> bool {
        if c.cas(Power::Off, Power::Stopped).is_err() {
            return false;
        }
        c.set(Power::Pending);
        true
    }

    fn running() -> Lifecycle {
        let l = Lifecycle::new();
        assert!(l.loaded());
        l
    }

    fn stopping(then: After) -> DomainState {
        DomainState::Stopping { then }
    }

    /// A lifecycle in each state, built through legal transitions only.
    fn in_state(s: DomainState) -> Lifecycle {
        let l = Lifecycle::new();
        match s {
            DomainState::Loading => {}
            DomainState::Running => assert!(l.loaded()),
            DomainState::Stopping { then: After::Off } => {
                assert!(l.loaded());
                assert_eq!(l.request_off(), Request::Accepted);
            }
            DomainState::Stopping { then: After::Reset } => {
                assert!(l.loaded());
                assert_eq!(l.request_reset(), Request::Accepted);
            }
            DomainState::Off => {
                assert!(l.loaded());
                assert_eq!(l.request_off(), Request::Accepted);
                assert_eq!(l.finish_stop(), Some(After::Off));
            }
            DomainState::Resetting => {
                assert!(l.loaded());
                assert_eq!(l.request_reset(), Request::Accepted);
                assert_eq!(l.finish_stop(), Some(After::Reset));
            }
        }
        assert_eq!(l.state(), s);
        l
    }

    const ALL: [DomainState; 6] = [
        DomainState::Loading,
        DomainState::Running,
        DomainState::Stopping { then: After::Off },
        DomainState::Stopping { then: After::Reset },
        DomainState::Off,
        DomainState::Resetting,
    ];

    // ---- domain state machine, one transition per test ----

    #[test]
    fn new_is_loading() {
        let l = Lifecycle::new();
        assert_eq!(l.state(), DomainState::Loading);
        assert!(!l.is_running());
        assert!(!l.stopping());
        assert_eq!(Lifecycle::default().state(), DomainState::Loading);
        assert_eq!(format!("{l:?}"), "Lifecycle(Loading)");
    }

    #[test]
    fn encoding_round_trips() {
        for s in ALL {
            assert_eq!(DomainState::decode(s.encode()), s);
        }
    }

    #[test]
    fn loaded_from_loading_runs() {
        let l = Lifecycle::new();
        assert!(l.loaded());
        assert_eq!(l.state(), DomainState::Running);
        assert!(l.is_running());
        assert!(!l.stopping());
    }

    #[test]
    fn loaded_refused_outside_loading() {
        for s in ALL.into_iter().filter(|&s| s != DomainState::Loading) {
            let l = in_state(s);
            assert!(!l.loaded(), "{s:?}");
            assert_eq!(l.state(), s);
        }
    }

    #[test]
    fn off_from_running_accepted() {
        let l = running();
        assert_eq!(l.request_off(), Request::Accepted);
        assert_eq!(l.state(), stopping(After::Off));
        assert!(l.stopping());
        assert!(!l.is_running());
    }

    #[test]
    fn reset_from_running_accepted() {
        let l = running();
        assert_eq!(l.request_reset(), Request::Accepted);
        assert_eq!(l.state(), stopping(After::Reset));
        assert!(l.stopping());
        assert!(!l.is_running());
    }

    #[test]
    fn second_reset_already_stopping() {
        let l = in_state(stopping(After::Reset));
        assert_eq!(l.request_reset(), Request::AlreadyStopping);
        assert_eq!(l.state(), stopping(After::Reset));
    }

    #[test]
    fn second_off_already_stopping() {
        let l = in_state(stopping(After::Off));
        assert_eq!(l.request_off(), Request::AlreadyStopping);
        assert_eq!(l.state(), stopping(After::Off));
    }

    #[test]
    fn reset_during_off_changes_nothing() {
        let l = in_state(stopping(After::Off));
        assert_eq!(l.request_reset(), Request::AlreadyStopping);
        assert_eq!(l.state(), stopping(After::Off));
    }

    #[test]
    fn off_during_reset_becomes_off() {
        let l = in_state(stopping(After::Reset));
        assert_eq!(l.request_off(), Request::AlreadyStopping);
        assert_eq!(l.state(), stopping(After::Off));
    }

    #[test]
    fn requests_refused_when_not_running() {
        for s in [
            DomainState::Loading,
            DomainState::Off,
            DomainState::Resetting,
        ] {
            let l = in_state(s);
            assert_eq!(l.request_off(), Request::Refused, "{s:?}");
            assert_eq!(l.request_reset(), Request::Refused, "{s:?}");
            assert_eq!(l.state(), s);
        }
    }

    #[test]
    fn finish_stop_off() {
        let l = in_state(stopping(After::Off));
        assert_eq!(l.finish_stop(), Some(After::Off));
        assert_eq!(l.state(), DomainState::Off);
        assert!(l.stopping());
    }

    #[test]
    fn finish_stop_reset() {
        let l = in_state(stopping(After::Reset));
        assert_eq!(l.finish_stop(), Some(After::Reset));
        assert_eq!(l.state(), DomainState::Resetting);
        assert!(l.stopping());
    }

    #[test]
    fn finish_stop_without_stop_is_none() {
        for s in [
            DomainState::Loading,
            DomainState::Running,
            DomainState::Off,
            DomainState::Resetting,
        ] {
            let l = in_state(s);
            assert_eq!(l.finish_stop(), None, "{s:?}");
            assert_eq!(l.state(), s);
        }
    }

    #[test]
    fn restarted_from_resetting_runs() {
        let l = in_state(DomainState::Resetting);
        assert!(l.restarted());
        assert_eq!(l.state(), DomainState::Running);
        // And the domain can be reset again.
        assert_eq!(l.request_reset(), Request::Accepted);
    }

    #[test]
    fn restarted_refused_outside_resetting() {
        for s in ALL.into_iter().filter(|&s| s != DomainState::Resetting) {
            let l = in_state(s);
            assert!(!l.restarted(), "{s:?}");
            assert_eq!(l.state(), s);
        }
    }

    #[test]
    fn off_is_final() {
        let l = in_state(DomainState::Off);
        assert!(!l.loaded());
        assert_eq!(l.request_reset(), Request::Refused);
        assert_eq!(l.request_off(), Request::Refused);
        assert_eq!(l.finish_stop(), None);
        assert!(!l.restarted());
        assert_eq!(l.state(), DomainState::Off);
    }

    #[test]
    fn stopping_predicate() {
        for s in ALL {
            let want = !matches!(s, DomainState::Loading | DomainState::Running);
            assert_eq!(s.is_stopping(), want, "{s:?}");
            assert_eq!(in_state(s).stopping(), want, "{s:?}");
        }
    }

    #[test]
    fn off_then_reset_stays_off() {
        let l = running();
        assert_eq!(l.request_off(), Request::Accepted);
        assert_eq!(l.request_reset(), Request::AlreadyStopping);
        assert_eq!(l.finish_stop(), Some(After::Off));
        assert!(!l.restarted());
        assert_eq!(l.request_reset(), Request::Refused);
        assert_eq!(l.state(), DomainState::Off);
    }

    #[test]
    fn reset_then_off_ends_off() {
        let l = running();
        assert_eq!(l.request_reset(), Request::Accepted);
        assert_eq!(l.request_off(), Request::AlreadyStopping);
        // The reset initiator learns the domain ends off, not restarted.
        assert_eq!(l.finish_stop(), Some(After::Off));
        assert!(!l.restarted());
        assert_eq!(l.state(), DomainState::Off);
    }

    #[test]
    fn reset_cycles_repeat() {
        let l = running();
        for _ in 0..3 {
            assert_eq!(l.request_reset(), Request::Accepted);
            assert_eq!(l.finish_stop(), Some(After::Reset));
            assert!(l.restarted());
        }
        assert_eq!(l.state(), DomainState::Running);
    }

    // ---- vCPU side ----

    #[test]
    fn try_enter_running_pending_runs() {
        let l = running();
        let c = Cell::new(Power::Pending);
        assert_eq!(try_enter(&l, &c), Entry::Run);
        assert_eq!(c.state(), Power::On);
    }

    #[test]
    fn try_enter_not_pending_is_idle() {
        let l = running();
        for p in [Power::Off, Power::On, Power::Stopped] {
            let c = Cell::new(p);
            assert_eq!(try_enter(&l, &c), Entry::Idle, "{p:?}");
            assert_eq!(c.state(), p);
        }
    }

    #[test]
    fn try_enter_stopping_domain_cancels() {
        for s in [
            stopping(After::Off),
            stopping(After::Reset),
            DomainState::Off,
            DomainState::Resetting,
        ] {
            let l = in_state(s);
            let c = Cell::new(Power::Pending);
            let e = try_enter(&l, &c);
            if s == DomainState::Resetting {
                // Reloading: the vCPU stays pending for the restart.
                assert_eq!(e, Entry::Idle);
                assert_eq!(c.state(), Power::Pending);
            } else {
                assert_eq!(e, Entry::Cancelled, "{s:?}");
                assert_eq!(c.state(), Power::Stopped);
            }
        }
    }

    #[test]
    fn try_enter_loading_waits_pending() {
        let l = Lifecycle::new();
        let c = Cell::new(Power::Pending);
        assert_eq!(try_enter(&l, &c), Entry::Idle);
        assert_eq!(c.state(), Power::Pending);
        assert!(l.loaded());
        assert_eq!(try_enter(&l, &c), Entry::Run);
    }

    #[test]
    fn leave_running_is_off() {
        let l = running();
        let c = Cell::new(Power::On);
        assert_eq!(leave(&l, &c), Power::Off);
        assert_eq!(c.state(), Power::Off);
    }

    #[test]
    fn leave_stopping_is_stopped() {
        for s in [stopping(After::Off), stopping(After::Reset)] {
            let l = in_state(s);
            let c = Cell::new(Power::On);
            assert_eq!(leave(&l, &c), Power::Stopped);
            assert_eq!(c.state(), Power::Stopped);
        }
    }

    #[test]
    fn cancel_pending_only_cancels_pending() {
        let c = Cell::new(Power::Pending);
        assert!(cancel_pending(&c));
        assert_eq!(c.state(), Power::Stopped);
        assert!(!cancel_pending(&c));
        for p in [Power::Off, Power::On, Power::Stopped] {
            let c = Cell::new(p);
            assert!(!cancel_pending(&c), "{p:?}");
            assert_eq!(c.state(), p);
        }
    }

    #[test]
    fn poll_stops_off_and_pending_skips_me() {
        let cs = cells(&[Power::On, Power::Off, Power::Pending, Power::Stopped]);
        assert!(poll_stopped(&cs, 0));
        assert_eq!(
            powers(&cs),
            [Power::On, Power::Stopped, Power::Stopped, Power::Stopped]
        );
    }

    #[test]
    fn poll_waits_for_on_and_reports_it() {
        let l = in_state(stopping(After::Reset));
        let cs = cells(&[Power::On, Power::Stopped, Power::On, Power::Off]);
        let mut kicked = Vec::new();
        assert!(!poll_stopped_with(&cs, 0, |i| kicked.push(i)));
        assert_eq!(kicked, [2]);
        assert_eq!(powers(&cs)[3], Power::Stopped);
        assert_eq!(leave(&l, &cs[2]), Power::Stopped);
        assert!(poll_stopped(&cs, 0));
    }

    #[test]
    fn poll_me_out_of_range_checks_all() {
        let cs = cells(&[Power::On, Power::Off]);
        assert!(!poll_stopped(&cs, usize::MAX));
        cs[0].set(Power::Stopped);
        assert!(poll_stopped(&cs, usize::MAX));
        assert!(poll_stopped(&[] as &[Cell], 0));
    }

    /// The image may keep each cell inside a bigger per-vCPU struct.
    #[test]
    fn poll_over_mapped_cells() {
        struct Vcpu {
            _pcpu: usize,
            power: Cell,
        }
        let vs: Vec<Vcpu> = [Power::On, Power::Pending, Power::Off]
            .into_iter()
            .enumerate()
            .map(|(i, p)| Vcpu {
                _pcpu: i,
                power: Cell::new(p),
            })
            .collect();
        assert!(poll_stopped(vs.iter().map(|v| &v.power), 0));
        power_off_all(vs.iter().map(|v| &v.power));
        assert!(vs.iter().all(|v| v.power.state() == Power::Off));
    }

    #[test]
    fn power_off_all_before_restart() {
        let cs = cells(&[Power::On, Power::Stopped, Power::Stopped]);
        power_off_all(&cs);
        assert_eq!(powers(&cs), [Power::Off; 3]);
    }

    /// The review's hang: CPU_ON then SYSTEM_RESET at once. The pending
    /// vCPU is cancelled, never run, and the reset completes.
    #[test]
    fn reset_with_pending_vcpu_completes_without_running_it() {
        let l = running();
        let cs = cells(&[Power::On, Power::Off]);
        assert!(cpu_on(&cs[1]));
        assert_eq!(l.request_reset(), Request::Accepted);
        assert!(poll_stopped(&cs, 0));
        assert_eq!(cs[1].state(), Power::Stopped);
        // The pCPU of vCPU 1 comes around too late: nothing to enter.
        assert_eq!(try_enter(&l, &cs[1]), Entry::Idle);
        assert_eq!(l.finish_stop(), Some(After::Reset));
        power_off_all(&cs);
        assert!(l.restarted());
        assert_eq!(cs[1].state(), Power::Off);
    }

    /// The pCPU's CAS wins first: it sees the stop and does not enter.
    #[test]
    fn pending_taken_during_stop_is_cancelled_by_pcpu() {
        let l = running();
        let cs = cells(&[Power::On, Power::Pending]);
        assert_eq!(l.request_reset(), Request::Accepted);
        assert_eq!(try_enter(&l, &cs[1]), Entry::Cancelled);
        assert!(poll_stopped(&cs, 0));
    }

    /// A CPU_ON after the sweep claimed the target is denied.
    #[test]
    fn cpu_on_after_sweep_is_denied() {
        let l = running();
        let cs = cells(&[Power::On, Power::On, Power::Off]);
        assert_eq!(l.request_off(), Request::Accepted);
        assert!(!poll_stopped(&cs, 0));
        assert!(!cpu_on(&cs[2]), "vCPU 1, still running, CPU_ONs vCPU 2");
        leave(&l, &cs[1]);
        assert!(poll_stopped(&cs, 0));
        assert_eq!(l.finish_stop(), Some(After::Off));
    }

    /// Why two sweeps: the first reads vCPU 1 in CPU_ON's transient
    /// `Stopped` claim, then reads vCPU 2 (the caller), which meanwhile
    /// stored `Pending` into vCPU 1 and stopped. One sweep would report
    /// all stopped with vCPU 1 left pending, to be entered later.
    #[test]
    fn cpu_on_claim_behind_first_sweep_is_caught() {
        let setup = || {
            let l = Arc::new(running());
            let cs = Arc::new(cells(&[Power::On, Power::Off, Power::On]));
            // vCPU 2 claims vCPU 1 (first half of CPU_ON) before the stop.
            assert_eq!(cs[1].cas(Power::Off, Power::Stopped), Ok(()));
            assert_eq!(l.request_reset(), Request::Accepted);
            let (l2, cs2) = (l.clone(), cs.clone());
            // Runs when the sweep reads vCPU 2, after it read vCPU 1.
            *cs[2].hook.lock().unwrap() = Some(Box::new(move || {
                cs2[1].set(Power::Pending); // second half of CPU_ON
                leave(&l2, &cs2[2]); // vCPU 2 traps and parks
            }));
            (l, cs)
        };
        // One sweep alone is fooled.
        let (_, cs) = setup();
        assert!(sweep(cs.iter(), 0, &mut |_| {}));
        assert_eq!(cs[1].state(), Power::Pending);
        // poll_stopped's second sweep cancels the leftover.
        let (l, cs) = setup();
        assert!(poll_stopped(&cs[..], 0));
        assert_eq!(powers(&cs)[1..], [Power::Stopped, Power::Stopped]);
        assert_eq!(try_enter(&l, &cs[1]), Entry::Idle);
    }

    // ---- real concurrency ----

    const THREADS: usize = 8;
    const ROUNDS: usize = 1000;

    // The barrier loops below never panic inside the loop (a panicking
    // thread would leave the others waiting on the barrier forever):
    // they record what happened and assert after the threads are joined.

    /// 8 vCPUs call SYSTEM_RESET at the same time, 1000 rounds on one
    /// domain (restarted between rounds): one initiator per round.
    #[test]
    fn concurrent_resets_one_winner() {
        let l = running();
        let accepted: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
        let already = AtomicUsize::new(0);
        let refused = AtomicUsize::new(0);
        let mut bad_restarts = 0;
        let start = Barrier::new(THREADS + 1);
        let end = Barrier::new(THREADS + 1);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for a in &accepted {
                        start.wait();
                        match l.request_reset() {
                            Request::Accepted => a.fetch_add(1, SeqCst),
                            Request::AlreadyStopping => already.fetch_add(1, SeqCst),
                            Request::Refused => refused.fetch_add(1, SeqCst),
                        };
                        end.wait();
                    }
                });
            }
            for _ in 0..ROUNDS {
                start.wait();
                end.wait();
                // The initiator's side: every vCPU stopped, reload, restart.
                if !(l.finish_stop() == Some(After::Reset) && l.restarted()) {
                    bad_restarts += 1;
                }
            }
        });
        for (round, a) in accepted.iter().enumerate() {
            assert_eq!(a.load(SeqCst), 1, "round {round}");
        }
        assert_eq!(already.load(SeqCst), ROUNDS * (THREADS - 1));
        assert_eq!(refused.load(SeqCst), 0);
        assert_eq!(bad_restarts, 0);
        assert_eq!(l.state(), DomainState::Running);
    }

    /// 8 vCPUs, half SYSTEM_OFF and half SYSTEM_RESET, at the same time,
    /// 1000 rounds (a fresh domain each): one initiator, and the domain
    /// always ends off (OFF wins in both orders), never restarted.
    #[test]
    fn concurrent_off_and_reset_off_wins() {
        let lives: Vec<Lifecycle> = (0..ROUNDS).map(|_| running()).collect();
        let accepted: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
        let accepted_off = AtomicUsize::new(0);
        let refused = AtomicUsize::new(0);
        let start = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (lives, accepted, start) = (&lives, &accepted, &start);
                let (accepted_off, refused) = (&accepted_off, &refused);
                s.spawn(move || {
                    for (l, a) in lives.iter().zip(accepted) {
                        start.wait();
                        let off = t.is_multiple_of(2);
                        let r = if off {
                            l.request_off()
                        } else {
                            l.request_reset()
                        };
                        match r {
                            Request::Accepted => {
                                a.fetch_add(1, SeqCst);
                                if off {
                                    accepted_off.fetch_add(1, SeqCst);
                                }
                            }
                            Request::AlreadyStopping => {}
                            Request::Refused => {
                                refused.fetch_add(1, SeqCst);
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(refused.load(SeqCst), 0);
        for (round, (l, a)) in lives.iter().zip(&accepted).enumerate() {
            assert_eq!(a.load(SeqCst), 1, "round {round}");
            assert_eq!(l.state(), stopping(After::Off), "round {round}");
            assert_eq!(l.finish_stop(), Some(After::Off));
            assert!(!l.restarted());
            assert_eq!(l.state(), DomainState::Off);
        }
        // How often each order happened (up to the scheduler; reported).
        let off_first = accepted_off.load(SeqCst);
        eprintln!(
            "initiator was an OFF in {off_first} rounds, a RESET (overtaken by an OFF) in {}",
            ROUNDS - off_first
        );
    }

    /// A pCPU's CAS `Pending → On` against the initiator's cancel, 20000
    /// rounds (a fresh pending cell each): exactly one wins every round.
    #[test]
    fn take_pending_vs_cancel_exactly_one_wins() {
        let rounds = 20 * ROUNDS;
        let cs: Vec<Cell> = (0..rounds).map(|_| Cell::new(Power::Pending)).collect();
        let took: Vec<AtomicBool> = (0..rounds).map(|_| AtomicBool::new(false)).collect();
        let cancelled: Vec<AtomicBool> = (0..rounds).map(|_| AtomicBool::new(false)).collect();
        let start = Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                for (c, t) in cs.iter().zip(&took) {
                    start.wait();
                    t.store(c.cas(Power::Pending, Power::On).is_ok(), SeqCst);
                }
            });
            s.spawn(|| {
                for (c, k) in cs.iter().zip(&cancelled) {
                    start.wait();
                    k.store(cancel_pending(c), SeqCst);
                }
            });
        });
        let mut n_took = 0;
        for (round, c) in cs.iter().enumerate() {
            let (t, k) = (took[round].load(SeqCst), cancelled[round].load(SeqCst));
            assert!(t != k, "round {round}: took {t}, cancelled {k}");
            assert_eq!(c.state(), if t { Power::On } else { Power::Stopped });
            n_took += t as usize;
        }
        eprintln!(
            "pCPU took {n_took} / initiator cancelled {}",
            rounds - n_took
        );
    }

    /// Sets the flag when dropped, also when the thread panics, so the
    /// threads waiting for it end and the failure is reported.
    struct SetOnDrop<'a>(&'a AtomicBool);

    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }

    /// A pCPU entering a pending vCPU (`try_enter`) races with a reset:
    /// whenever `poll_stopped` reports all stopped, that vCPU is not in
    /// its guest and never enters it afterwards.
    #[test]
    fn try_enter_vs_reset_never_runs_after_poll() {
        for _ in 0..ROUNDS {
            let l = running();
            let cs = cells(&[Power::On, Power::Pending]);
            let in_guest = AtomicBool::new(false);
            let sealed = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| loop {
                    match try_enter(&l, &cs[1]) {
                        Entry::Run => {
                            in_guest.store(true, SeqCst);
                            assert!(!sealed.load(SeqCst), "entered after the stop");
                            while !l.stopping() {
                                std::thread::yield_now();
                            }
                            in_guest.store(false, SeqCst);
                            assert_eq!(leave(&l, &cs[1]), Power::Stopped);
                            break;
                        }
                        Entry::Cancelled => break,
                        Entry::Idle if sealed.load(SeqCst) => break,
                        Entry::Idle => std::hint::spin_loop(),
                    }
                });
                s.spawn(|| {
                    let seal = SetOnDrop(&sealed);
                    assert_eq!(l.request_reset(), Request::Accepted);
                    wait_stopped(&cs, 0);
                    drop(seal);
                    assert!(!in_guest.load(SeqCst));
                });
            });
            assert_eq!(powers(&cs)[1], Power::Stopped);
            assert_eq!(l.finish_stop(), Some(After::Reset));
        }
    }

    /// The initiator's loop, with a deadline instead of a hang.
    fn wait_stopped(cs: &[Cell], me: usize) {
        let t0 = Instant::now();
        while !poll_stopped(cs, me) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "reset hangs: {:?}",
                powers(cs)
            );
            std::thread::yield_now();
        }
    }

    /// The review's scenario with real threads: vCPU 0 CPU_ONs vCPU 2
    /// while vCPU 1 calls SYSTEM_RESET, and vCPU 2's pCPU tries to enter
    /// it. The reset always completes, vCPU 2 is never in its guest after
    /// the wait, every vCPU stays stopped until the restart, and the
    /// restart brings the domain back to Running.
    #[test]
    fn cpu_on_and_reset_at_once_completes() {
        let mut outcomes = [0usize; 3]; // denied, cancelled, ran
        for _ in 0..ROUNDS {
            let l = running();
            let cs = cells(&[Power::On, Power::On, Power::Off]);
            let in_guest = AtomicBool::new(false);
            let sealed = AtomicBool::new(false);
            let ran = AtomicBool::new(false);
            let on_ok = AtomicBool::new(false);
            std::thread::scope(|s| {
                // vCPU 0: CPU_ON(2), then runs until its next trap.
                s.spawn(|| {
                    on_ok.store(cpu_on(&cs[2]), SeqCst);
                    while !l.stopping() {
                        std::thread::yield_now();
                    }
                    assert_eq!(leave(&l, &cs[0]), Power::Stopped);
                });
                // pCPU of vCPU 2.
                s.spawn(|| loop {
                    match try_enter(&l, &cs[2]) {
                        Entry::Run => {
                            in_guest.store(true, SeqCst);
                            ran.store(true, SeqCst);
                            assert!(!sealed.load(SeqCst), "entered after the stop");
                            while !l.stopping() {
                                std::thread::yield_now();
                            }
                            in_guest.store(false, SeqCst);
                            assert_eq!(leave(&l, &cs[2]), Power::Stopped);
                            break;
                        }
                        Entry::Cancelled => break,
                        Entry::Idle if sealed.load(SeqCst) => break,
                        Entry::Idle => std::hint::spin_loop(),
                    }
                });
                // vCPU 1: SYSTEM_RESET.
                s.spawn(|| {
                    let seal = SetOnDrop(&sealed);
                    assert_eq!(l.request_reset(), Request::Accepted);
                    wait_stopped(&cs, 1);
                    drop(seal);
                    assert!(!in_guest.load(SeqCst));
                });
            });
            // Nothing moved after the wait (the pCPU thread has finished).
            assert_eq!(powers(&cs), [Power::Stopped, Power::On, Power::Stopped]);
            let i = if !on_ok.load(SeqCst) {
                0
            } else if ran.load(SeqCst) {
                2
            } else {
                1
            };
            outcomes[i] += 1;
            assert_eq!(l.finish_stop(), Some(After::Reset));
            power_off_all(&cs);
            assert!(l.restarted());
            assert_eq!(l.state(), DomainState::Running);
        }
        eprintln!("CPU_ON denied / cancelled / ran before the stop: {outcomes:?}");
    }
}
