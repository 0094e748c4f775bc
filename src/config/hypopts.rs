//! The hypervisor's command line (`xen,xen-bootargs`, or the hyperlaunch
//! config's), read as Xen reads it: space-separated `name=value` words,
//! booleans as `name`, `no-name` or `name=<yes|no|on|off|true|false|
//! enable|disable|1|0>`. dtvisor acts on the options below; every other
//! word is listed once at boot as ignored, so a Xen command line carried
//! over is never silently half-honoured.
//!
//! | option | effect |
//! | --- | --- |
//! | `loglvl=none\|error\|warning\|info\|debug\|all` | the hypervisor's log level |
//! | `bootscrub=<bool>\|idle` | `0`: guest RAM is not scrubbed before each domain's first start (Xen: no scrub of free RAM at boot); `1` and `idle` (the default) scrub it |
//! | `console_timestamps=none\|boot` | `boot`: each console line, guest lines included, carries seconds since the hypervisor started, `[    1.234567]`, after its `(tag)` |
//! | `console=dtuart`, `dtuart=PATH` | the console is a device-tree UART: dtvisor's only kind (it takes `/chosen/stdout-path`; a `dtuart` naming another UART is reported) |
//! | `dom0_mem=<size>`, `dom0_max_vcpus=<n>` | the legacy dom0's memory and vCPUs (the boot plan's; `min:`/`max:` forms are refused, as Xen on Arm refuses them) |
//! | `dtvisor.selftest=el2-fault\|write-text\|heap-grow` | tests only: a deliberate EL2 data abort; a write to the hypervisor's own code (W^X: it must fault); an allocation larger than the heap once the domains are placed |

use alloc::vec::Vec;

/// What the command line asks of the hypervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypOptions<'a> {
    /// `loglvl=` value, if given (the image maps it to its log filter).
    pub loglvl: Option<&'a str>,
    /// Scrub guest RAM before a domain's first start.
    pub bootscrub: bool,
    /// `console_timestamps=boot`.
    pub timestamps: bool,
    /// `dtuart=` value, if given.
    pub dtuart: Option<&'a str>,
    pub selftest: Option<&'a str>,
    /// Words dtvisor does not act on, in order.
    pub ignored: Vec<&'a str>,
    /// Options dtvisor knows with a value it does not take: (word, why).
    pub invalid: Vec<(&'a str, &'static str)>,
}

impl Default for HypOptions<'_> {
    fn default() -> Self {
        HypOptions {
            loglvl: None,
            bootscrub: true,
            timestamps: false,
            dtuart: None,
            selftest: None,
            ignored: Vec::new(),
            invalid: Vec::new(),
        }
    }
}

/// Xen's `parse_bool`: None for anything else.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "yes" | "on" | "true" | "enable" | "1" => Some(true),
        "no" | "off" | "false" | "disable" | "0" => Some(false),
        _ => None,
    }
}

const LOGLVLS: [&str; 6] = ["none", "error", "warning", "info", "debug", "all"];

/// Reads a command line. Later words win, as in Xen.
pub fn parse(cmdline: &str) -> HypOptions<'_> {
    let mut o = HypOptions::default();
    for word in cmdline.split_whitespace() {
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (word, None),
        };
        // Xen's boolean forms: `name`, `no-name`, `name=<bool>`.
        let boolean = |n: &str| -> Option<Option<bool>> {
            if name == n {
                Some(value.map_or(Some(true), parse_bool))
            } else if name.strip_prefix("no-") == Some(n) && value.is_none() {
                Some(Some(false))
            } else {
                None
            }
        };
        if let Some(b) = boolean("bootscrub") {
            match (b, value) {
                (Some(b), _) => o.bootscrub = b,
                (None, Some("idle")) => o.bootscrub = true,
                (None, _) => o.invalid.push((word, "a boolean or idle")),
            }
            continue;
        }
        match (name, value) {
            // Xen's `loglvl=<all>/<rate-limited>`: the first part counts.
            ("loglvl", Some(v)) if LOGLVLS.iter().any(|l| v.split('/').next() == Some(l)) => {
                o.loglvl = v.split('/').next()
            }
            ("loglvl", _) => o
                .invalid
                .push((word, "none, error, warning, info, debug or all")),
            ("console_timestamps", Some("boot")) => o.timestamps = true,
            ("console_timestamps", Some(v)) if v == "none" || parse_bool(v) == Some(false) => {
                o.timestamps = false
            }
            ("console_timestamps", _) => o.invalid.push((
                word,
                "none or boot (dtvisor has no wall clock for date, datems; nor raw)",
            )),
            ("console", Some("dtuart")) => {}
            ("console", _) => o
                .invalid
                .push((word, "dtuart (dtvisor's console is a device-tree UART)")),
            ("dtuart", Some(v)) => o.dtuart = Some(v),
            ("dtvisor.selftest", Some(v)) => o.selftest = Some(v),
            // The legacy dom0's memory and vCPUs: the boot plan's (legacy.rs).
            ("dom0_mem" | "dom0_max_vcpus", Some(_)) => {}
            _ => o.ignored.push(word),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn defaults() {
        let o = parse("");
        assert_eq!(o, HypOptions::default());
        assert!(o.bootscrub && !o.timestamps);
    }

    #[test]
    fn xen_benchmark_command_line() {
        let o = parse("console=dtuart dtuart=serial0 bootscrub=0 console_timestamps=boot");
        assert!(!o.bootscrub);
        assert!(o.timestamps);
        assert_eq!(o.dtuart, Some("serial0"));
        assert!(o.ignored.is_empty() && o.invalid.is_empty());
    }

    #[test]
    fn bootscrub_forms() {
        for (c, want) in [
            ("bootscrub", true),
            ("bootscrub=1", true),
            ("bootscrub=idle", true),
            ("bootscrub=off", false),
            ("bootscrub=false", false),
            ("no-bootscrub", false),
            ("bootscrub=0 bootscrub=yes", true),
            ("bootscrub=yes no-bootscrub", false),
        ] {
            assert_eq!(parse(c).bootscrub, want, "{c}");
        }
        let o = parse("bootscrub=sometimes");
        assert!(o.bootscrub);
        assert_eq!(
            o.invalid,
            vec![("bootscrub=sometimes", "a boolean or idle")]
        );
    }

    #[test]
    fn timestamps_forms() {
        assert!(parse("console_timestamps=boot").timestamps);
        assert!(!parse("console_timestamps=boot console_timestamps=none").timestamps);
        assert!(!parse("console_timestamps=boot console_timestamps=no").timestamps);
        let o = parse("console_timestamps=date");
        assert!(!o.timestamps);
        assert_eq!(o.invalid.len(), 1);
        assert_eq!(o.invalid[0].0, "console_timestamps=date");
    }

    #[test]
    fn unknown_words_are_listed_in_order() {
        assert_eq!(parse("loglvl=all/warning").loglvl, Some("all"));
        let o = parse("dom0_mem=1G loglvl=all sync_console sched=credit2 guest_loglvl=all");
        assert_eq!(o.loglvl, Some("all"));
        assert_eq!(
            o.ignored,
            vec!["sync_console", "sched=credit2", "guest_loglvl=all"]
        );
    }

    /// dom0_mem and dom0_max_vcpus are the plan's: not listed as ignored.
    #[test]
    fn dom0_options_are_not_ignored() {
        let o = parse("dom0_mem=512M dom0_max_vcpus=2");
        assert!(o.ignored.is_empty() && o.invalid.is_empty(), "{o:?}");
    }

    #[test]
    fn bad_values_of_known_options() {
        let o = parse("loglvl=loud console=vga");
        assert_eq!(o.loglvl, None);
        assert_eq!(
            o.invalid.iter().map(|i| i.0).collect::<Vec<_>>(),
            vec!["loglvl=loud", "console=vga"]
        );
        assert!(o.ignored.is_empty());
    }

    #[test]
    fn no_prefix_only_for_booleans_without_value() {
        // `no-bootscrub=1` is not Xen's form: an ignored word.
        let o = parse("no-bootscrub=1");
        assert!(o.bootscrub);
        assert_eq!(o.ignored, vec!["no-bootscrub=1"]);
    }
}
