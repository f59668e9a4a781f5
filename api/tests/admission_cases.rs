//! Every invalid Experiment of the shared table (`admission/cases.yaml`) is refused by the
//! operator's own validation, naming its field, whether or not the API server would refuse it
//! first (the local runner has no API server); the base is valid. The API server's half runs in
//! the operator's end-to-end test on the real control plane.

mod admission;

use orchestra_api::ExperimentSpec;

#[test]
fn validation_refuses_every_case_naming_its_field() {
    let base = serde_yaml::to_string(&admission::base()).unwrap();
    ExperimentSpec::parse_resource(&base, "base").expect("the base is valid");
    let cases = admission::cases();
    assert!(cases.iter().filter(|c| c.caught == "server").count() >= 15);
    for c in cases {
        assert!(
            matches!(c.caught.as_str(), "server" | "operator"),
            "{}: caught {}",
            c.name,
            c.caught
        );
        let text = serde_yaml::to_string(&c.experiment).unwrap();
        let err = ExperimentSpec::parse_resource(&text, &c.name)
            .expect_err(&format!("{} is accepted by validation", c.name))
            .to_string();
        assert!(
            err.contains(&c.field),
            "{}: the error does not name {}: {err}",
            c.name,
            c.field
        );
    }
}
