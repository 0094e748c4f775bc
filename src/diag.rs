//! Diagnostics: every error or warning of the parser, the partial device
//! tree reader, placement and host discovery is one [`Diagnostic`], which
//! names the node path and property, what was expected and what was
//! found. The `kind` is stable (the conformance suite matches on it); the
//! message is for people.

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
    Placement = "placement",
    Discovery = "discovery",
    Ignored = "ignored",
    Info = "info",
}

/// One finding: of the parser, the partial device tree reader (its path
/// inside the fragment), placement (the domain's node) or host discovery
/// (the host DTB's node).
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
        write!(f, "{sev}: {}", self.at())
    }
}

impl Diagnostic {
    /// An error.
    pub fn error(path: &str, property: Option<&str>, kind: Kind, message: String) -> Self {
        Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            property: property.map(Into::into),
            kind,
            message,
        }
    }

    /// A warning.
    pub fn warning(path: &str, property: Option<&str>, kind: Kind, message: String) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, property, kind, message)
        }
    }

    /// "path: property: message", without the severity.
    pub fn at(&self) -> At<'_> {
        At(self)
    }
}

/// A diagnostic's place and message (see [`Diagnostic::at`]).
pub struct At<'a>(&'a Diagnostic);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        match &d.property {
            Some(p) => write!(f, "{}: {p}: {}", d.path, d.message),
            None => write!(f, "{}: {}", d.path, d.message),
        }
    }
}
