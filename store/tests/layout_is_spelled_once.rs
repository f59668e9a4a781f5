//! The store layout is spelled in one module: no other source file of the workspace forms a
//! store key from its own string literals. Tests may spell keys (they check the documented
//! layout from outside, as do `#[cfg(test)]` modules); library and binary code must ask
//! `orchestra_store::layout`.

use std::path::{Path, PathBuf};

/// Object names of the layout, as they would appear inside a string literal.
const NAMES: [&str; 9] = [
    "result.json",
    "metrics.jsonl",
    "progress.json",
    "params.json",
    "weights.safetensors",
    "optimizer.safetensors",
    "experiment.yaml",
    "/state.json",
    "step-",
];

fn workspace() -> PathBuf {
    let store = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    store
        .parent()
        .expect("the store crate lies in the workspace")
        .to_path_buf()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals of a line of code (comments skipped; escaped quotes kept inside).
fn literals(line: &str) -> Vec<String> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        match (&mut current, c) {
            (None, '"') => current = Some(String::new()),
            (None, '/') if code.contains("//") && chars.as_str().starts_with('/') => break,
            (Some(s), '\\') => {
                s.push(c);
                if let Some(n) = chars.next() {
                    s.push(n);
                }
            }
            (Some(_), '"') => out.push(current.take().unwrap()),
            (Some(s), _) => s.push(c),
            (None, _) => {}
        }
    }
    out
}

#[test]
fn only_the_layout_module_spells_store_keys() {
    let root = workspace();
    let layout = root.join("store/src/layout.rs");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&root).unwrap().flatten() {
        let src = krate.path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    assert!(
        files.contains(&layout),
        "the layout module was not found under {}",
        root.display()
    );
    assert!(files.len() > 20, "only {} source files found", files.len());
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| **f != layout) {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests at the end of a file check the layout from outside, as integration tests do.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            for lit in literals(line) {
                let name = NAMES
                    .iter()
                    .find(|name| lit.contains(*name))
                    .or((lit == "latest").then_some(&"latest"));
                if let Some(name) = name {
                    offenders.push(format!("{}:{}: \"{lit}\" spells {name}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "store keys spelled outside store/src/layout.rs:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_literal_scanner_finds_keys_and_skips_comments() {
    assert_eq!(
        literals(r#"let k = format!("{base}/result.json");"#),
        vec!["{base}/result.json"]
    );
    assert_eq!(
        literals(r#"a("x\"y", "z") // "result.json""#),
        vec![r#"x\"y"#, "z"]
    );
    assert!(literals(r#"// "result.json""#).is_empty());
}
