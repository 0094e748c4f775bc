//! Host memory from the boot DTB: RAM banks, `/memreserve/` entries and
//! `/reserved-memory` children.

use crate::fdt::Fdt;
use crate::mm::Range;
use alloc::string::String;
use alloc::vec::Vec;

/// Why a range is not free RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservedKind {
    /// A `/memreserve/` entry of the FDT header.
    MemReserve,
    /// A `/reserved-memory` child (its node path).
    Node(String),
    /// The hypervisor image.
    Image,
    /// The hypervisor's heap (taken from RAM at boot).
    Heap,
    /// The boot DTB itself.
    Dtb,
    /// The page of a CPU's spin-table release address (its node path).
    SpinTable(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub range: Range,
    pub kind: ReservedKind,
}

/// What the DTB says about host memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostMemory {
    /// RAM banks from `memory` nodes (`device_type = "memory"`), sorted.
    pub ram: Vec<Range>,
    /// Every range that is not free to allocate.
    pub reserved: Vec<Reserved>,
}

impl HostMemory {
    /// Reads RAM and reservations. Ranges that cannot be decoded are
    /// skipped here; discovery reports them (hw::Platform).
    pub fn from_fdt(fdt: &Fdt<'_>) -> HostMemory {
        let root = fdt.root();
        let mut ram = Vec::new();
        super::early::for_each_ram(fdt, |r| ram.push(r));
        ram.sort();
        let mut reserved: Vec<Reserved> = fdt
            .reserved_entries()
            .filter_map(|(a, s)| Range::from_base_size(a, s))
            .map(|range| Reserved {
                range,
                kind: ReservedKind::MemReserve,
            })
            .collect();
        if let Some(rm) = root.child("reserved-memory") {
            let (ac, sc) = rm.child_cells();
            for c in rm.children().filter(|c| c.is_enabled()) {
                let Some(regs) = c.prop("reg").and_then(|p| p.ranges(ac, sc)) else {
                    continue; // dynamically placed (size/alloc-ranges only)
                };
                for (a, s) in regs {
                    if let Some(range) = Range::from_base_size(a, s) {
                        let path = alloc::format!("/reserved-memory/{}", c.name());
                        reserved.push(Reserved {
                            range,
                            kind: ReservedKind::Node(path),
                        });
                    }
                }
            }
        }
        HostMemory { ram, reserved }
    }

    /// Whether `r` lies wholly inside one RAM bank.
    pub fn in_ram(&self, r: &Range) -> bool {
        self.ram.iter().any(|b| b.contains_range(r))
    }
}
