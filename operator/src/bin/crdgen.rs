//! Prints the CustomResourceDefinitions of Experiment and Trial as YAML (`manifests/crds.yaml`
//! is this output; a test checks that they agree).

fn main() {
    print!("{}", orchestra_operator::k8s::crds_yaml());
}
