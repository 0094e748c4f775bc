//! Physical UART drivers. Which one and where comes from the DTB.
pub mod ns16550;
pub mod pl011;

pub use ns16550::Ns16550;
pub use pl011::Pl011;

/// The physical console UART.
pub enum Uart {
    Pl011(Pl011),
    Ns16550(Ns16550),
}

impl Uart {
    pub fn putc(&mut self, b: u8) {
        match self {
            Uart::Pl011(u) => u.putc(b),
            Uart::Ns16550(u) => u.putc(b),
        }
    }

    pub fn getc(&mut self) -> Option<u8> {
        match self {
            Uart::Pl011(u) => u.getc(),
            Uart::Ns16550(u) => u.getc(),
        }
    }

    pub fn set_rx_irq(&mut self, on: bool) {
        match self {
            Uart::Pl011(u) => u.set_rx_irq(on),
            Uart::Ns16550(u) => u.set_rx_irq(on),
        }
    }
}
