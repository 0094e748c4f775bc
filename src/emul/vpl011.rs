//! The emulated SBSA UART (`arm,sbsa-uart`, the PL011 subset Xen's vpl011
//! offers): transmitted bytes are collected into lines for the physical
//! console, received bytes come from the console when the domain has the
//! input focus. Registers Linux's pl011 driver touches beyond the SBSA
//! subset read back what was written.

/// Guest-physical base and size (bindings.md 4.1).
pub const BASE: u64 = 0x2200_0000;
pub const SIZE: u64 = 0x1000;
/// SPI 32 (INTID 32): `interrupts = <0 0 4>` in the guest DTB.
pub const INTID: u32 = 32;

const DR: u64 = 0x00;
const RSR: u64 = 0x04;
const FR: u64 = 0x18;
const IBRD: u64 = 0x24;
const FBRD: u64 = 0x28;
const LCR_H: u64 = 0x2c;
const CR: u64 = 0x30;
const IFLS: u64 = 0x34;
const IMSC: u64 = 0x38;
const RIS: u64 = 0x3c;
const MIS: u64 = 0x40;
const ICR: u64 = 0x44;
const DMACR: u64 = 0x48;

const FR_RXFE: u32 = 1 << 4;
const FR_TXFE: u32 = 1 << 7;
const INT_RX: u32 = 1 << 4;
const INT_TX: u32 = 1 << 5;
const INT_RT: u32 = 1 << 6;

const LINE_MAX: usize = 240;
/// Received bytes held for the guest: deeper than a PL011's 32-byte FIFO
/// (a guest sees only "empty" or not, and its interrupt), so a paste or
/// fast typing waits here for a slow reader instead of being dropped.
const RX_SIZE: usize = 1024;

/// PL011 peripheral and PrimeCell ids (0xfe0..0xffc).
const IDS: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

pub struct Vpl011 {
    line: [u8; LINE_MAX],
    len: usize,
    rx: [u8; RX_SIZE],
    rx_head: usize,
    rx_len: usize,
    regs: [u32; 6], // IBRD, FBRD, LCR_H, CR, IFLS, DMACR
    imsc: u32,
    ris: u32,
}

impl Default for Vpl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Vpl011 {
    pub const fn new() -> Self {
        Vpl011 {
            line: [0; LINE_MAX],
            len: 0,
            rx: [0; RX_SIZE],
            rx_head: 0,
            rx_len: 0,
            regs: [0, 0, 0, 0x300, 0x12, 0],
            imsc: 0,
            ris: INT_TX,
        }
    }

    fn reg_slot(off: u64) -> Option<usize> {
        [IBRD, FBRD, LCR_H, CR, IFLS, DMACR]
            .iter()
            .position(|&r| r == off)
    }

    /// A guest load of `off`; RAZ for anything not implemented.
    pub fn read(&mut self, off: u64) -> u32 {
        match off {
            DR => match self.pop_rx() {
                Some(b) => b as u32,
                None => 0,
            },
            FR => FR_TXFE | if self.rx_len == 0 { FR_RXFE } else { 0 },
            IMSC => self.imsc,
            RIS => self.ris,
            MIS => self.ris & self.imsc,
            0xfe0..=0xffc if off.is_multiple_of(4) => IDS[((off - 0xfe0) / 4) as usize],
            _ => Self::reg_slot(off).map_or(0, |i| self.regs[i]),
        }
    }

    /// A guest store; `out` receives each complete line (without '\n').
    pub fn write(&mut self, off: u64, val: u32, out: &mut dyn FnMut(&[u8])) {
        match off {
            DR => self.tx(val as u8, out),
            RSR => {}
            IMSC => self.imsc = val & 0x7ff,
            ICR => self.ris &= !val,
            _ => {
                if let Some(i) = Self::reg_slot(off) {
                    self.regs[i] = val;
                }
            }
        }
    }

    fn tx(&mut self, b: u8, out: &mut dyn FnMut(&[u8])) {
        match b {
            b'\n' => self.flush(out),
            b'\r' => {}
            _ => {
                if self.len == LINE_MAX {
                    self.flush(out);
                }
                self.line[self.len] = b;
                self.len += 1;
            }
        }
        self.ris |= INT_TX;
    }

    /// Emits a partial line (e.g. a prompt without newline).
    pub fn flush(&mut self, out: &mut dyn FnMut(&[u8])) {
        out(&self.line[..self.len]);
        self.len = 0;
    }

    /// Whether a partial line is waiting.
    pub fn has_partial_line(&self) -> bool {
        self.len != 0
    }

    /// Console input for this domain; false when the FIFO is full.
    pub fn push_rx(&mut self, b: u8) -> bool {
        if self.rx_len == RX_SIZE {
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % RX_SIZE] = b;
        self.rx_len += 1;
        self.ris |= INT_RX | INT_RT;
        true
    }

    fn pop_rx(&mut self) -> Option<u8> {
        if self.rx_len == 0 {
            return None;
        }
        let b = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % RX_SIZE;
        self.rx_len -= 1;
        if self.rx_len == 0 {
            self.ris &= !(INT_RX | INT_RT);
        }
        Some(b)
    }

    /// Whether the emulated interrupt line is asserted (for the vGIC).
    pub fn irq_pending(&self) -> bool {
        self.ris & self.imsc != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn tx_lines_and_rx_fifo() {
        let mut u = Vpl011::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for &b in b"hello\r\nworld\n" {
            u.write(DR, b as u32, &mut |l| lines.push(l.to_vec()));
        }
        assert_eq!(lines, [b"hello".to_vec(), b"world".to_vec()]);
        assert_eq!(u.read(FR) & FR_RXFE, FR_RXFE);
        assert!(u.push_rx(b'x'));
        assert_eq!(u.read(FR) & FR_RXFE, 0);
        u.write(IMSC, INT_RX, &mut |_| {});
        assert!(u.irq_pending());
        assert_eq!(u.read(DR), b'x' as u32);
        assert!(!u.irq_pending());
        assert_eq!(u.read(0xfe0), 0x11);
        assert_eq!(u.read(0x100), 0);
        u.write(CR, 0x301, &mut |_| {});
        assert_eq!(u.read(CR), 0x301);
    }

    #[test]
    fn long_lines_are_split_not_lost() {
        let mut u = Vpl011::new();
        let mut total = 0;
        for _ in 0..1000 {
            u.write(DR, b'a' as u32, &mut |l| total += l.len());
        }
        assert_eq!(total, 960);
        assert!(u.has_partial_line());
    }
}
