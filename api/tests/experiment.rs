//! Experiment resources: the committed files round-trip, and every broken rule is reported with
//! its field path, value and reason.

use orchestra_api::{Experiment, ExperimentSpec, SearchSpace, Variant};

fn repo_file(name: &str) -> String {
    let path = manifest_dir().join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_experiments_validate_and_round_trip() {
    for file in [
        "experiments/quickstart.yaml",
        "experiments/isic2017.yaml",
        "experiments/isic2017-cpu.yaml",
        "experiments/search-asha.yaml",
        "experiments/acdc-3d.yaml",
        "experiments/cardiac-3d-gpu.yaml",
        "experiments/mmwhs-ct.yaml",
    ] {
        let exp = orchestra_api::experiment_file::load(&manifest_dir().join("..").join(file)).unwrap();
        // No committed file names a machine's absolute path for its data.
        assert!(!repo_file(file).contains("file:///work"), "{file}");
        let again: Experiment = serde_yaml::from_str(&serde_yaml::to_string(&exp).unwrap()).unwrap();
        assert_eq!(exp.spec, again.spec, "{file}");
        assert_eq!(exp.metadata.name, again.metadata.name);
    }
    let qs = ExperimentSpec::parse_resource(&repo_file("experiments/quickstart.yaml"), "q").unwrap();
    assert_eq!(qs.spec.variants, Variant::ALL);
    assert!(matches!(&qs.spec.search["lambdaRate"], SearchSpace::List { values } if values.len() == 2));
}

const BASE: &str = "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: { name: exp }
spec:
  dataset: synthetic://lesion
  model: { inputSize: 64 }
  variants: [D2, D4]
  steps: 10
  store: file:///tmp/x
";

fn problems(extra: &str) -> String {
    let text = format!("{BASE}{extra}");
    ExperimentSpec::parse_resource(&text, "exp.yaml")
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn the_base_document_is_valid() {
    ExperimentSpec::parse_resource(BASE, "exp.yaml").unwrap();
}

#[test]
fn each_rule_names_field_value_and_reason() {
    for (extra, needles) in [
        (
            "  search: {}\n  parallelism: 0\n",
            vec!["spec.parallelism = 0: must be at least 1"],
        ),
        (
            "  search: { lambdaRate: { type: list, values: [] } }\n",
            vec!["spec.search.lambdaRate.values = []"],
        ),
        (
            "  search: { lr: { type: uniform, min: 0.5, max: 0.1, points: 2 } }\n",
            vec!["spec.search.lr.min = 0.5", "not above max (0.1)"],
        ),
        (
            "  search: { lr: { type: logUniform, min: 0, max: 0.1, points: 2 } }\n",
            vec!["spec.search.lr.min = 0", "above 0 for logUniform"],
        ),
        (
            "  search: { lr: { type: uniform, min: 0.1, max: 0.2 } }\n",
            vec!["spec.search.lr.points", "grid search needs points"],
        ),
        (
            "  search: { batchSize: { type: list, values: [4.5] } }\n",
            vec!["spec.search.batchSize.values = 4.5", "whole number"],
        ),
        (
            "  search: { batchSize: { type: intRange, min: 8, max: 4 } }\n",
            vec!["spec.search.batchSize.min = 8"],
        ),
        (
            "  search: { momentum: { type: list, values: [1] } }\n",
            vec!["spec.search.momentum = momentum: unknown parameter", "lambdaRate"],
        ),
        ("  maxTrials: 0\n", vec!["spec.maxTrials = 0"]),
        (
            "  hyper: { batchSize: 0 }\n",
            vec!["spec.hyper.batchSize = 0: must be at least 1"],
        ),
        (
            "  hyper: { reconstructionWeight: -0.5 }\n",
            vec!["spec.hyper.reconstructionWeight = -0.5: must be a finite number >= 0"],
        ),
        (
            "  resources: { cpu: '1', memory: 1Gi, gpus: 1 }\n",
            vec!["spec.device = cpu: resources.gpus > 0 needs device: cuda"],
        ),
        (
            "  resources: { cpu: '1', memory: 1Gi, trialsPerGpu: 0 }\n",
            vec!["spec.resources.trialsPerGpu = 0: must be 1..=16"],
        ),
        (
            "  resources: { cpu: '1', memory: 1Gi, trialsPerGpu: 2 }\n",
            vec!["spec.resources.trialsPerGpu = 2: packing trials onto a GPU needs device: cuda"],
        ),
        (
            "  device: cuda\n  workersPerTrial: 2\n  resources: { cpu: '1', memory: 1Gi, gpus: 1, trialsPerGpu: 4 }\n",
            vec!["spec.resources.trialsPerGpu = 4: packs single-worker trials"],
        ),
        (
            "  device: cuda\n  resources: { cpu: '1', memory: 1Gi, gpus: 1, gpuResource: gpu.shared }\n",
            vec!["spec.resources.gpuResource = gpu.shared: must be an extended resource name"],
        ),
        (
            "  algorithm: { type: random, seed: 1, samples: 0 }\n",
            vec!["spec.algorithm.samples = 0"],
        ),
        (
            "  objective: { bppBudget: -1 }\n",
            vec!["spec.objective.bppBudget = -1"],
        ),
    ] {
        let msg = problems(extra);
        assert!(msg.starts_with("exp.yaml: "), "{msg}");
        for n in needles {
            assert!(msg.contains(n), "missing {n:?} for {extra:?} in: {msg}");
        }
    }
}

#[test]
fn unknown_variants_stores_and_fields_are_rejected() {
    let text = BASE.replace("[D2, D4]", "[D2, D9]");
    let msg = ExperimentSpec::parse_resource(&text, "v.yaml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("D9"), "{msg}");
    let text = BASE.replace("file:///tmp/x", "ftp://host/x");
    let msg = ExperimentSpec::parse_resource(&text, "s.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("spec.store = ftp://host/x: unsupported scheme"),
        "{msg}"
    );
    let text = BASE.replace("file:///tmp/x", "file://relative");
    let msg = ExperimentSpec::parse_resource(&text, "s.yaml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absolute path"), "{msg}");
    let msg = problems("  parallelism: 2\n  paralelism: 3\n");
    assert!(msg.contains("paralelism"), "{msg}");
    let text = BASE.replace("variants: [D2, D4]", "variants: []");
    let msg = ExperimentSpec::parse_resource(&text, "e.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("spec.variants = []: must name at least one"),
        "{msg}"
    );
    let text = BASE.replace("[D2, D4]", "[D2]") + "  search: { lambdaRate: { type: list, values: [1] } }\n";
    let msg = ExperimentSpec::parse_resource(&text, "a.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("spec.search.lambdaRate = lambdaRate: affects none of spec.variants"),
        "{msg}"
    );
    let text = BASE.replace("name: exp", "name: Exp_1");
    let msg = ExperimentSpec::parse_resource(&text, "n.yaml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("metadata.name = Exp_1"), "{msg}");
}

/// The crate's folder, as cargo says when it runs the test: the path compiled in would be the
/// one of whichever checkout last built this binary in a shared target folder.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

#[test]
fn swept_values_that_make_invalid_trials_are_refused_by_the_trials_own_rules() {
    for (extra, needles) in [
        (
            "  search: { lambdaRate: { type: list, values: [0.1, -1] } }\n",
            vec!["spec.search.lambdaRate = -1: gives an invalid trial: hyper.lambdaRate"],
        ),
        (
            "  search: { reconstructionWeight: { type: list, values: [0, -2] } }\n",
            vec!["spec.search.reconstructionWeight = -2: gives an invalid trial: hyper.reconstructionWeight"],
        ),
        (
            "  search: { model.downsample: { type: intRange, min: 2, max: 4 } }\n",
            vec!["spec.search.model.downsample = 3: gives an invalid trial: model.downsample"],
        ),
        (
            "  search: { beta1: { type: uniform, min: 0.5, max: 1.5, points: 3 } }\n",
            vec!["spec.search.beta1 = 1.5: gives an invalid trial: hyper.beta1"],
        ),
        (
            "  search: { batchSize: { type: list, values: [0, 1000000000000] } }\n",
            vec![
                "spec.search.batchSize = 0: gives an invalid trial: hyper.batchSize",
                "spec.search.batchSize = 1000000000000: is above the largest value the field holds (4294967295)",
            ],
        ),
    ] {
        let text = problems(extra);
        for needle in needles {
            assert!(text.contains(needle), "{extra}: {text}");
        }
    }
    // The ends of a valid range and every value of a valid list pass.
    ExperimentSpec::parse_resource(
        &format!("{BASE}  search: {{ lambdaRate: {{ type: logUniform, min: 0.01, max: 1.0, points: 3 }}, model.downsample: {{ type: list, values: [4, 8] }} }}\n"),
        "exp.yaml",
    )
    .unwrap();
}

#[test]
fn spaces_of_billions_of_points_are_refused_before_anything_is_listed() {
    for (extra, needle) in [
        (
            "  search: { lambdaRate: { type: uniform, min: 0.01, max: 1.0, points: 4000000000 } }\n",
            "spec.search = 4000000000: gives 4000000000 candidates for D4, above the limit of 100000",
        ),
        (
            "  search: { batchSize: { type: intRange, min: 1, max: 9223372036854775807 } }\n",
            "candidates for D2, above the limit of 100000",
        ),
        (
            "  search: { lr: { type: uniform, min: 0.001, max: 0.01, points: 1000 }, beta1: { type: uniform, min: 0.1, max: 0.9, points: 1000 } }\n",
            "spec.search = 1000000: gives 1000000 candidates for D2",
        ),
        (
            "  algorithm: { type: random, seed: 1, samples: 4000000000 }\n  search: { lr: { type: uniform, min: 0.001, max: 0.01 } }\n",
            "spec.algorithm.samples = 4000000000: gives 4000000000 candidates",
        ),
    ] {
        let text = problems(extra);
        assert!(text.contains(needle), "{extra}: {text}");
    }
}
