//! The shape of node/src, checked: every file reads in one sitting (at most
//! [`MAX_LINES`] lines before its `#[cfg(test)]` module), files of different folders never
//! import each other in a circle, and imports point down the layers that node/src/lib.rs
//! describes (at most [`MAX_UP`] exceptions, each named here).
//!
//! The import graph is read from the source text: every `crate::…` and `super::…` path
//! (in `use` items, braces expanded, and inline) is resolved to the file that defines it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;
const MAX_UP: usize = 2;

/// The layers of node/src, lowest first: a file may import files of its own layer or
/// below. A path names a file or, ending in '/', a folder.
const LAYERS: &[&[&str]] = &[
    // Leaves: they import nothing of ours.
    &["addr.rs", "ids.rs", "clock.rs", "backoff.rs", "logs.rs"],
    &["config.rs", "config/", "identity.rs"],
    &["media/", "onvif/"],
    &["auth/"],
    &["record/"],
    &["discovery/"],
    &["net/"],
    &["stream/"],
    &["member.rs", "grants.rs", "fleetsync.rs", "reach/", "attest/"],
    &["watch/", "relay/", "ptz/", "events/", "talk/"],
    &["nvr/", "gateway/"],
    &["node.rs", "lib.rs"],
];

/// Imports that run back up, on purpose (from, to, why).
const ALLOWED_UP: &[(&str, &str, &str)] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src())
        .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
}

/// Modules declared under `#[cfg(test)]` (files that are test code as a whole).
fn test_modules(all: &[PathBuf]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in all {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for w in lines.windows(2) {
            if w[0].trim() == "#[cfg(test)]" {
                if let Some(name) = w[1].trim().strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                    let dir = module_dir(f);
                    for cand in [dir.join(format!("{name}.rs")), dir.join(name).join("mod.rs")] {
                        out.insert(rel(&cand));
                    }
                }
            }
        }
    }
    out
}

/// The folder a file's child modules live in.
fn module_dir(f: &Path) -> PathBuf {
    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let parent = f.parent().map(Path::to_path_buf).unwrap_or_default();
    if matches!(name, "mod.rs" | "lib.rs" | "main.rs") {
        parent
    } else {
        parent.join(name.trim_end_matches(".rs"))
    }
}

/// The part of a file before its test module.
fn code_part(text: &str) -> &str {
    match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The module path (from the crate root) of a file.
fn module_of(f: &str) -> Vec<String> {
    let mut parts: Vec<String> = f.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or_default().trim().to_owned()];
    };
    let prefix = &tree[..open];
    let close = tree.rfind('}').filter(|c| *c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(&format!("{prefix}{}", p.trim())))
        .collect()
}

/// Every `crate::`/`super::` path a file's code uses, as module paths from the root.
fn paths_used(file: &str, code: &str) -> Vec<Vec<String>> {
    let me = module_of(file);
    // Comments (docs name other modules without importing them).
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let mut raw = Vec::new();
    // `use` items, possibly over several lines.
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let t = line.trim_start();
        let item = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|k| t.strip_prefix(k));
        if let Some(item) = item {
            let at = offset + (line.len() - item.len());
            let end = code[at..].find(';').map_or(code.len(), |e| at + e);
            raw.extend(expand(&code[at..end]));
        }
        offset += line.len();
    }
    // Inline paths.
    for (i, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let tail: String = code[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        raw.push(tail);
    }
    let mut out = Vec::new();
    for p in raw {
        let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let mut path: Vec<String> = match segs.first() {
            Some(&"crate") => Vec::new(),
            Some(&"super") => {
                // `super` of a::b (a/b.rs) is a; of a (a/mod.rs) the root.
                let mut base = me.clone();
                for _ in segs.iter().take_while(|s| **s == "super") {
                    base.pop();
                }
                base
            }
            _ => continue,
        };
        path.extend(
            segs.iter()
                .skip_while(|s| **s == "crate" || **s == "super")
                .map(|s| (*s).to_owned()),
        );
        out.push(path);
    }
    out
}

/// The file a module path lands in: the longest prefix that is a file of the crate.
fn resolve(path: &[String], by_module: &HashMap<Vec<String>, String>) -> Option<String> {
    (1..=path.len()).rev().find_map(|n| by_module.get(&path[..n]).cloned())
}

fn layer_of(file: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| {
        layer.iter().any(|p| {
            if p.ends_with('/') {
                file.starts_with(p)
            } else {
                file == *p
            }
        })
    })
}

fn folder(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(d, _)| d)
}

struct House {
    lines: BTreeMap<String, usize>,
    arrows: BTreeSet<(String, String)>,
}

fn house() -> House {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let tests = test_modules(&all);
    let mut texts = BTreeMap::new();
    for f in &all {
        let r = rel(f);
        // The daemon imports the library by its name, never by `crate::`.
        if tests.contains(&r) || r.starts_with("bin/") {
            continue;
        }
        texts.insert(r, std::fs::read_to_string(f).unwrap_or_default());
    }
    let by_module: HashMap<Vec<String>, String> = texts.keys().map(|f| (module_of(f), f.clone())).collect();
    let mut lines = BTreeMap::new();
    let mut arrows = BTreeSet::new();
    for (f, text) in &texts {
        let code = code_part(text);
        lines.insert(f.clone(), code.lines().count());
        for p in paths_used(f, code) {
            if let Some(to) = resolve(&p, &by_module) {
                if to != *f && f != "lib.rs" {
                    arrows.insert((f.clone(), to));
                }
            }
        }
    }
    House { lines, arrows }
}

#[test]
fn every_file_of_node_src_reads_in_one_sitting() {
    let h = house();
    assert!(
        h.lines.len() > 50,
        "read only {} files of {}",
        h.lines.len(),
        src().display()
    );
    let long: Vec<_> = h.lines.iter().filter(|(_, n)| **n > MAX_LINES).collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines before their tests: {long:?}"
    );
}

#[test]
fn files_of_different_folders_never_import_each_other_in_a_circle() {
    let h = house();
    assert!(!h.arrows.is_empty(), "no imports read");
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in &h.arrows {
        next.entry(a).or_default().push(b);
    }
    // Tarjan's strongly connected components.
    struct T<'a> {
        next: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        n: usize,
        out: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.n);
        t.low.insert(v, t.n);
        t.n += 1;
        t.stack.push(v);
        t.on.insert(v);
        for &w in t.next.get(v).map(Vec::as_slice).unwrap_or_default() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            t.out.push(comp);
        }
    }
    let mut t = T {
        next: &next,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        n: 0,
        out: Vec::new(),
    };
    let nodes: Vec<&str> = h.lines.keys().map(String::as_str).collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    let crossing: Vec<_> = t
        .out
        .into_iter()
        .filter(|c| c.len() > 1 && c.iter().map(|f| folder(f)).collect::<BTreeSet<_>>().len() > 1)
        .collect();
    assert!(crossing.is_empty(), "import circles across folders: {crossing:?}");
}

#[test]
fn imports_point_down_the_layers() {
    let h = house();
    let unplaced: Vec<_> = h.lines.keys().filter(|f| layer_of(f).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "files on no layer (add them to LAYERS): {unplaced:?}"
    );
    let up: Vec<_> = h
        .arrows
        .iter()
        .filter(|(a, b)| layer_of(a) < layer_of(b))
        .filter(|(a, b)| !ALLOWED_UP.iter().any(|(x, y, _)| a == x && b == y))
        .collect();
    assert!(up.is_empty(), "imports that run back up: {up:?}");
    assert!(
        ALLOWED_UP.len() <= MAX_UP,
        "more than {MAX_UP} imports allowed to run back up"
    );
}
