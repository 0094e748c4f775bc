//! Physical UART drivers. Which one and where comes from the DTB
//! (`hw::platform::UartKind`): PL011/SBSA (QEMU virt, Raspberry Pi 4's
//! PL011s, Juno), 16550/8250 (the Pi's mini UART, DesignWare), Cadence
//! (ZynqMP) and i.MX. Each is the few registers a console needs, written
//! by hand: no maintained crate covers these (the `uart_16550` crate is
//! port-I/O or fixed-stride MMIO, and there is none for Cadence or i.MX).
//!
//! Transmitting (`putc`) and receiving (`getc`, `set_rx_irq`) use separate
//! registers, or status reads that change nothing the other side uses,
//! so the console lets one CPU read input while another prints.
pub mod cadence;
pub mod imx;
pub mod ns16550;
pub mod pl011;

pub use cadence::Cadence;
pub use imx::Imx;
pub use ns16550::Ns16550;
pub use pl011::Pl011;

/// The physical console UART.
pub enum Uart {
    Pl011(Pl011),
    Ns16550(Ns16550),
    Cadence(Cadence),
    Imx(Imx),
}

impl Uart {
    pub fn putc(&self, b: u8) {
        match self {
            Uart::Pl011(u) => u.putc(b),
            Uart::Ns16550(u) => u.putc(b),
            Uart::Cadence(u) => u.putc(b),
            Uart::Imx(u) => u.putc(b),
        }
    }

    pub fn getc(&self) -> Option<u8> {
        match self {
            Uart::Pl011(u) => u.getc(),
            Uart::Ns16550(u) => u.getc(),
            Uart::Cadence(u) => u.getc(),
            Uart::Imx(u) => u.getc(),
        }
    }

    pub fn set_rx_irq(&self, on: bool) {
        match self {
            Uart::Pl011(u) => u.set_rx_irq(on),
            Uart::Ns16550(u) => u.set_rx_irq(on),
            Uart::Cadence(u) => u.set_rx_irq(on),
            Uart::Imx(u) => u.set_rx_irq(on),
        }
    }
}
