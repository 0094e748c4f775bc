//! The script inside a `boot.scr`: a legacy U-Boot image (`mkimage -T
//! script`) as U-Boot's `source` command reads it (cmd/source.c).
//!
//! Layout: a 64-byte big-endian header (magic 0x27051956, header CRC,
//! time, data size, load and entry address, data CRC, then one byte each
//! for OS, architecture, image type and compression, and a 32-byte name),
//! then the data. A script image is a multi-file image: a table of 32-bit
//! big-endian lengths ended by a zero, then the files, the first of which
//! is the script.

use alloc::format;
use alloc::string::String;

const IH_MAGIC: u32 = 0x2705_1956;
const IH_TYPE_SCRIPT: u8 = 6;
const IH_COMP_NONE: u8 = 0;
const HEADER: usize = 64;
const FDT_MAGIC: u32 = 0xd00d_feed;

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// CRC-32 (IEEE 802.3, as zlib's `crc32()`, which U-Boot uses).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

/// Extracts the script text from a legacy `boot.scr` image, checking the
/// header and data CRCs like `source` does (with `verify` at its default).
/// A NUL inside the script ends it, as it does for U-Boot.
pub fn script_of_scr(bytes: &[u8]) -> Result<String, String> {
    let magic = be32(bytes, 0).ok_or_else(|| {
        format!(
            "the file is {} bytes, shorter than an image header",
            bytes.len()
        )
    })?;
    if magic == FDT_MAGIC {
        return Err(
            "this is a FIT image (device tree format); only legacy `mkimage -T script` \
             images are supported"
                .into(),
        );
    }
    if magic != IH_MAGIC {
        return Err(format!(
            "bad magic 0x{magic:08x}: not a U-Boot image (expected 0x{IH_MAGIC:08x})"
        ));
    }
    let data = checked_payload(bytes)?;
    // The length table: the script's length first, a zero at the end.
    let len = be32(data, 0).ok_or("the image has no length table")? as usize;
    if len == 0 {
        return Err("empty script".into());
    }
    let mut off = 4;
    loop {
        match be32(data, off) {
            Some(0) => break,
            Some(_) => off += 4,
            None => return Err("the image's length table has no end".into()),
        }
    }
    let start = off + 4;
    let text = data.get(start..start.saturating_add(len)).ok_or_else(|| {
        format!(
            "the script is said to be {len} bytes, but only {} follow",
            data.len().saturating_sub(start)
        )
    })?;
    let text = match text.iter().position(|&c| c == 0) {
        Some(i) => &text[..i],
        None => text,
    };
    match core::str::from_utf8(text) {
        Ok(s) => Ok(s.into()),
        Err(e) => Err(format!(
            "the script is not UTF-8 text (at byte {})",
            e.valid_up_to()
        )),
    }
}

/// The data of a legacy image whose magic was checked: its header and
/// data checksums right, a script, not compressed.
fn checked_payload(bytes: &[u8]) -> Result<&[u8], String> {
    let Some(header) = bytes.get(..HEADER) else {
        return Err(format!(
            "the file is {} bytes, shorter than the 64-byte image header",
            bytes.len()
        ));
    };
    let mut h = [0u8; HEADER];
    h.copy_from_slice(header);
    let hcrc = be32(&h, 4).unwrap_or(0);
    h[4..8].fill(0);
    if crc32(&h) != hcrc {
        return Err("bad header checksum".into());
    }
    let size = be32(bytes, 12).unwrap_or(0) as usize;
    let data = bytes
        .get(HEADER..HEADER.saturating_add(size))
        .ok_or_else(|| {
            format!(
                "the header announces {size} bytes of data but the file has {}",
                bytes.len() - HEADER
            )
        })?;
    if crc32(data) != be32(bytes, 24).unwrap_or(0) {
        return Err("bad data checksum".into());
    }
    let (kind, comp) = (bytes[30], bytes[31]);
    if kind != IH_TYPE_SCRIPT {
        return Err(format!(
            "image type {kind} is not a script (type {IH_TYPE_SCRIPT})"
        ));
    }
    if comp != IH_COMP_NONE {
        return Err(format!(
            "the script is compressed (method {comp}), which is not supported"
        ));
    }
    Ok(data)
}
