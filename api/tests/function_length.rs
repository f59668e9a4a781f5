//! No function in any crate's `src/` longer than 80 lines (signature to closing brace, tests
//! included): a longer one does several things that want names of their own. The sources are
//! rustfmt's, so a function ends at the first line that closes a brace at its own indent.
//! Exceptions go in `LONG_ALLOWED` with the reason (tables of data, generated code); today
//! there are none.

mod sources;

use sources::{rust_files, workspace, CRATES};

const MAX_LINES: usize = 80;

/// (file under the workspace, function) allowed to be longer, each with its reason.
const LONG_ALLOWED: [(&str, &str, &str); 0] = [];

/// The name of the function a line starts, if it starts one with a body.
fn function_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    loop {
        let before = rest;
        for qualifier in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(qualifier).unwrap_or(rest);
        }
        if rest == before {
            break;
        }
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    (end > 0 && !line.trim_end().ends_with(';')).then(|| &rest[..end])
}

/// Each function of `text` longer than `MAX_LINES`: (name, first line, lines).
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = function_name(lines[i]) else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - lines[i].trim_start().len();
        // The body opens on the signature's last line.
        let mut open = i;
        while open < lines.len() && !lines[open].trim_end().ends_with('{') {
            open += 1;
        }
        let close = (open + 1..lines.len()).find(|&k| {
            let l = lines[k];
            l.len() - l.trim_start().len() == indent && l.trim_start().starts_with('}')
        });
        if let Some(close) = close {
            let n = close - i + 1;
            if n > MAX_LINES {
                found.push((name.to_string(), i + 1, n));
            }
        }
        i = open + 1;
    }
    found
}

#[test]
fn the_scanner_measures_a_function_from_signature_to_closing_brace() {
    let body = "    let x = 1;\n".repeat(MAX_LINES - 1);
    let long = format!("pub fn long(\n    a: u32,\n) -> u32 {{\n{body}}}\n\nfn short() {{}}\n");
    assert_eq!(
        long_functions(&long),
        vec![("long".to_string(), 1, MAX_LINES + 3)]
    );
    let just = format!("fn fits() {{\n{}}}\n", "    x();\n".repeat(MAX_LINES - 2));
    assert!(long_functions(&just).is_empty());
    assert_eq!(function_name("    async fn run(self: Arc<Self>) {"), Some("run"));
    assert_eq!(function_name("    fn declared(&self);"), None);
}

#[test]
fn no_function_in_src_is_longer_than_80_lines() {
    let root = &workspace();
    let mut long = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        files.sort();
        for file in files {
            let rel = file.strip_prefix(root).unwrap().display().to_string();
            let text = std::fs::read_to_string(&file).unwrap();
            for (name, line, n) in long_functions(&text) {
                if !LONG_ALLOWED.iter().any(|(f, fun, _)| *f == rel && *fun == name) {
                    long.push(format!("{rel}:{line} {name}: {n} lines"));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines (split them, or list them in LONG_ALLOWED with the reason):\n{}",
        long.join("\n")
    );
}
