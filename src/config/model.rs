//! The boot plan: what the device tree asks for, in one form for both
//! bindings.
//!
//! With the `serde` feature (host only) these types are `Serialize`, in the
//! shape docs/plan-json.md documents.

use crate::mm::Range;
use alloc::string::String;
use alloc::vec::Vec;

/// Which container the domains came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Container {
    /// `/chosen/<name>` nodes with compatible `xen,domain`.
    Dom0less,
    /// Children of `/chosen/hypervisor`.
    Hyperlaunch,
    /// Only a legacy dom0 (modules directly under `/chosen`).
    #[cfg_attr(json, serde(rename = "legacy dom0"))]
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Origin {
    #[cfg_attr(json, serde(rename = "legacy dom0"))]
    LegacyDom0,
    Dom0less,
    Hyperlaunch,
}

/// Roles, in dom0less `capabilities` bits (serialised as the number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct Caps(pub u32);

impl Caps {
    pub const CONTROL: u32 = 1;
    pub const HARDWARE: u32 = 2;
    pub const XENSTORE: u32 = 4;
    pub const ALL: u32 = 7;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(json, derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum ModuleKind {
    Kernel,
    Ramdisk,
    DeviceTree,
    XsmPolicy,
    Microcode,
    Config,
}

impl ModuleKind {
    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Kernel => "kernel",
            ModuleKind::Ramdisk => "ramdisk",
            ModuleKind::DeviceTree => "device-tree",
            ModuleKind::XsmPolicy => "xsm-policy",
            ModuleKind::Microcode => "microcode",
            ModuleKind::Config => "config",
        }
    }
}

/// A boot module: a file the bootloader placed in RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct Module {
    pub kind: ModuleKind,
    /// Serialised as `start` and `size` (bytes).
    #[cfg_attr(json, serde(flatten, serialize_with = "ser::start_size"))]
    pub range: Range,
    pub path: String,
    pub bootargs: Option<String>,
}

/// `xen,enhanced`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum Enhanced {
    Disabled,
    Enabled,
    Legacy,
    NoXenstore,
}

/// One domain of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct Domain {
    pub name: String,
    pub path: String,
    pub origin: Origin,
    #[cfg_attr(json, serde(rename = "id"))]
    pub domid: u16,
    #[cfg_attr(json, serde(rename = "capabilities"))]
    pub caps: Caps,
    /// hyperlaunch `capability` CAP_CONSOLE_IO (dom0less domUs: always).
    pub console_io: bool,
    pub vcpus: u32,
    pub memory_kib: u64,
    #[cfg_attr(json, serde(rename = "memory_min_kib"))]
    pub mem_min_kib: Option<u64>,
    #[cfg_attr(json, serde(rename = "memory_max_kib"))]
    pub mem_max_kib: Option<u64>,
    pub vpl011: bool,
    pub enhanced: Enhanced,
    pub mode: Option<u32>,
    /// Serialised as 32 lowercase hex digits.
    #[cfg_attr(json, serde(serialize_with = "ser::uuid"))]
    pub uuid: Option<[u8; 16]>,
    pub security_id: Option<String>,
    pub nr_spis: Option<u32>,
    pub trap_unmapped: bool,
    pub max_grant_version: Option<u32>,
    pub max_grant_frames: Option<u32>,
    pub max_maptrack_frames: Option<u32>,
    pub p2m_mem_mb: Option<u32>,
    pub cmdline: Option<String>,
    pub kernel: Module,
    pub ramdisk: Option<Module>,
    /// `multiboot,device-tree`: the partial device tree (passthrough).
    pub device_tree: Option<Module>,
    /// `xen,static-mem`: the host ranges of the domain's RAM, in order
    /// (empty: placed from free RAM).
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::ranges"))]
    pub static_mem: Vec<Range>,
    /// `direct-map`: guest-physical addresses are host-physical ones.
    pub direct_map: bool,
    /// The devices its partial device tree assigns (empty when it has
    /// none, or when the module's contents were not available to read).
    pub devices: Vec<Device>,
    /// False when a partial device tree was given but its contents could
    /// not be read (the host tool without the file): devices unknown.
    pub devices_read: bool,
    /// The hardware domain: host nodes its device tree leaves out.
    pub removed: Vec<Removed>,
    /// The hardware domain: the host's `/reserved-memory` regions (whole
    /// pages), mapped 1:1 as memory (as Xen maps them for dom0).
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::ranges"))]
    pub reserved_memory: Vec<Range>,
}

/// A host device-tree node the hardware domain does not get, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct Removed {
    pub node: String,
    pub why: String,
}

/// One device a partial device tree assigns to a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct Device {
    /// The node in the partial device tree (under `/passthrough`).
    pub node: String,
    /// `xen,path`: the host node whose interrupts go to the domain.
    pub host_path: Option<String>,
    /// `xen,reg`: host MMIO regions and where the guest sees them.
    pub regions: Vec<DeviceRegion>,
    /// The host node's SPIs, routed to the domain with the same INTID.
    pub irqs: Vec<DeviceIrq>,
}

/// An MMIO region of an assigned device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct DeviceRegion {
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::range"))]
    pub host: Range,
    pub guest: u64,
}

/// A physical SPI of an assigned device (INTID >= 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct DeviceIrq {
    pub intid: u32,
    pub edge: bool,
}

impl Domain {
    /// A domain with every optional setting at its default (Xen's).
    pub fn new(name: String, path: String, origin: Origin, kernel: Module) -> Domain {
        Domain {
            name,
            path,
            origin,
            domid: 0,
            caps: Caps(0),
            console_io: true,
            vcpus: 1,
            memory_kib: 0,
            mem_min_kib: None,
            mem_max_kib: None,
            mode: None,
            uuid: None,
            security_id: None,
            vpl011: false,
            enhanced: Enhanced::Disabled,
            nr_spis: None,
            trap_unmapped: true,
            max_grant_version: None,
            max_grant_frames: None,
            max_maptrack_frames: None,
            p2m_mem_mb: None,
            cmdline: None,
            kernel,
            ramdisk: None,
            device_tree: None,
            static_mem: Vec::new(),
            direct_map: false,
            devices: Vec::new(),
            devices_read: true,
            removed: Vec::new(),
            reserved_memory: Vec::new(),
        }
    }
}

/// Everything the boot DTB asks the hypervisor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct BootPlan {
    pub container: Container,
    #[cfg_attr(json, serde(rename = "hypervisor_cmdline"))]
    pub hyp_cmdline: Option<String>,
    #[cfg_attr(json, serde(rename = "hypervisor_modules"))]
    pub hyp_modules: Vec<Module>,
    pub domains: Vec<Domain>,
}

/// `serialize_with` helpers for fields whose JSON form is not their Rust
/// form (ranges as `{start, end}`: `crate::mm::ser`).
#[cfg(json)]
pub mod ser {
    use crate::mm::Range;
    use serde::ser::{SerializeStruct, Serializer};
    use serde::Serialize;

    /// A module's range as `start` and `size` (flattened into the module).
    pub fn start_size<S: Serializer>(r: &Range, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Range", 2)?;
        st.serialize_field("start", &r.start)?;
        st.serialize_field("size", &r.size())?;
        st.end()
    }

    /// A UUID as 32 lowercase hex digits, as the text plan prints it.
    pub fn uuid<S: Serializer>(u: &Option<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
        u.as_ref().map(Hex).serialize(s)
    }

    struct Hex<'a>(&'a [u8; 16]);

    impl Serialize for Hex<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    impl core::fmt::Display for Hex<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
}
