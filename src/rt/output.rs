//! Guests' console output: each domain queues whole lines in its own
//! buffer and goes back to its guest; whichever CPU holds the console
//! writes them, a line of each domain in turn.

use super::domain::Vm;
use super::hw::{ConsoleOut, Hw};
use super::Runtime;
use crate::emul::console::Printable;
use core::sync::atomic::{fence, Ordering};

/// The longest line the vPL011 hands over (it splits longer ones).
const LINE: usize = 256;

impl<H: Hw> Runtime<H> {
    /// One line of a guest's output. It is queued in the domain's own
    /// buffer and the vCPU goes back to its guest: it never waits for the
    /// UART while another CPU writes. Only a domain whose buffer is full
    /// (it prints faster than the console writes) waits, for its own lines.
    pub(super) fn print_line(&self, vm: &Vm<H>, line: &[u8]) {
        while !vm.out.lock().push(line) {
            // Full: wait for the console and write this domain's own
            // lines. With no console at all there is nowhere to write
            // them: the line goes.
            let Some(o) = self.hw.output(true) else {
                return;
            };
            let queued = vm.out.lock().lines();
            self.write_queued(&o, vm, queued);
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.drain_output(Some(vm));
    }

    /// Writes up to `max` of `vm`'s queued lines, as printable text only
    /// (`Printable`): no guest writes control sequences to the terminal,
    /// and every line starts with its domain's name.
    fn write_queued(&self, o: &H::Output, vm: &Vm<H>, max: usize) {
        let mut buf = [0u8; LINE];
        for _ in 0..max {
            let Some(n) = vm.out.lock().pop(&mut buf) else {
                return;
            };
            self.queued.fetch_sub(1, Ordering::SeqCst);
            o.write_fmt(format_args!("({}) {}\n", vm.name, Printable(&buf[..n])));
        }
    }

    /// Writes queued guest output if no other CPU holds the console: the
    /// lines `first`'s domain had queued, then one line of each domain in
    /// turn. A CPU that finds the console held leaves its line to the
    /// holder, which looks again before it lets go (a few rounds at most,
    /// so no CPU writes another domain's flood for long).
    pub fn drain_output(&self, first: Option<&Vm<H>>) {
        if !self.published() || self.queued.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.out_wanted.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        for _ in 0..3 {
            let Some(o) = self.hw.output(false) else {
                return; // the holder sees out_wanted
            };
            self.out_wanted.store(false, Ordering::SeqCst);
            if let Some(vm) = first {
                let queued = vm.out.lock().lines();
                self.write_queued(&o, vm, queued);
            }
            for vm in &self.vms {
                self.write_queued(&o, vm, 1);
            }
            drop(o);
            fence(Ordering::SeqCst);
            if !self.out_wanted.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Before each hypervisor line (with the output held): every line
    /// guests queued before it, so a line about a domain never comes
    /// before what the domain printed.
    pub fn write_all_queued(&self, o: &H::Output) {
        for vm in &self.vms {
            let queued = vm.out.lock().lines();
            self.write_queued(o, vm, queued);
        }
    }
}
