//! The edge binary's errors as a user meets them: one line naming what is wrong, also with
//! RUST_BACKTRACE set (common on developers' machines); a backtrace is for bugs.

use std::process::Command;

fn edge(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra-edge"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_user_error_is_one_line_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.safetensors");
    let damaged = dir.path().join("damaged.safetensors");
    std::fs::write(&damaged, b"not a model file").unwrap();
    let scan = dir.path().join("scan.nii");
    std::fs::write(&scan, b"").unwrap();
    for model in [&missing, &damaged] {
        let (ok, err) = edge(&[
            "encode",
            "--model",
            model.to_str().unwrap(),
            scan.to_str().unwrap(),
        ]);
        assert!(!ok);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ") && err.contains(model.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
        assert!(!err.contains("backtrace"), "{err}");
    }
}
