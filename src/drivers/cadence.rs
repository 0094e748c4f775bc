//! Cadence UART (`cdns,uart-r1p12`, `xlnx,xuartps`: Zynq and ZynqMP). The
//! bootloader has set the line up; only the FIFO, the channel status and
//! the receive interrupt are used.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    Regs {
        (0x00 => cr: ReadWrite<u32>),
        (0x04 => _mode),
        (0x08 => ier: WriteOnly<u32>),
        (0x0c => idr: WriteOnly<u32>),
        (0x10 => _imr),
        (0x14 => isr: ReadWrite<u32>),
        (0x18 => _baud),
        (0x20 => rxwm: ReadWrite<u32>),
        (0x24 => _modem),
        (0x2c => sr: ReadOnly<u32>),
        (0x30 => fifo: ReadWrite<u32>),
        (0x34 => @END),
    }
}

/// Control: receiver and transmitter enable and disable.
const CR_RXEN: u32 = 1 << 2;
const CR_RXDIS: u32 = 1 << 3;
const CR_TXEN: u32 = 1 << 4;
const CR_TXDIS: u32 = 1 << 5;
/// Channel status: receive FIFO empty, transmit FIFO full.
const SR_RXEMPTY: u32 = 1 << 1;
const SR_TXFULL: u32 = 1 << 4;
/// Interrupts: receive FIFO trigger, receive timeout.
const IXR_RX: u32 = (1 << 0) | (1 << 8);

pub struct Cadence {
    regs: *const Regs,
}

// SAFETY: MMIO registers; the console serialises the transmit side (putc)
// and the receive side (getc, set_rx_irq) each behind its own lock.
unsafe impl Send for Cadence {}

impl Cadence {
    /// # Safety
    /// `base` must be the identity-mapped address of a Cadence UART.
    pub const unsafe fn new(base: usize) -> Self {
        Cadence {
            regs: base as *const Regs,
        }
    }

    fn regs(&self) -> &Regs {
        // SAFETY: `new`'s contract: a mapped UART register block.
        unsafe { &*self.regs }
    }

    /// Makes sure receiver and transmitter are on (a bootloader normally
    /// left them so; a direct kernel boot under QEMU did not), keeping
    /// the line settings.
    pub fn enable(&mut self) {
        let cr = self.regs().cr.get() & !(CR_RXDIS | CR_TXDIS);
        self.regs().cr.set(cr | CR_RXEN | CR_TXEN);
    }

    pub fn putc(&self, b: u8) {
        let mut spins = 0u32;
        while self.regs().sr.get() & SR_TXFULL != 0 && spins < 1_000_000 {
            spins += 1;
            core::hint::spin_loop();
        }
        self.regs().fifo.set(b as u32);
    }

    pub fn getc(&self) -> Option<u8> {
        // Acknowledge the receive interrupts first: a byte arriving after
        // the FIFO check raises them again.
        self.regs().isr.set(IXR_RX);
        (self.regs().sr.get() & SR_RXEMPTY == 0).then(|| self.regs().fifo.get() as u8)
    }

    /// Interrupt on every received byte (trigger level 1) and on the
    /// receive timeout, or not.
    pub fn set_rx_irq(&self, on: bool) {
        if on {
            self.regs().rxwm.set(1);
            self.regs().isr.set(IXR_RX);
            self.regs().ier.set(IXR_RX);
        } else {
            self.regs().idr.set(IXR_RX);
        }
    }
}
