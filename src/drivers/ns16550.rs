//! NS16550/8250-compatible UARTs (including `snps,dw-apb-uart` and the
//! BCM2835 mini UART). Registers are `1 << reg_shift` bytes apart and
//! accessed `reg_io_width` bytes wide, so tock-registers' fixed layouts do
//! not fit: accesses are computed here.

const RBR_THR: usize = 0;
const IER: usize = 1;
const IER_ERBFI: u32 = 1 << 0;
const LSR: usize = 5;
const LSR_DR: u32 = 1 << 0;
const LSR_THRE: u32 = 1 << 5;

pub struct Ns16550 {
    base: usize,
    shift: u32,
    width: u32,
}

// SAFETY: MMIO registers; the console serialises the transmit side (putc)
// and the receive side (getc, set_rx_irq) each behind its own lock.
unsafe impl Send for Ns16550 {}

impl Ns16550 {
    /// # Safety
    /// `base` must be the identity-mapped address of a 16550-style UART with
    /// the given register spacing and access width (1 or 4 bytes).
    pub const unsafe fn new(base: usize, shift: u32, width: u32) -> Self {
        Ns16550 { base, shift, width }
    }

    fn read(&self, reg: usize) -> u32 {
        let addr = self.base + (reg << self.shift);
        // SAFETY: inside the register block promised by `new`.
        unsafe {
            if self.width == 4 {
                core::ptr::read_volatile(addr as *const u32)
            } else {
                core::ptr::read_volatile(addr as *const u8) as u32
            }
        }
    }

    fn write(&self, reg: usize, v: u32) {
        let addr = self.base + (reg << self.shift);
        // SAFETY: inside the register block promised by `new`.
        unsafe {
            if self.width == 4 {
                core::ptr::write_volatile(addr as *mut u32, v)
            } else {
                core::ptr::write_volatile(addr as *mut u8, v as u8)
            }
        }
    }

    pub fn putc(&self, b: u8) {
        let mut spins = 0u32;
        while self.read(LSR) & LSR_THRE == 0 && spins < 1_000_000 {
            spins += 1;
            core::hint::spin_loop();
        }
        self.write(RBR_THR, b as u32);
    }

    pub fn getc(&self) -> Option<u8> {
        (self.read(LSR) & LSR_DR != 0).then(|| self.read(RBR_THR) as u8)
    }

    /// Interrupt on received data (IER.ERBFI), or not.
    pub fn set_rx_irq(&self, on: bool) {
        let ier = self.read(IER) & !IER_ERBFI;
        self.write(IER, if on { ier | IER_ERBFI } else { ier });
    }
}
