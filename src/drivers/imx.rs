//! i.MX UART (`fsl,imx6q-uart`, `fsl,imx21-uart`: i.MX 6/7/8). The
//! bootloader has set the line up (baud rate, format); `enable` makes sure
//! the UART, its receiver and its transmitter are on (a `-kernel` boot
//! under QEMU has no bootloader, and a receiver left off never hears a
//! key). Otherwise only the data registers, the status and the
//! receiver-ready interrupt are used.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    Regs {
        (0x00 => urxd: ReadOnly<u32>),
        (0x04 => _reserved0),
        (0x40 => utxd: WriteOnly<u32>),
        (0x44 => _reserved1),
        (0x80 => ucr1: ReadWrite<u32>),
        (0x84 => ucr2: ReadWrite<u32>),
        (0x88 => _ucr3_4),
        (0x90 => _ufcr),
        (0x94 => _usr1),
        (0x98 => usr2: ReadOnly<u32>),
        (0x9c => _reserved2),
        (0xb4 => uts: ReadOnly<u32>),
        (0xb8 => @END),
    }
}

/// USR2: receive data ready.
const USR2_RDR: u32 = 1 << 0;
/// UTS: transmit FIFO full.
const UTS_TXFULL: u32 = 1 << 4;
/// UCR1: receiver ready interrupt enable; the UART enable.
const UCR1_RRDYEN: u32 = 1 << 9;
const UCR1_UARTEN: u32 = 1 << 0;
/// UCR2: not in software reset, receiver and transmitter enabled.
const UCR2_SRST: u32 = 1 << 0;
const UCR2_RXEN: u32 = 1 << 1;
const UCR2_TXEN: u32 = 1 << 2;

pub struct Imx {
    regs: *const Regs,
}

// SAFETY: MMIO registers; the console serialises the transmit side (putc)
// and the receive side (getc, set_rx_irq) each behind its own lock.
unsafe impl Send for Imx {}

impl Imx {
    /// # Safety
    /// `base` must be the identity-mapped address of an i.MX UART.
    pub const unsafe fn new(base: usize) -> Self {
        Imx {
            regs: base as *const Regs,
        }
    }

    fn regs(&self) -> &Regs {
        // SAFETY: `new`'s contract: a mapped UART register block.
        unsafe { &*self.regs }
    }

    /// The UART, receiver and transmitter on, the rest as the bootloader
    /// left it.
    pub fn enable(&self) {
        let r = self.regs();
        r.ucr1.set(r.ucr1.get() | UCR1_UARTEN);
        r.ucr2.set(r.ucr2.get() | UCR2_SRST | UCR2_RXEN | UCR2_TXEN);
    }

    pub fn putc(&self, b: u8) {
        let mut spins = 0u32;
        while self.regs().uts.get() & UTS_TXFULL != 0 && spins < 1_000_000 {
            spins += 1;
            core::hint::spin_loop();
        }
        self.regs().utxd.set(b as u32);
    }

    pub fn getc(&self) -> Option<u8> {
        (self.regs().usr2.get() & USR2_RDR != 0).then(|| self.regs().urxd.get() as u8)
    }

    /// Interrupt while received data waits (UCR1.RRDYEN), or not.
    pub fn set_rx_irq(&self, on: bool) {
        let c = self.regs().ucr1.get() & !UCR1_RRDYEN;
        self.regs().ucr1.set(if on { c | UCR1_RRDYEN } else { c });
    }
}
