//! The arm64 Linux `Image` header (Documentation/arch/arm64/booting.rst):
//! what dtvisor needs to place a kernel, and a clear error for anything
//! that is not an uncompressed arm64 Image.

use core::fmt;

/// Header facts that placement uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image from a 2 MiB-aligned RAM base.
    pub text_offset: u64,
    /// Bytes the kernel needs from its load address (text, data, BSS).
    pub image_size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    TooShort(usize),
    Gzip,
    Elf,
    UImage,
    Zimage32,
    /// Anything else without the "ARM\x64" magic.
    NotImage(u32),
    BigEndian,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NEED: &str = "dtvisor needs an uncompressed arm64 Image";
        match *self {
            ImageError::TooShort(n) => write!(
                f,
                "kernel is {n} bytes, shorter than an arm64 Image header (64)"
            ),
            ImageError::Gzip => write!(
                f,
                "kernel is a gzip file: {NEED} (gunzip it, or use arch/arm64/boot/Image)"
            ),
            ImageError::Elf => write!(f, "kernel is an ELF file (vmlinux?): {NEED}"),
            ImageError::UImage => write!(
                f,
                "kernel is a U-Boot uImage: {NEED} (strip the 64-byte uImage header)"
            ),
            ImageError::Zimage32 => write!(f, "kernel is a 32-bit ARM zImage: {NEED}"),
            ImageError::NotImage(m) => {
                write!(
                    f,
                    "kernel has no arm64 Image magic (found {m:#010x} at offset 56): {NEED}"
                )
            }
            ImageError::BigEndian => write!(
                f,
                "kernel is a big-endian Image: guests must be little-endian"
            ),
        }
    }
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn le64(b: &[u8], o: usize) -> u64 {
    le32(b, o) as u64 | (le32(b, o + 4) as u64) << 32
}

impl ImageHeader {
    /// Parses the first 64 bytes (or more) of a kernel module.
    pub fn parse(b: &[u8]) -> Result<ImageHeader, ImageError> {
        if b.len() >= 2 && b[0] == 0x1f && b[1] == 0x8b {
            return Err(ImageError::Gzip);
        }
        if b.len() >= 4 && &b[..4] == b"\x7fELF" {
            return Err(ImageError::Elf);
        }
        if b.len() >= 4 && b[..4] == [0x27, 0x05, 0x19, 0x56] {
            return Err(ImageError::UImage);
        }
        if b.len() >= 0x28 && le32(b, 0x24) == 0x016f_2818 {
            return Err(ImageError::Zimage32);
        }
        if b.len() < 64 {
            return Err(ImageError::TooShort(b.len()));
        }
        let magic = le32(b, 56);
        if magic != 0x644d_5241 {
            return Err(ImageError::NotImage(magic));
        }
        let text_offset = le64(b, 8);
        let mut image_size = le64(b, 16);
        let flags = le64(b, 24);
        if image_size == 0 {
            // Kernels before 3.17: text_offset is 0x80000 by convention and
            // the size unknown; callers use the module size and some room.
            return Ok(ImageHeader {
                text_offset: 0x80000,
                image_size: 0,
            });
        }
        if flags & 1 != 0 {
            return Err(ImageError::BigEndian);
        }
        image_size = (image_size + 0xfff) & !0xfff;
        Ok(ImageHeader {
            text_offset,
            image_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, size: u64, flags: u64) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(&0x644d_5241u32.to_le_bytes());
        h
    }

    #[test]
    fn parses_and_rejects() {
        let h = ImageHeader::parse(&header(0, 0x1234, 0xa)).unwrap();
        assert_eq!(
            h,
            ImageHeader {
                text_offset: 0,
                image_size: 0x2000
            }
        );
        assert_eq!(
            ImageHeader::parse(&header(0, 0x1000, 0xb)),
            Err(ImageError::BigEndian)
        );
        assert_eq!(
            ImageHeader::parse(&header(0, 0, 0)).unwrap().text_offset,
            0x80000
        );
        assert_eq!(
            ImageHeader::parse(&[0x1f, 0x8b, 8, 0]),
            Err(ImageError::Gzip)
        );
        assert_eq!(ImageHeader::parse(b"\x7fELF\x02\x01"), Err(ImageError::Elf));
        assert_eq!(
            ImageHeader::parse(&[0x27, 0x05, 0x19, 0x56, 0, 0]),
            Err(ImageError::UImage)
        );
        let mut z = [0u8; 64];
        z[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_le_bytes());
        assert_eq!(ImageHeader::parse(&z), Err(ImageError::Zimage32));
        assert!(matches!(
            ImageHeader::parse(&[0u8; 64]),
            Err(ImageError::NotImage(0))
        ));
        assert_eq!(
            ImageHeader::parse(&[0u8; 10]),
            Err(ImageError::TooShort(10))
        );
        assert!(ImageError::Gzip
            .to_string()
            .contains("uncompressed arm64 Image"));
    }
}
