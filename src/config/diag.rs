//! The parser's collector of diagnostics (the type itself is
//! `crate::diag`'s, shared with the partial device tree reader, placement
//! and discovery).

pub use crate::diag::{Diagnostic, Kind, Severity};
use alloc::string::String;

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
        let d = Diagnostic::error(path, prop, kind, message);
        self.list.push(Diagnostic { severity, ..d });
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
