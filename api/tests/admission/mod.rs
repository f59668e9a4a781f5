//! The shared table of invalid Experiments (`cases.yaml`): read by the validation test here and
//! by the operator's end-to-end test against the real API server (`#[path]`-included there).

use serde_json::Value;

pub struct Case {
    pub name: String,
    /// The whole Experiment, base and patch merged.
    pub experiment: Value,
    pub field: String,
    /// `server` (the CRD refuses it) or `operator` (stored, then refused by validation).
    pub caught: String,
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn table() -> Value {
    serde_yaml::from_str(include_str!("cases.yaml")).expect("cases.yaml parses")
}

pub fn cases() -> Vec<Case> {
    let table = table();
    table["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let mut experiment = table["base"].clone();
            merge(&mut experiment, &c["patch"]);
            let s = |k: &str| {
                c[k].as_str()
                    .unwrap_or_else(|| panic!("case {c}: {k}"))
                    .to_string()
            };
            Case {
                name: s("name"),
                experiment,
                field: s("field"),
                caught: s("caught"),
            }
        })
        .collect()
}

pub fn base() -> Value {
    table()["base"].clone()
}
