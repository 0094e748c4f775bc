//! The binding table: every domain-node property dtvisor knows, where it
//! is allowed, and what it fills in. Dom0less and hyperlaunch differ only
//! by the `scope` column (decision 2 of bindings.md).

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
