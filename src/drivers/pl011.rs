//! Arm PL011 / SBSA generic UART (only the SBSA subset is used: the
//! firmware or bootloader has already set the line up).

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_structs! {
    Regs {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32>),
        (0x1c => _reserved1),
        (0x38 => imsc: ReadWrite<u32>),
        (0x3c => @END),
    }
}

const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
/// IMSC: receive and receive-timeout interrupts.
const IMSC_RX: u32 = (1 << 4) | (1 << 6);

pub struct Pl011 {
    regs: *const Regs,
}

// SAFETY: MMIO registers; the console serialises the transmit side (putc)
// and the receive side (getc, set_rx_irq) each behind its own lock.
unsafe impl Send for Pl011 {}

impl Pl011 {
    /// # Safety
    /// `base` must be the identity-mapped address of a PL011 or SBSA UART.
    pub const unsafe fn new(base: usize) -> Self {
        Pl011 {
            regs: base as *const Regs,
        }
    }

    fn regs(&self) -> &Regs {
        // SAFETY: `new`'s contract: a mapped UART register block.
        unsafe { &*self.regs }
    }

    pub fn putc(&self, b: u8) {
        let mut spins = 0u32;
        while self.regs().fr.get() & FR_TXFF != 0 && spins < 1_000_000 {
            spins += 1;
            core::hint::spin_loop();
        }
        self.regs().dr.set(b as u32);
    }

    pub fn getc(&self) -> Option<u8> {
        if self.regs().fr.get() & FR_RXFE != 0 {
            None
        } else {
            Some(self.regs().dr.get() as u8)
        }
    }

    /// Interrupt while the receive FIFO holds data (RXIM, RTIM), or not.
    pub fn set_rx_irq(&self, on: bool) {
        let m = self.regs().imsc.get() & !IMSC_RX;
        self.regs().imsc.set(if on { m | IMSC_RX } else { m });
    }
}
