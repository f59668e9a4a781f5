//! Trial specs: parsing, defaults and validation messages.

use orchestra_api::{TrialSpec, Variant};

const MINIMAL: &str = "
experiment: exp
trial: t-1
variant: D4
dataset: synthetic://lesion
model: { inputSize: 128 }
steps: 10
store: file:///tmp/x
";

#[test]
fn minimal_spec_gets_working_defaults_and_round_trips() {
    let spec = TrialSpec::from_yaml(MINIMAL, "min.yaml").unwrap();
    assert_eq!(spec.variant, Variant::D4);
    assert_eq!(spec.world_size, 1);
    assert_eq!(spec.model.dims, 2);
    assert_eq!(spec.hyper.batch_size, 8);
    let again = TrialSpec::from_yaml(&serde_yaml::to_string(&spec).unwrap(), "again").unwrap();
    assert_eq!(spec, again);
}

#[test]
fn every_problem_is_reported_with_field_value_and_reason() {
    let text = MINIMAL.replace("t-1", "T_1").replace("steps: 10", "steps: 0")
        + "hyper: { batchSize: 0, lr: -1, beta1: 1.5 }\n";
    let err = TrialSpec::from_yaml(&text, "bad.yaml").unwrap_err();
    let msg = err.to_string();
    for needle in [
        "bad.yaml",
        "trial = T_1: must be 1-63 lowercase",
        "steps = 0: must be at least 1",
        "hyper.batchSize = 0",
        "hyper.lr = -1: must be a positive number",
        "hyper.beta1 = 1.5: must be in [0, 1)",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in {msg}");
    }
    assert_eq!(err.problems.len(), 5);
}

#[test]
fn model_rules() {
    let text = MINIMAL.replace(
        "{ inputSize: 128 }",
        "{ inputSize: 100, downsample: 16, dims: 4, depth: 9 }",
    );
    let msg = TrialSpec::from_yaml(&text, "m.yaml").unwrap_err().to_string();
    assert!(msg.contains("model.dims = 4"), "{msg}");
    assert!(
        msg.contains("model.downsample = 16: must divide model.inputSize (100)"),
        "{msg}"
    );
    assert!(msg.contains("model.depth = 9"), "{msg}");
    // g's and C's widths: each refused outside 1 to 256 by name, and taken at the edges.
    for field in ["decoderWidth", "encoderWidth"] {
        for bad in [0, 257] {
            let text = MINIMAL.replace(
                "{ inputSize: 128 }",
                &format!("{{ inputSize: 128, {field}: {bad} }}"),
            );
            let msg = TrialSpec::from_yaml(&text, "m.yaml").unwrap_err().to_string();
            assert!(
                msg.contains(&format!("model.{field} = {bad}: must be 1 to 256")),
                "{msg}"
            );
        }
        for good in [1, 256] {
            let text = MINIMAL.replace(
                "{ inputSize: 128 }",
                &format!("{{ inputSize: 128, {field}: {good} }}"),
            );
            let model = TrialSpec::from_yaml(&text, "m.yaml").unwrap().model;
            let (decoder, encoder) = (model.decoder_width, model.encoder_width);
            let taken = if field == "decoderWidth" { decoder } else { encoder };
            assert_eq!(taken, Some(good), "{field}");
            assert_eq!(decoder.or(encoder), Some(good), "{field} sets only itself");
            assert!(decoder.is_none() || encoder.is_none(), "{field} sets only itself");
        }
    }
}

#[test]
fn volume_patches() {
    let with = |model: &str| MINIMAL.replace("{ inputSize: 128 }", model);
    let spec = TrialSpec::from_yaml(
        &with("{ inputSize: 64, dims: 3, patch: [16, 64, 64], downsample: 8 }"),
        "p.yaml",
    )
    .unwrap();
    assert_eq!(spec.model.sides(), vec![16, 64, 64]);
    let cube = TrialSpec::from_yaml(&with("{ inputSize: 32, dims: 3 }"), "c.yaml").unwrap();
    assert_eq!(cube.model.sides(), vec![32, 32, 32]);
    for (model, needle) in [
        (
            "{ inputSize: 64, patch: [16, 64, 64] }",
            "applies to volumes only",
        ),
        ("{ inputSize: 64, dims: 3, patch: [64, 64] }", "three sides"),
        (
            "{ inputSize: 64, dims: 3, patch: [12, 64, 64], downsample: 8 }",
            "side 12 must be a multiple of C's downsampling factor 8",
        ),
        ("{ inputSize: 64, dims: 3, patch: [8, 64, 64] }", "factor 16"),
    ] {
        let msg = TrialSpec::from_yaml(&with(model), "bad.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("model.patch") && msg.contains(needle),
            "{model}: {msg}"
        );
    }
}

#[test]
fn unknown_fields_and_variants_are_rejected_by_name() {
    let msg = TrialSpec::from_yaml(&(MINIMAL.to_string() + "learningRate: 3\n"), "u.yaml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("learningRate"), "{msg}");
    let msg = TrialSpec::from_yaml(&MINIMAL.replace("D4", "D7"), "v.yaml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("D7"), "{msg}");
}
