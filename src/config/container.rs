//! The containers: `/chosen/hypervisor` (hyperlaunch) or the `xen,domain`
//! children of `/chosen` (dom0less), each domain in them parsed; and the
//! domain and module nodes no container reads.

use super::diag::Kind;
use super::model::*;
use super::parse::{self, Parser};
use super::props::Binding;
use super::{compat_has, is_module_node};
use crate::fdt::Node;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// What the containers hold.
pub(super) struct Containers {
    pub container: Container,
    pub domains: Vec<Domain>,
    /// Modules of the hyperlaunch config node.
    pub hyp_modules: Vec<Module>,
    /// `bootargs` of the hyperlaunch config node.
    pub config_cmdline: Option<String>,
}

impl Containers {
    fn new(container: Container) -> Containers {
        Containers {
            container,
            domains: Vec::new(),
            hyp_modules: Vec::new(),
            config_cmdline: None,
        }
    }
}

/// Reads the container in `/chosen`: hyperlaunch when
/// `/chosen/hypervisor` exists, else dom0less (legacy with no domain).
pub(super) fn read(root: Node<'_>, chosen: Node<'_>, p: &mut Parser<'_, '_>) -> Containers {
    let domu_nodes: Vec<Node<'_>> = chosen
        .children()
        .filter(|n| compat_has(n, "xen,domain"))
        .collect();
    match chosen.children().find(|n| n.name() == "hypervisor") {
        Some(h) => hyperlaunch(root, chosen, h, domu_nodes.first(), p),
        None => dom0less(root, chosen, &domu_nodes, p),
    }
}

/// One domain node of a container, unless its status skips it.
fn container_domain(
    n: &Node<'_>,
    path: &str,
    ancestors: &[Node<'_>],
    origin: Origin,
    p: &mut Parser<'_, '_>,
) -> Option<Domain> {
    if !n.is_enabled() {
        let b = Binding::of(origin == Origin::Hyperlaunch);
        p.d.warn(path, Some("status"), Kind::Disabled, b.disabled.into());
        return None;
    }
    p.domain(n, path, ancestors, origin)
}

fn dom0less(
    root: Node<'_>,
    chosen: Node<'_>,
    domu_nodes: &[Node<'_>],
    p: &mut Parser<'_, '_>,
) -> Containers {
    let mut out = Containers::new(if domu_nodes.is_empty() {
        Container::Legacy
    } else {
        Container::Dom0less
    });
    let anc = [root, chosen];
    for n in domu_nodes {
        let path = format!("/chosen/{}", n.name());
        out.domains
            .extend(container_domain(n, &path, &anc, Origin::Dom0less, p));
    }
    out
}

/// `/chosen/hypervisor`: its config node (hypervisor modules and command
/// line) and its domains. A dom0less domain beside it is an error.
fn hyperlaunch(
    root: Node<'_>,
    chosen: Node<'_>,
    h: Node<'_>,
    first_domu: Option<&Node<'_>>,
    p: &mut Parser<'_, '_>,
) -> Containers {
    let mut out = Containers::new(Container::Hyperlaunch);
    if let Some(first) = first_domu {
        p.d.error(
            "/chosen/hypervisor",
            None,
            Kind::BothContainers,
            format!(
                "both /chosen/hypervisor and dom0less domain /chosen/{} are present: use one container",
                first.name()
            ),
        );
    }
    check_hypervisor_compatible(&h, p);
    let hanc = [root, chosen, h];
    for c in h.children() {
        let path = format!("/chosen/hypervisor/{}", c.name());
        if is_config_node(&c) {
            config_node(&c, &path, &hanc, p, &mut out);
        } else if compat_has(&c, "xen,domain") {
            out.domains
                .extend(container_domain(&c, &path, &hanc, Origin::Hyperlaunch, p));
        } else if is_module_node(&c) {
            p.d.error(
                &path,
                None,
                Kind::ModuleDepth,
                "modules of /chosen/hypervisor belong in its config node or in a domain".into(),
            );
        } else {
            p.d.warn(
                &path,
                None,
                Kind::UnknownNode,
                "not a domain (compatible \"xen,domain\") nor the config node: ignored".into(),
            );
        }
    }
    out
}

fn check_hypervisor_compatible(h: &Node<'_>, p: &mut Parser<'_, '_>) {
    if compat_has(h, "hypervisor,xen") || compat_has(h, "hypervisor,dtvisor") {
        return;
    }
    let found = h
        .prop("compatible")
        .map_or("no compatible".to_string(), |c| parse::describe(&c));
    p.d.error(
        "/chosen/hypervisor",
        Some("compatible"),
        Kind::BadContainer,
        format!("expected \"hypervisor,xen\" or \"hypervisor,dtvisor\", found {found}"),
    );
}

fn is_config_node(c: &Node<'_>) -> bool {
    c.name() == "config"
        || c.prop("compatible")
            .is_some_and(|x| x.strings().any(|s| s.ends_with(",config")))
}

/// The hyperlaunch config node: the hypervisor's command line and its
/// modules (never a domain's).
fn config_node(
    c: &Node<'_>,
    path: &str,
    hanc: &[Node<'_>],
    p: &mut Parser<'_, '_>,
    out: &mut Containers,
) {
    if let Some(b) = c.prop("bootargs") {
        out.config_cmdline = p.string(path, &b);
    }
    let cells = parse::cells_for_children(hanc, c);
    for m in c.children() {
        let mpath = format!("{path}/{}", m.name());
        let Some(m) = p.module(&m, &mpath, cells, true, None) else {
            continue;
        };
        if matches!(
            m.kind,
            ModuleKind::Kernel | ModuleKind::Ramdisk | ModuleKind::DeviceTree
        ) {
            p.d.error(
                &mpath,
                Some("compatible"),
                Kind::ModuleKind,
                format!(
                    "a {} module belongs to a domain, not to the hypervisor's config",
                    m.kind.name()
                ),
            );
        } else {
            out.hyp_modules.push(m);
        }
    }
}

/// A node on the walk's ancestor stack.
struct Anc<'t> {
    name: &'t str,
    module: bool,
    domain: bool,
}

fn stack_path(stack: &[Anc<'_>], last: &str) -> String {
    let mut s = String::new();
    for c in stack.iter().map(|a| a.name).chain(core::iter::once(last)) {
        s.push('/');
        s.push_str(c);
    }
    s
}

/// Reports domain and module nodes where no container reads them: one
/// pre-order pass over the tree, keeping the ancestors on a stack.
pub(super) fn stray_nodes(root: &Node<'_>, chosen: Option<&Node<'_>>, p: &mut Parser<'_, '_>) {
    let chosen_off = chosen.map(|c| c.offset());
    let mut stack: Vec<Anc<'_>> = Vec::new();
    let mut in_chosen_depth: Option<usize> = None;
    for c in root.descendants() {
        let depth = c.depth();
        stack.truncate(depth - 1);
        if in_chosen_depth.is_some_and(|d| depth <= d) {
            in_chosen_depth = None;
        }
        if Some(c.offset()) == chosen_off {
            in_chosen_depth = Some(depth);
        }
        let module = is_module_node(&c);
        let node = Anc {
            name: c.name(),
            module,
            domain: !module && compat_has(&c, "xen,domain"),
        };
        if in_chosen_depth.is_none() {
            outside_chosen(&stack, &node, p);
        } else if depth >= 3 {
            misnested(&stack, depth, &node, p);
        }
        stack.push(node);
    }
}

/// A domain or module outside /chosen is ignored.
fn outside_chosen(stack: &[Anc<'_>], node: &Anc<'_>, p: &mut Parser<'_, '_>) {
    if !(node.module || node.domain) {
        return;
    }
    let cpath = stack_path(stack, node.name);
    let what = if node.module {
        "boot module"
    } else {
        "xen,domain node"
    };
    let hint = if cpath.starts_with("/chosen") {
        " (it is not under /chosen)"
    } else {
        ""
    };
    p.d.warn(
        &cpath,
        None,
        Kind::ModuleOutside,
        format!("{what} outside /chosen is ignored{hint}"),
    );
}

/// Inside /chosen, at `depth` >= 3: a domain only under
/// /chosen/hypervisor (or a domain); a module only under a domain, a
/// module, or the hyperlaunch config node.
fn misnested(stack: &[Anc<'_>], depth: usize, node: &Anc<'_>, p: &mut Parser<'_, '_>) {
    if !(node.module || node.domain) {
        return;
    }
    let parent = &stack[depth - 2];
    let bad = if node.domain {
        // Only /chosen/hypervisor/<domain> nests a domain deeper.
        !(parent.domain || depth == 3 && parent.name == "hypervisor")
    } else {
        let read = parent.domain
            || parent.module
            || depth == 4 && parent.name == "config"
            || depth == 3 && parent.name == "hypervisor";
        !read
    };
    if !bad {
        return;
    }
    let cpath = stack_path(stack, node.name);
    if node.domain {
        p.d.error(
            &cpath,
            None,
            Kind::Nesting,
            "a domain must be a direct child of /chosen or /chosen/hypervisor".into(),
        );
    } else {
        p.d.error(
            &cpath,
            None,
            Kind::ModuleDepth,
            "module nested where no domain or config node reads it".into(),
        );
    }
}
