//! Diagnostics: every error or warning names the node path and property,
//! what was expected and what was found. The `kind` is stable (the
//! conformance suite matches on it); the message is for people.

use alloc::string::String;
use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(json, derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Severity {
    Error,
    Warning,
}

macro_rules! kinds {
    ($($v:ident = $s:literal),* $(,)?) => {
        /// What is wrong, as a stable name (also its serialised form).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[cfg_attr(json, derive(serde::Serialize))]
        pub enum Kind { $(#[cfg_attr(json, serde(rename = $s))] $v),* }
        impl Kind {
            /// Every kind, in declaration order.
            pub const ALL: &[Kind] = &[$(Kind::$v),*];

            pub fn name(self) -> &'static str {
                match self { $(Kind::$v => $s),* }
            }
        }
    };
}

kinds! {
    InvalidFdt = "invalid_fdt",
    NoChosen = "no_chosen",
    NoDomains = "no_domains",
    BothContainers = "both_containers",
    BadContainer = "bad_container",
    Missing = "missing",
    BadLength = "bad_length",
    BadValue = "bad_value",
    BadString = "bad_string",
    OutOfRange = "out_of_range",
    Alignment = "alignment",
    Zero = "zero",
    BadCells = "bad_cells",
    HyperlaunchOnly = "hyperlaunch_only",
    Renamed = "renamed",
    Unsupported = "unsupported",
    UnknownProperty = "unknown_property",
    UnknownNode = "unknown_node",
    Disabled = "disabled",
    Duplicate = "duplicate",
    DuplicateModule = "duplicate_module",
    NoKernel = "no_kernel",
    BadModule = "bad_module",
    ModuleKind = "module_kind",
    ModuleDepth = "module_depth",
    ModuleOutside = "module_outside",
    Overlap = "overlap",
    OutsideRam = "outside_ram",
    Conflict = "conflict",
    TooMany = "too_many",
    Nesting = "nesting",
    DuplicateName = "duplicate_name",
    PartialDt = "partial_dt",
    NoNode = "no_node",
    NoIommu = "no_iommu",
    Ignored = "ignored",
    Info = "info",
}

/// One finding of the parser.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    pub property: Option<String>,
    pub kind: Kind,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.property {
            Some(p) => write!(f, "{sev}: {}: {p}: {}", self.path, self.message),
            None => write!(f, "{sev}: {}: {}", self.path, self.message),
        }
    }
}

/// Collects diagnostics while parsing.
#[derive(Default, Debug)]
pub struct Diags {
    pub list: alloc::vec::Vec<Diagnostic>,
}

impl Diags {
    pub fn error(&mut self, path: &str, prop: Option<&str>, kind: Kind, message: String) {
        self.push(Severity::Error, path, prop, kind, message);
    }

    pub fn warn(&mut self, path: &str, prop: Option<&str>, kind: Kind, message: String) {
        self.push(Severity::Warning, path, prop, kind, message);
    }

    fn push(
        &mut self,
        severity: Severity,
        path: &str,
        prop: Option<&str>,
        kind: Kind,
        message: String,
    ) {
        self.list.push(Diagnostic {
            severity,
            path: path.into(),
            property: prop.map(Into::into),
            kind,
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Severity::Error)
    }

    /// Errors so far (to tell whether a step added any).
    pub fn error_count(&self) -> usize {
        self.list
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}
