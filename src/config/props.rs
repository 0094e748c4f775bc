//! The binding tables: every domain-node property dtvisor knows, where it
//! is allowed, and what it fills in; the module compatibles and module
//! properties; the domain child nodes recognised and refused; and the few
//! defaults a container changes (`Binding`). Dom0less and hyperlaunch
//! differ only by the `scope` columns and `Binding` (decision 2 of
//! bindings.md): the domain and module parsers (`parse.rs`,
//! `parse/domain.rs`) branch on nothing else.

use super::model::{Caps, ModuleKind};

/// Where a property may appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Dom0less domain nodes and hyperlaunch domain nodes.
    Both,
    /// Only inside `/chosen/hypervisor`.
    Hyperlaunch,
}

/// What a property fills in (the encoding is checked by its handler).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Ignore,
    Cells,
    Cpus,
    Memory,
    MemMin,
    MemMax,
    Vpl011,
    Capabilities,
    Role,
    Capability,
    Domid,
    Mode,
    Uuid,
    SecurityId,
    Enhanced,
    Passthrough,
    NrSpis,
    TrapUnmapped,
    GrantVersion,
    GrantFrames,
    Maptrack,
    P2mMem,
    Sve,
    StaticMem,
    DirectMap,
    Cpupool,
    SciType,
    /// An old name: the error says which name replaced it.
    Renamed(&'static str),
    /// Recognised, valid in Xen, not offered by dtvisor: the error says why.
    Unsupported(&'static str),
}

pub struct PropSpec {
    pub name: &'static str,
    pub scope: Scope,
    pub field: Field,
}

const fn p(name: &'static str, scope: Scope, field: Field) -> PropSpec {
    PropSpec { name, scope, field }
}

use Field::*;
use Scope::*;

pub static PROPS: &[PropSpec] = &[
    p("compatible", Both, Ignore),
    p("name", Both, Ignore),
    p("phandle", Both, Ignore),
    p("linux,phandle", Both, Ignore),
    p("status", Both, Ignore),
    p("#address-cells", Both, Cells),
    p("#size-cells", Both, Cells),
    p("cpus", Both, Cpus),
    p("memory", Both, Memory),
    p("vpl011", Both, Vpl011),
    p("capabilities", Both, Capabilities),
    p("xen,enhanced", Both, Enhanced),
    p("passthrough", Both, Passthrough),
    p("nr_spis", Both, NrSpis),
    p("trap-unmapped-accesses", Both, TrapUnmapped),
    p("max_grant_version", Both, GrantVersion),
    p("max_grant_frames", Both, GrantFrames),
    p("max_maptrack_frames", Both, Maptrack),
    p("xen,domain-p2m-mem-mb", Both, P2mMem),
    p("sve", Both, Sve),
    p("xen,static-mem", Both, StaticMem),
    p("direct-map", Both, DirectMap),
    p("domain-cpupool", Both, Cpupool),
    p("xen,sci_type", Both, SciType),
    p("llc-colors", Both, Unsupported("LLC colouring")),
    p("v8r_el1_msa", Both, Unsupported("Armv8-R guests")),
    p("domid", Hyperlaunch, Domid),
    p("role", Hyperlaunch, Role),
    p("capability", Hyperlaunch, Capability),
    p("mode", Hyperlaunch, Mode),
    p("domain-uuid", Hyperlaunch, Uuid),
    p("security-id", Hyperlaunch, SecurityId),
    p("mem-min", Hyperlaunch, MemMin),
    p("mem-max", Hyperlaunch, MemMax),
    p(
        "permissions",
        Both,
        Renamed("capabilities (or role inside /chosen/hypervisor)"),
    ),
    p(
        "functions",
        Both,
        Renamed("capabilities (or role/capability inside /chosen/hypervisor)"),
    ),
];

/// What a domain's container changes, besides the `scope` columns.
pub struct Binding {
    /// Hyperlaunch-scope names are allowed: the properties above,
    /// `module,<kind>` compatibles, `module-addr` and the string form of
    /// `memory`.
    pub hyperlaunch: bool,
    /// vCPUs when `cpus` is absent (none: `cpus` is required).
    pub default_vcpus: Option<u32>,
    /// CAP_CONSOLE_IO when `capability` is absent.
    pub console_io: bool,
    /// The warning for a domain whose status is not "okay" (skipped).
    pub disabled: &'static str,
}

pub static DOM0LESS: Binding = Binding {
    hyperlaunch: false,
    default_vcpus: None,
    console_io: true,
    disabled: "status is not \"okay\": domain skipped (Xen ignores status; dtvisor honours it)",
};

pub static HYPERLAUNCH: Binding = Binding {
    hyperlaunch: true,
    default_vcpus: Some(1),
    console_io: false,
    disabled: "status is not \"okay\": domain skipped",
};

impl Binding {
    pub fn of(hyperlaunch: bool) -> &'static Binding {
        if hyperlaunch {
            &HYPERLAUNCH
        } else {
            &DOM0LESS
        }
    }

    /// Whether a name of `scope` may be used here.
    pub fn allows(&self, scope: Scope) -> bool {
        scope == Both || self.hyperlaunch
    }
}

/// The compatibles that make a node a boot module whatever its kind.
pub const GENERIC_MODULE: &[&str] = &["multiboot,module", "xen,multiboot-module"];

/// Module kinds by compatible; `module,<kind>` only in hyperlaunch.
pub static MODULE_KINDS: &[(&str, ModuleKind, Scope)] = &[
    ("multiboot,kernel", ModuleKind::Kernel, Both),
    ("xen,linux-zimage", ModuleKind::Kernel, Both),
    ("multiboot,ramdisk", ModuleKind::Ramdisk, Both),
    ("xen,linux-initrd", ModuleKind::Ramdisk, Both),
    ("multiboot,device-tree", ModuleKind::DeviceTree, Both),
    ("xen,xsm-policy", ModuleKind::XsmPolicy, Both),
    ("multiboot,xsm-policy", ModuleKind::XsmPolicy, Both),
    ("multiboot,microcode", ModuleKind::Microcode, Both),
    ("module,kernel", ModuleKind::Kernel, Hyperlaunch),
    ("module,ramdisk", ModuleKind::Ramdisk, Hyperlaunch),
    ("module,device-tree", ModuleKind::DeviceTree, Hyperlaunch),
    ("module,xsm-policy", ModuleKind::XsmPolicy, Hyperlaunch),
    ("module,microcode", ModuleKind::Microcode, Hyperlaunch),
    ("module,config", ModuleKind::Config, Hyperlaunch),
];

/// The kind named by the first compatible that names one here.
pub fn module_kind(compat: &[&str], b: &Binding) -> Option<ModuleKind> {
    compat.iter().find_map(|c| {
        MODULE_KINDS
            .iter()
            .find(|(name, _, scope)| name == c && b.allows(*scope))
            .map(|&(_, kind, _)| kind)
    })
}

/// Module properties read (or knowingly skipped); others are warned of.
pub const MODULE_PROPS: &[&str] = &[
    "compatible",
    "reg",
    "module-addr",
    "bootargs",
    "xen,uefi-binary",
    "name",
    "phandle",
    "status",
];

/// Domain child nodes Xen offers and dtvisor does not: any of the
/// compatibles, and why.
pub static UNSUPPORTED_CHILDREN: &[(&[&str], &str)] = &[
    (
        &["xen,vcpu"],
        "not supported by dtvisor: xen,vcpu affinity (each vCPU has its own pCPU)",
    ),
    (
        &["xen,domain-shared-memory-v1"],
        "not supported by dtvisor yet: static shared memory",
    ),
    (
        &["xen,evtchn-v1", "xen,evtchn"],
        "not supported by dtvisor: static event channels (no Xen PV interfaces)",
    ),
];

/// Hyperlaunch `role` bits (seed 000 v2: UNBOUNDED 1<<0, CONTROL 1<<1,
/// HARDWARE 1<<2, XENSTORE 1<<3) as dom0less `capabilities`.
pub const ROLE_BITS: &[(u32, u32)] = &[
    (1, Caps::ALL),
    (2, Caps::CONTROL),
    (4, Caps::HARDWARE),
    (8, Caps::XENSTORE),
];

/// The roles of `role` (known bits only), as `capabilities`.
pub fn role_caps(role: u32) -> u32 {
    ROLE_BITS
        .iter()
        .filter(|(bit, _)| role & bit != 0)
        .fold(0, |c, (_, caps)| c | caps)
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: alloc::vec::Vec<char> = b.chars().collect();
    let mut prev: alloc::vec::Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = alloc::vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known property an unknown name most likely meant.
pub fn did_you_mean(name: &str) -> Option<&'static str> {
    if name.len() > 64 {
        return None;
    }
    PROPS
        .iter()
        .filter(|s| !matches!(s.field, Ignore))
        .map(|s| {
            let d = distance(name, s.name);
            let prefix = name.len() >= 3 && s.name.starts_with(name);
            (
                if prefix { 0 } else { d },
                s.scope != Scope::Both,
                s.name.len(),
                s.name,
            )
        })
        .filter(|&(d, _, _, n)| d <= 2.min(n.len() / 3 + 1))
        .min()
        .map(|(_, _, _, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses() {
        assert_eq!(did_you_mean("mem"), Some("memory"));
        assert_eq!(did_you_mean("cpu"), Some("cpus"));
        assert_eq!(did_you_mean("vpl01"), Some("vpl011"));
        assert_eq!(did_you_mean("capabilites"), Some("capabilities"));
        assert_eq!(did_you_mean("xyzzy-frobnicate"), None);
    }
}
