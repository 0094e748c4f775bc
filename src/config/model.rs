//! The boot plan: what the device tree asks for, in one form for both
//! bindings.

use crate::mm::Range;
use alloc::string::String;
use alloc::vec::Vec;

/// Which container the domains came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// `/chosen/<name>` nodes with compatible `xen,domain`.
    Dom0less,
    /// Children of `/chosen/hypervisor`.
    Hyperlaunch,
    /// Only a legacy dom0 (modules directly under `/chosen`).
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    LegacyDom0,
    Dom0less,
    Hyperlaunch,
}

/// Roles, in dom0less `capabilities` bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps(pub u32);

impl Caps {
    pub const CONTROL: u32 = 1;
    pub const HARDWARE: u32 = 2;
    pub const XENSTORE: u32 = 4;
    pub const ALL: u32 = 7;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
pub struct Module {
    pub kind: ModuleKind,
    pub range: Range,
    pub bootargs: Option<String>,
    pub path: String,
}

/// `xen,enhanced`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enhanced {
    Disabled,
    Enabled,
    Legacy,
    NoXenstore,
}

/// One domain of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub path: String,
    pub origin: Origin,
    pub domid: u16,
    pub caps: Caps,
    /// hyperlaunch `capability` CAP_CONSOLE_IO (dom0less domUs: always).
    pub console_io: bool,
    pub vcpus: u32,
    pub memory_kib: u64,
    pub mem_min_kib: Option<u64>,
    pub mem_max_kib: Option<u64>,
    pub mode: Option<u32>,
    pub uuid: Option<[u8; 16]>,
    pub security_id: Option<String>,
    pub vpl011: bool,
    pub enhanced: Enhanced,
    pub nr_spis: Option<u32>,
    pub trap_unmapped: bool,
    pub max_grant_version: Option<u32>,
    pub max_grant_frames: Option<u32>,
    pub max_maptrack_frames: Option<u32>,
    pub p2m_mem_mb: Option<u32>,
    pub cmdline: Option<String>,
    pub kernel: Module,
    pub ramdisk: Option<Module>,
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
        }
    }
}

/// Everything the boot DTB asks the hypervisor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPlan {
    pub container: Container,
    pub domains: Vec<Domain>,
    pub hyp_cmdline: Option<String>,
    pub hyp_modules: Vec<Module>,
}
