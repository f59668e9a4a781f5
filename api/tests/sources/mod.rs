//! The workspace's Rust sources as the structure tests read them: its crates and their files.

use std::path::{Path, PathBuf};

/// Every crate of the workspace.
pub const CRATES: [&str; 8] = [
    "api",
    "store",
    "codec",
    "edge",
    "report",
    "worker",
    "operator",
    "node-agent",
];

/// The workspace's root folder.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`, appended to `out`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
