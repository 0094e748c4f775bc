//! Console input: Ctrl-a three times moves the focus on (the hypervisor,
//! then each domain with a vPL011); other bytes go to the focused
//! domain's vPL011, whose receive interrupt then rises.

use super::hw::{ConsoleRx, Hw};
use super::Runtime;
use crate::emul::console::{DropReport, Input, Step};
use crate::vm::lifecycle::{After, DomainState};
use core::sync::atomic::{fence, Ordering};

impl<H: Hw> Runtime<H> {
    /// Reads console input and dispatches it (see the module).
    pub fn poll_console(&self) {
        if !self.published() {
            return;
        }
        // One CPU at a time reads and dispatches, so bytes keep their
        // order relative to focus changes. A CPU that finds another
        // reading must not wait for it, nor return with the UART's (level)
        // interrupt still asserted: it would take it again at once, in a
        // loop, for as long as the other holds the receive side (time
        // taken from its guest). So it disables the interrupt at the
        // distributor (a lock-free write) and leaves the input to the
        // holder, which reads again before it lets go and enables the
        // interrupt once the UART is empty. The write comes before the
        // flag that asks for the enable: flag first, a holder could see
        // it and enable between the flag and the write, and the late
        // disable would then stay for good (console input dead).
        let irq = self.settings.console_irq;
        let mut rx = match self.hw.try_rx() {
            Some(rx) => rx,
            None => {
                if irq != 0 {
                    self.hw.set_spi_enabled(irq, false);
                    self.irq_off.store(true, Ordering::SeqCst);
                }
                self.input_wanted.store(true, Ordering::SeqCst);
                // The holder may have let go before it saw the request
                // (the fences order each side's store before its load: a
                // store buffer must not hide the request or the release).
                fence(Ordering::SeqCst);
                match self.hw.try_rx() {
                    Some(rx) => rx,
                    None => return,
                }
            }
        };
        loop {
            self.input_wanted.store(false, Ordering::SeqCst);
            self.read_input(&rx);
            if self.irq_off.swap(false, Ordering::SeqCst) {
                self.hw.set_spi_enabled(irq, true);
            }
            drop(rx);
            fence(Ordering::SeqCst);
            if !self.input_wanted.load(Ordering::SeqCst) {
                return;
            }
            rx = match self.hw.try_rx() {
                Some(rx) => rx,
                None => return, // the new holder reads it
            };
        }
    }

    /// Whether domain `d` takes console input now: it has a vPL011 and
    /// is not (going) off.
    fn takes_input(&self, d: usize) -> bool {
        let vm = &self.vms[d];
        vm.vpl011.is_some()
            && !matches!(
                vm.life.state(),
                DomainState::Off | DomainState::Stopping { then: After::Off }
            )
    }

    /// Reads console input until the UART is empty. Every byte is read,
    /// whatever the focused domain does, so Ctrl-a three times always
    /// reaches the hypervisor: a byte the focused domain cannot take (its
    /// receive FIFO is full: it is not reading) is dropped, counted, and
    /// reported once per burst; a domain that is powered off loses the
    /// focus.
    fn read_input(&self, rx: &H::Rx<'_>) {
        // Only the holder of the receive side (`rx`) locks it: never
        // contended.
        let mut input = self.input.lock();
        while let Some(b) = rx.getc() {
            match input.byte(b, self.vms.len(), |d| self.takes_input(d)) {
                Step::Nothing => {}
                Step::Focus { to } => {
                    self.end_drop_burst(&mut input);
                    self.focus_moved(to, None);
                }
                Step::Lost { from, to } => {
                    self.end_drop_burst(&mut input);
                    self.focus_moved(to, Some(from));
                }
                Step::Hypervisor(b) => {
                    if b == b'\r' || b == b'\n' {
                        log::info!(
                            "input goes to the hypervisor; press Ctrl-a three times to switch"
                        );
                    }
                }
                Step::Deliver { dom, byte } => self.deliver(&mut input, dom, byte),
            }
        }
    }

    /// A typed byte for domain `dom`'s vPL011.
    fn deliver(&self, input: &mut Input, dom: usize, byte: u8) {
        let vm = &self.vms[dom];
        let Some(u) = vm.vpl011.as_ref() else {
            return;
        };
        let mut u = u.lock();
        if !u.push_rx(byte) {
            drop(u);
            if input.dropped(dom) == DropReport::Started {
                vm.log(format_args!("takes no console input (its receive FIFO is full: it is not reading); what is typed for it is dropped until it reads again"));
            }
            return;
        }
        let here = self
            .current()
            .filter(|(m, _)| core::ptr::eq(*m, vm))
            .map(|(_, v)| v);
        self.uart_line(vm, &u, here);
        drop(u);
        self.end_drop_burst(input);
    }

    /// The burst of dropped input bytes, if any, is over: say how many.
    fn end_drop_burst(&self, input: &mut Input) {
        if let Some((d, n)) = input.burst_over() {
            self.vms[d].log(format_args!(
                "{n} bytes of console input dropped (its receive FIFO was full)"
            ));
        }
    }

    /// The focus moved to `to` (None: the hypervisor), because Ctrl-a was
    /// pressed three times or because domain `lost` went off. The
    /// console's interrupt follows the focus to the pCPU of the domain's
    /// vCPU 0, so typing for one domain takes no time from another's
    /// pCPUs. (With the focus on the hypervisor it stays put.)
    fn focus_moved(&self, to: Option<usize>, lost: Option<usize>) {
        let irq = self.settings.console_irq;
        let (name, routed) = match to.map(|d| &self.vms[d]) {
            None => ("the hypervisor", None),
            Some(vm) => {
                let p = vm.vcpus[0].pcpu;
                if irq != 0 {
                    self.hw.route_spi(irq, p, self.mpidr_of(p));
                }
                (vm.name.as_str(), (irq != 0).then_some(p))
            }
        };
        if let Some(d) = lost {
            log::info!(
                "{} is powered off: what was typed for it is dropped",
                self.vms[d].name
            );
        }
        match routed {
            Some(p) => log::info!(
                "console input now goes to {name} (Ctrl-a three times to switch); pCPU {p} takes its interrupt"
            ),
            None => log::info!("console input now goes to {name} (Ctrl-a three times to switch)"),
        }
    }
}
