//! The checks across domains, once every domain is parsed: ids, the
//! roles only one domain may have, xenstore, names, and module ranges.

use super::diag::Kind;
use super::model::*;
use super::parse::Parser;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub(super) fn check(domains: &mut [Domain], hyp_modules: &[Module], p: &mut Parser<'_, '_>) {
    assign_domids(domains, p);
    unique_roles(domains, p);
    xenstore_present(domains, p);
    unique_names(domains, p);
    module_ranges(domains, hyp_modules, p);
}

/// Domain ids: explicit ones first (each once), then the lowest free
/// from 1. `u16::MAX` marks "not given".
fn assign_domids(domains: &mut [Domain], p: &mut Parser<'_, '_>) {
    let mut used: Vec<(u16, String)> = Vec::new();
    for dom in domains.iter() {
        if dom.domid == u16::MAX {
            continue;
        }
        if let Some((_, other)) = used.iter().find(|(id, _)| *id == dom.domid) {
            p.d.error(
                &dom.path,
                Some("domid"),
                Kind::Duplicate,
                format!("domain id {} is also given to {other}", dom.domid),
            );
        } else {
            used.push((dom.domid, dom.path.clone()));
        }
    }
    let mut next = 1u16;
    for dom in domains.iter_mut().filter(|d| d.domid == u16::MAX) {
        while used.iter().any(|(id, _)| *id == next) {
            next += 1;
        }
        dom.domid = next;
        used.push((next, dom.path.clone()));
    }
}

/// One hardware domain, one xenstore domain.
fn unique_roles(domains: &[Domain], p: &mut Parser<'_, '_>) {
    for (bit, what) in [(Caps::HARDWARE, "hardware"), (Caps::XENSTORE, "xenstore")] {
        let with: Vec<&Domain> = domains.iter().filter(|d| d.caps.0 & bit != 0).collect();
        if with.len() > 1 {
            let prop = if with[1].origin == Origin::Hyperlaunch && with[1].caps.0 == Caps::ALL {
                "role"
            } else {
                "capabilities"
            };
            p.d.error(
                &with[1].path,
                Some(prop),
                Kind::Conflict,
                format!(
                    "only one {what} domain is allowed; {} is one already",
                    with[0].path
                ),
            );
        }
    }
}

/// xen,enhanced "enabled"/"legacy" needs a xenstore domain (or a dom0).
fn xenstore_present(domains: &[Domain], p: &mut Parser<'_, '_>) {
    let has_xenstore = domains
        .iter()
        .any(|d| d.caps.0 & Caps::XENSTORE != 0 || d.origin == Origin::LegacyDom0);
    if has_xenstore {
        return;
    }
    for dom in domains
        .iter()
        .filter(|d| matches!(d.enhanced, Enhanced::Enabled | Enhanced::Legacy))
    {
        p.d.error(
            &dom.path,
            Some("xen,enhanced"),
            Kind::Conflict,
            "xenstore requested, but no domain has the xenstore role (capabilities 0x4) and there is no dom0: use \"no-xenstore\"".into(),
        );
    }
}

fn unique_names(domains: &[Domain], p: &mut Parser<'_, '_>) {
    for (i, dom) in domains.iter().enumerate() {
        if let Some(o) = domains[..i].iter().find(|o| o.name == dom.name) {
            p.d.error(
                &dom.path,
                None,
                Kind::DuplicateName,
                format!("domain name {} is also used by {}", dom.name, o.path),
            );
        }
    }
}

/// Every module once (a kernel shared by domains is one module), checked
/// against memory and each other.
fn module_ranges(domains: &[Domain], hyp_modules: &[Module], p: &mut Parser<'_, '_>) {
    let mods = domains
        .iter()
        .flat_map(|d| core::iter::once(&d.kernel).chain(d.ramdisk.as_ref()))
        .chain(hyp_modules.iter());
    let mut dedup: Vec<&Module> = Vec::new();
    for m in mods {
        if !dedup.iter().any(|o| o.path == m.path && o.range == m.range) {
            dedup.push(m);
        }
    }
    p.check_modules(&dedup);
}
