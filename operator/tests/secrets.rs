//! Known secrets fed through every error path a user can reach from the binaries: store and
//! dataset URIs with credentials (refused, pointing to the environment and storeSecret), a
//! malformed kubeconfig with a token in the quoted lines, a kubeconfig whose server is
//! unreachable, a trial spec given to the worker. No output may contain a secret.

use std::path::Path;
use std::process::Command;

const KEY_ID: &str = "AKIDSECRETKEYID7";
const SECRET: &str = "wJalrXUtnSECRET0123";
const TOKEN: &str = "eyJhbGciSECRETTOKEN42";

fn output(cmd: &mut Command) -> String {
    let out = cmd.env("RUST_BACKTRACE", "0").output().unwrap();
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [KEY_ID, SECRET, TOKEN] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

fn experiment(dir: &Path, name: &str, store: &str, dataset: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: orchestra.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: {name} }}\nspec:\n  \
             dataset: {dataset}\n  model: {{ inputSize: 64 }}\n  variants: [D4]\n  steps: 10\n  store: {store}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn credentials_in_uris_are_refused_without_being_shown() {
    let dir = tempfile::tempdir().unwrap();
    let creds = format!("s3://{KEY_ID}:{SECRET}@bucket/runs");
    let signed = format!("az://container/runs?sv=2020&sig={SECRET}");
    let cases = [
        experiment(dir.path(), "store", &creds, "synthetic://lesion?n=16&size=64"),
        experiment(dir.path(), "signed", &signed, "synthetic://lesion?n=16&size=64"),
        experiment(
            dir.path(),
            "dataset",
            "file:///tmp/runs",
            &format!("{creds}/isic"),
        ),
    ];
    for file in &cases {
        for command in ["validate", "run"] {
            let text = output(
                Command::new(env!("CARGO_BIN_EXE_orchestra"))
                    .arg(command)
                    .arg(file),
            );
            assert_no_secret(command, &text);
            assert!(
                text.contains("storeSecret") && text.contains("AWS_SECRET_ACCESS_KEY"),
                "{command}: the error does not say where credentials go:\n{text}"
            );
        }
    }
    let err = orchestra_store::Store::open(&creds).err().unwrap().to_string();
    assert_no_secret("Store::open", &err);
    assert!(err.contains("storeSecret"), "{err}");
}

#[test]
fn the_worker_refuses_a_trial_spec_with_credentials_without_showing_them() {
    let worker = Path::new(env!("CARGO_BIN_EXE_orchestra")).with_file_name("orchestra-worker");
    if !worker.exists() {
        eprintln!(
            "skipped: {} is not built (cargo test --workspace builds it)",
            worker.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("trial.yaml");
    std::fs::write(
        &spec,
        format!(
            "experiment: e\ntrial: e-d4-000\nvariant: D4\ndataset: synthetic://lesion?n=16&size=64\n\
             model: {{ inputSize: 64 }}\nstore: s3://{KEY_ID}:{SECRET}@bucket/runs\nsteps: 2\n"
        ),
    )
    .unwrap();
    let text = output(Command::new(worker).args(["train", "--spec"]).arg(&spec));
    assert_no_secret("orchestra-worker train", &text);
    assert!(text.contains("storeSecret"), "{text}");
}

fn operator(kubeconfig: &Path) -> String {
    output(
        Command::new(env!("CARGO_BIN_EXE_orchestra-operator"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "debug"),
    )
}

#[test]
fn the_operator_never_echoes_a_kubeconfig_token() {
    let dir = tempfile::tempdir().unwrap();
    let malformed = dir.path().join("malformed");
    std::fs::write(
        &malformed,
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: {TOKEN}\n    \
             password: {SECRET}\n    bad: [unclosed\ncontexts:\n- name: x\n"
        ),
    )
    .unwrap();
    let text = operator(&malformed);
    assert!(text.contains("no usable kubeconfig"), "{text}");
    assert_eq!(
        text.matches("failed to parse kubeconfig YAML").count(),
        1,
        "shown once: {text}"
    );
    assert_no_secret("a malformed kubeconfig", &text);

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = dir.path().join("unreachable");
    std::fs::write(
        &unreachable,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"http://{KEY_ID}:{SECRET}@127.0.0.1:{closed}\"}}}}]\n\
             users: [{{name: u, user: {{token: {TOKEN}}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    assert_no_secret("an unreachable API server", &operator(&unreachable));
}
