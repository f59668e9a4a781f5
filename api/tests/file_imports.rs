//! No import loops between the files of a crate: for every crate of the workspace, each file's
//! `crate::` and `super::` paths (in `use` lines and inline, outside tests and comments) are
//! resolved to the file that defines the module they name, following the re-exports of a
//! module's root; the files and those edges must form no cycle. A loop means one concept lives
//! in two rooms; the fix is to move the shared thing to the module that owns it.

use std::collections::{BTreeMap, BTreeSet};
mod sources;

use std::path::{Path, PathBuf};

use sources::{rust_files, workspace, CRATES};

/// The module path of a file under `src/` ("" for the crate root), or None for binaries.
fn module_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().map(String::as_str) == Some("bin") {
        return None;
    }
    let mut parts = parts;
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    Some(parts.join("::"))
}

/// One path a file names: whether it is a `pub use` (a re-export), and its text.
struct Named {
    reexport: bool,
    path: String,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths of a `use` tree (`a::{b, c::{d, e as f}}` -> a::b, a::c::d, a::c::e).
fn expand(tree: &str) -> Vec<String> {
    // `x as y`: the alias goes (the path is what matters), then the spaces.
    let mut kept = Vec::new();
    let mut tokens = tree.split_whitespace();
    while let Some(t) = tokens.next() {
        if t == "as" {
            let alias = tokens.next().unwrap_or_default();
            kept.push(alias.trim_start_matches(is_ident));
        } else {
            kept.push(t);
        }
    }
    let tree = kept.concat();
    fn walk(s: &str, prefix: &str, out: &mut Vec<String>) {
        let mut depth = 0;
        let mut item = String::new();
        let mut items = Vec::new();
        for c in s.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if c == ',' && depth == 0 {
                items.push(std::mem::take(&mut item));
            } else {
                item.push(c);
            }
        }
        items.push(item);
        for it in items.into_iter().filter(|i| !i.is_empty()) {
            if let (Some(open), Some(close)) = (it.find('{'), it.rfind('}')) {
                walk(&it[open + 1..close], &format!("{prefix}{}", &it[..open]), out);
            } else {
                out.push(format!("{prefix}{it}"));
            }
        }
    }
    let mut out = Vec::new();
    walk(&tree, "", &mut out);
    out
}

/// The `crate::`/`super::`/`self::` paths a file names outside its tests and comments.
fn named_paths(text: &str) -> Vec<Named> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let top_level_use = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p.starts_with("pub"), rest)));
        if let Some((reexport, rest)) = top_level_use {
            let mut stmt = rest.to_string();
            while !stmt.trim_end().ends_with(';') {
                match lines.next() {
                    Some(more) => stmt.push_str(more.trim()),
                    None => break,
                }
            }
            let stmt = stmt.trim_end().trim_end_matches(';');
            out.extend(expand(stmt).into_iter().map(|path| Named { reexport, path }));
            continue;
        }
        // Inline paths: `crate::a::b(...)`, `super::x::Y`.
        for start in ["crate::", "super::"] {
            let mut from = 0;
            while let Some(i) = line[from..].find(start) {
                let at = from + i;
                from = at + start.len();
                if line[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| is_ident(c) || c == ':')
                {
                    continue;
                }
                let end = line[at..]
                    .find(|c: char| !(is_ident(c) || c == ':'))
                    .map_or(line.len(), |e| at + e);
                out.push(Named {
                    reexport: false,
                    path: line[at..end].trim_end_matches(':').to_string(),
                });
            }
        }
    }
    out
}

/// The file graph of one crate: module -> modules it names.
struct Crate {
    files: BTreeMap<String, PathBuf>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn absolute(module: &str, path: &str) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    match segs.first().copied() {
        Some("crate") => {
            base.clear();
            segs.remove(0);
        }
        Some("super") => {
            while segs.first() == Some(&"super") {
                base.pop();
                segs.remove(0);
            }
        }
        Some("self") => {
            segs.remove(0);
        }
        _ => return None,
    }
    Some(base.into_iter().chain(segs).map(str::to_string).collect())
}

fn crate_graph(dir: &Path) -> Crate {
    let src = dir.join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let mut files = BTreeMap::new();
    let mut named = BTreeMap::new();
    for p in paths {
        let Some(module) = module_of(p.strip_prefix(&src).unwrap()) else {
            continue;
        };
        named.insert(module.clone(), named_paths(&std::fs::read_to_string(&p).unwrap()));
        files.insert(module, p);
    }
    // A path of a `use` may also start at a child module (`pub use experiment::Experiment;`).
    let absolute = |module: &str, path: &str| -> Option<Vec<String>> {
        absolute(module, path).or_else(|| {
            let child = path.split("::").next()?;
            let child = if module.is_empty() {
                child.to_string()
            } else {
                format!("{module}::{child}")
            };
            files
                .contains_key(&child)
                .then(|| absolute(module, &format!("self::{path}")))?
        })
    };
    // Re-exports: (module, name) -> the absolute path it stands for.
    let mut reexports: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (module, paths) in &named {
        for n in paths.iter().filter(|n| n.reexport) {
            if let Some(abs) = absolute(module, &n.path) {
                if let Some(last) = abs.last() {
                    reexports.insert((module.clone(), last.clone()), abs.clone());
                }
            }
        }
    }
    let resolve = |abs: &[String]| -> String {
        let mut abs = abs.to_vec();
        for _ in 0..8 {
            let k = (0..=abs.len())
                .rev()
                .find(|&k| files.contains_key(&abs[..k].join("::")))
                .unwrap_or(0);
            let module = abs[..k].join("::");
            match abs
                .get(k)
                .and_then(|name| reexports.get(&(module.clone(), name.clone())))
            {
                Some(target) if *target != abs => abs = target.clone(),
                _ => return module,
            }
        }
        abs.join("::")
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, paths) in &named {
        let is_root = module.is_empty() || files[module].ends_with("mod.rs");
        for n in paths {
            // A module root's re-exports route to its children; they are not its dependencies.
            if n.reexport && is_root {
                continue;
            }
            let Some(abs) = absolute(module, &n.path) else {
                continue;
            };
            let target = resolve(&abs);
            if target != *module && !target.is_empty() && files.contains_key(&target) {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    Crate { files, edges }
}

/// The strongly connected components of more than one file (Tarjan).
fn loops(c: &Crate) -> Vec<Vec<String>> {
    struct State<'a> {
        c: &'a Crate,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.c.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.found.push(comp);
            }
        }
    }
    let mut s = State {
        c,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in c.files.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn the_paths_of_a_use_tree_are_expanded() {
    assert_eq!(
        expand("crate::a::{b, c::{d, E as F}, self}"),
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::E",
            "crate::a::self"
        ]
    );
    let named = named_paths(
        "use super::x::Y;\nfn f() { crate::a::b(); }\n// crate::not::this\n#[cfg(test)]\nuse crate::z;\n",
    );
    let paths: Vec<&str> = named.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, ["super::x::Y", "crate::a::b"]);
}

#[test]
fn a_loop_between_two_files_is_found() {
    let dir = std::env::temp_dir().join(format!("orchestra-imports-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("k8s")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod k8s;\npub use k8s::a::A;\n").unwrap();
    std::fs::write(src.join("k8s/mod.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(src.join("k8s/a.rs"), "use super::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("k8s/b.rs"), "pub struct B(crate::A);\n").unwrap();
    let found = loops(&crate_graph(&dir));
    std::fs::write(src.join("k8s/b.rs"), "pub struct B;\n").unwrap();
    let open = loops(&crate_graph(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        [vec!["k8s::a".to_string(), "k8s::b".to_string()]],
        "through the root's re-export"
    );
    assert!(open.is_empty(), "{open:?}");
}

#[test]
fn no_crate_has_an_import_loop_between_its_files() {
    let mut problems = Vec::new();
    for name in CRATES {
        let c = crate_graph(&workspace().join(name));
        assert!(c.files.len() > 1, "{name}: no source files found");
        for comp in loops(&c) {
            let edges: Vec<String> = comp
                .iter()
                .flat_map(|m| {
                    c.edges[m]
                        .iter()
                        .filter(|t| comp.contains(t))
                        .map(move |t| format!("{m} -> {t}"))
                })
                .collect();
            problems.push(format!("{name}: {}", edges.join(", ")));
        }
    }
    assert!(
        problems.is_empty(),
        "import loops between files (move the shared thing to the module that owns it):\n{}",
        problems.join("\n")
    );
}
