//! Layers: no import circle between modules, in the library or in the
//! image, and the image's `arch` is a leaf (it imports no other module of
//! the image). A module here is a top-level module of `src/` (`config`,
//! `vm`, `vmm`, ...) and, inside one, each of its sub-modules
//! (`config/partial`, `vm/guest_dtb`, `arch/gic`): a circle at either
//! level fails. Edges come from `use crate::...` / `use dtvisor::...`
//! trees, `crate::a::b` paths in code and `super::x` paths; unit tests are
//! left out (they may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
mod common;

use common::rust_files;
use std::path::Path;

/// The image's top-level modules (`src/main.rs`); the rest of `src/` is
/// the library (`src/lib.rs`), except the host tool under `src/bin`.
const IMAGE: &[&str] = &[
    "arch", "boot", "console", "drivers", "efi", "hyp", "trap", "vmm",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// A file's module path: `src/vm/guest_dtb.rs` is `[vm, guest_dtb]`,
/// `src/arch/aarch64/gic.rs` is `[arch, gic]` (one architecture).
fn module_of(rel: &str) -> Vec<String> {
    let rel = rel.trim_end_matches(".rs");
    let mut parts: Vec<String> = rel
        .split('/')
        .filter(|p| *p != "aarch64")
        .map(str::to_string)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Paths a `use` tree names, each as its leading segments.
fn use_paths(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    let mut out = Vec::new();
    let (head, rest) = match tree.find('{') {
        Some(i) => (
            &tree[..i],
            Some(&tree[i + 1..tree.rfind('}').unwrap_or(tree.len())]),
        ),
        None => (tree, None),
    };
    let head: Vec<String> = head
        .split("::")
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let Some(rest) = rest else {
        out.push(head);
        return out;
    };
    // Split the braces' contents at top-level commas.
    let (mut depth, mut start) = (0, 0);
    let bytes = rest.as_bytes();
    let mut items = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b',' if depth == 0 => {
                items.push(&rest[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&rest[start..]);
    for item in items.into_iter().filter(|i| !i.trim().is_empty()) {
        for mut p in use_paths(item) {
            if p.first().is_some_and(|s| s == "self") {
                p.remove(0);
            }
            let mut full = head.clone();
            full.extend(p);
            out.push(full);
        }
    }
    out
}

/// The code of a file without its unit tests, comments and the text of
/// its string literals (but for paths: `serialize_with = "crate::..."`).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = String::new();
    let (mut in_str, mut escaped) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                '\n' => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match c {
            // A path in a string (`serialize_with = "crate::..."`) is a
            // reference too: kept as code.
            '"' if chars.clone().take(7).collect::<String>() == "crate::" => {
                out.push(' ');
                while let Some(c) = chars.next_if(|&c| c != '"') {
                    out.push(c);
                }
                chars.next();
                out.push(' ');
            }
            '"' => in_str = true,
            '/' if chars.peek() == Some(&'/') => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '\'' => {
                // A char literal ('"', '\\'') or a lifetime: keep neither.
                let ahead: String = chars.clone().take(3).collect();
                if let Some(esc) = ahead.strip_prefix('\\') {
                    let n = esc.find('\'').map_or(0, |i| i + 2);
                    for _ in 0..n {
                        chars.next();
                    }
                } else if ahead.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Modules `code` (in module `me` of crate root `root_kw`) refers to.
fn references(code: &str, me: &[String], root_kw: &str) -> Vec<Vec<String>> {
    let mut refs = Vec::new();
    // `use` statements (a line starting one, possibly spanning lines).
    let mut stmt: Option<String> = None;
    for line in code.lines() {
        let t = line.trim_start();
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub(super) "))
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if stmt.is_none() {
            if let Some(r) = t.strip_prefix("use ") {
                stmt = Some(String::new());
                stmt.as_mut().unwrap().push_str(r);
            }
        } else if let Some(s) = stmt.as_mut() {
            s.push_str(line);
        }
        if stmt.as_ref().is_some_and(|s| s.contains(';')) {
            let s = stmt.take().unwrap();
            refs.extend(use_paths(&s[..s.find(';').unwrap()]));
        }
    }
    // Inline paths.
    for kw in [root_kw, "super"] {
        let pat = format!("{kw}::");
        let mut s = code;
        while let Some(i) = s.find(&pat) {
            let ok = s[..i]
                .chars()
                .last()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != ':');
            let tail: String = s[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if ok {
                refs.push(tail.split("::").map(str::to_string).collect());
            }
            s = &s[i + pat.len()..];
        }
    }
    refs.into_iter()
        .filter_map(|p| resolve(&p, me, root_kw))
        .collect()
}

/// A path's target module (two levels at most), if it is in this crate.
fn resolve(p: &[String], me: &[String], root_kw: &str) -> Option<Vec<String>> {
    let first = p.first()?;
    let mut target: Vec<String> = if first == root_kw {
        p[1..].to_vec()
    } else if first == "super" {
        let mut base = me.to_vec();
        let mut rest = p;
        while rest.first().is_some_and(|s| s == "super") {
            base.pop();
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        base
    } else {
        return None;
    };
    target.retain(|s| s != "aarch64");
    target.truncate(2);
    (!target.is_empty()).then_some(target)
}

/// The module graph of one crate: files whose top module `is_member` says.
fn graph(is_member: impl Fn(&str) -> bool, root_kw: &str) -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut g = Graph::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let me = module_of(&rel);
        if me.is_empty() || rel.starts_with("bin/") || !is_member(&me[0]) || rel.contains("/tests")
        {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for t in references(&code(&text), &me, root_kw) {
            // Top level between top modules; inside one, its sub-modules.
            let (a, b) = if t[0] != me[0] {
                (me[0].clone(), t[0].clone())
            } else if me.len() > 1 && t.len() > 1 && me[1] != t[1] {
                (format!("{}/{}", me[0], me[1]), format!("{}/{}", t[0], t[1]))
            } else {
                continue;
            };
            // Only names that are modules (a file or a directory).
            let exists = |m: &str| {
                let m = m.replacen("arch/", "arch/aarch64/", 1);
                root.join(format!("{m}.rs")).exists() || root.join(&m).is_dir()
            };
            if exists(&b) {
                g.entry(a).or_default().insert(b);
            }
        }
    }
    g
}

/// The circles of `g` (strongly connected parts of more than one module).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = g.keys().chain(g.values().flatten()).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let all: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        let mut c: Vec<String> = nodes
            .iter()
            .filter(|m| all[*n].contains(**m) && all[*m].contains(*n))
            .map(|m| m.to_string())
            .collect();
        c.sort();
        if c.len() > 1 && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

fn image() -> Graph {
    graph(|top| IMAGE.contains(&top), "crate")
}

fn library() -> Graph {
    graph(|top| !IMAGE.contains(&top), "crate")
}

#[test]
fn no_import_circle_in_the_library() {
    let c = circles(&library());
    assert!(
        c.is_empty(),
        "library modules that import each other: {c:?}"
    );
}

#[test]
fn no_import_circle_in_the_image() {
    let c = circles(&image());
    assert!(c.is_empty(), "image modules that import each other: {c:?}");
}

#[test]
fn arch_is_a_leaf() {
    let g = image();
    let up: Vec<&String> = g
        .get("arch")
        .into_iter()
        .flatten()
        .filter(|m| !m.starts_with("arch") && *m != "drivers")
        .collect();
    assert!(up.is_empty(), "arch imports image modules above it: {up:?}");
}
