//! What the generated CRD schemas must say for a real API server: schemars names Rust's unsigned
//! integers by formats Kubernetes does not know (`uint32`, `uint64`, `uint`; kube-apiserver
//! answers every apply with "unrecognized format" warnings), so each becomes the nearest
//! Kubernetes format with its bounds written out, and integer bounds are integers.

use serde_json::Value;

/// Rewrites every schema node of `v` in place.
pub fn kubernetes_formats(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let unsigned_max = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some((Some(u8::MAX as u64), "int32")),
                Some("uint16") => Some((Some(u16::MAX as u64), "int32")),
                Some("uint32") => Some((Some(u32::MAX as u64), "int64")),
                // int64's own range bounds it (an explicit 2^63-1 is refused: it does not
                // survive the server's float comparison).
                Some("uint64" | "uint") => Some((None, "int64")),
                _ => None,
            };
            if let Some((max, format)) = unsigned_max {
                map.insert("format".into(), Value::from(format));
                if map.get("minimum").and_then(Value::as_f64).is_none_or(|m| m < 0.0) {
                    map.insert("minimum".into(), Value::from(0));
                }
                if let (Some(max), false) = (max, map.contains_key("maximum")) {
                    map.insert("maximum".into(), Value::from(max));
                }
            }
            if map.get("type").and_then(Value::as_str) == Some("integer") {
                for bound in ["minimum", "maximum"] {
                    if let Some(f) = map.get(bound).and_then(Value::as_f64) {
                        if f.fract() == 0.0 && f.abs() < 9.0e15 {
                            map.insert(bound.into(), Value::from(f as i64));
                        }
                    }
                }
            }
            for child in map.values_mut() {
                kubernetes_formats(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(kubernetes_formats),
        _ => {}
    }
}

/// Adds CEL rules to the root schema of every version of `crd` (rules on `metadata.name` can
/// only stand there).
pub fn add_root_validations(crd: &mut Value, rules: Value) {
    let Some(versions) = crd["spec"]["versions"].as_array_mut() else {
        return;
    };
    for v in versions {
        let root = &mut v["schema"]["openAPIV3Schema"];
        if root.is_object() {
            root["x-kubernetes-validations"] = rules.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unsigned_formats_become_bounded_kubernetes_integers() {
        let mut v = json!({"properties": {
            "a": {"type": "integer", "format": "uint32", "minimum": 0.0},
            "b": {"type": "integer", "format": "uint64", "minimum": 0.0},
            "c": {"type": "array", "items": {"type": "integer", "format": "uint", "minimum": 0.0}},
            "d": {"type": "integer", "format": "uint32", "minimum": 1.0, "maximum": 10.0},
            "e": {"type": "number", "format": "double", "minimum": 0.0},
        }});
        kubernetes_formats(&mut v);
        let p = &v["properties"];
        assert_eq!(
            p["a"],
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295u64})
        );
        assert_eq!(
            p["b"],
            json!({"type": "integer", "format": "int64", "minimum": 0})
        );
        assert_eq!(p["c"]["items"]["format"], "int64");
        // Explicit bounds stay, as integers.
        assert_eq!(
            p["d"],
            json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": 10})
        );
        assert_eq!(
            p["e"],
            json!({"type": "number", "format": "double", "minimum": 0.0})
        );
    }
}
