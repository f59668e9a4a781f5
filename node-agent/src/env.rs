//! A container's environment as the kubelet builds it: `envFrom` first, then `env` (values,
//! ConfigMap and Secret keys, the downward API's fields), `$(VAR)` references expanded from the
//! variables before them. Pure: the ConfigMaps and Secrets are fetched beforehand.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// The ConfigMaps and Secrets a pod refers to, by name (Secret values decoded).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// A token of the pod's service account bound to the pod (for projected token volumes).
    pub service_account_token: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvError {
    #[error("{kind} {name} not found")]
    Missing { kind: &'static str, name: String },
    #[error("{kind} {name} has no key {key}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("field {0} is not one the downward API offers (or the agent supports)")]
    Field(String),
}

/// The value of a downward-API field path of `pod`.
pub fn field_value(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<Option<String>> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key).cloned()))
    };
    if let Some(v) = keyed("metadata.labels['", meta.labels.as_ref()) {
        return Ok(v.unwrap_or_default());
    }
    if let Some(v) = keyed("metadata.annotations['", meta.annotations.as_ref()) {
        return Ok(v.unwrap_or_default());
    }
    let v = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        _ => return Err(EnvError::Field(path.to_string())),
    };
    Ok(v.unwrap_or_default())
}

/// ConfigMap or Secret `name` among `all`: absent is an error unless `optional`.
pub fn lookup<'a>(
    kind: &'static str,
    all: &'a BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    name: &str,
    optional: bool,
) -> Result<Option<&'a BTreeMap<String, Vec<u8>>>, EnvError> {
    match all.get(name) {
        Some(m) => Ok(Some(m)),
        None if optional => Ok(None),
        None => Err(EnvError::Missing {
            kind,
            name: name.to_string(),
        }),
    }
}

fn key_value(
    kind: &'static str,
    all: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, EnvError> {
    let Some(map) = lookup(kind, all, name, optional)? else {
        return Ok(None);
    };
    match map.get(key) {
        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        None if optional => Ok(None),
        None => Err(EnvError::MissingKey {
            kind,
            name: name.to_string(),
            key: key.to_string(),
        }),
    }
}

/// The container's variables in the kubelet's order (later names override earlier ones).
pub fn container_env(pod: &Pod, c: &Container, src: &Sources) -> Result<Vec<(String, String)>, EnvError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        out.retain(|(name, _)| *name != k);
        out.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, all, name, optional) = if let Some(cm) = &from.config_map_ref {
            (
                "ConfigMap",
                &src.config_maps,
                &cm.name,
                cm.optional.unwrap_or(false),
            )
        } else if let Some(s) = &from.secret_ref {
            ("Secret", &src.secrets, &s.name, s.optional.unwrap_or(false))
        } else {
            continue;
        };
        if let Some(map) = lookup(kind, all, name, optional)? {
            for (k, v) in map {
                set(
                    &mut out,
                    format!("{prefix}{k}"),
                    String::from_utf8_lossy(v).into_owned(),
                );
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &out))
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                Some(field_value(pod, &f.field_path)?)
            } else if let Some(k) = &from.config_map_key_ref {
                key_value(
                    "ConfigMap",
                    &src.config_maps,
                    &k.name,
                    &k.key,
                    k.optional.unwrap_or(false),
                )?
            } else if let Some(k) = &from.secret_key_ref {
                key_value(
                    "Secret",
                    &src.secrets,
                    &k.name,
                    &k.key,
                    k.optional.unwrap_or(false),
                )?
            } else {
                return Err(EnvError::Field(format!("valueFrom of {}", e.name)));
            }
        } else {
            Some(String::new())
        };
        match value {
            Some(v) => set(&mut out, e.name.clone(), v),
            None => continue,
        }
    }
    Ok(out)
}

/// `$(NAME)` replaced by NAME's value when defined, `$$` by `$`, anything else left as it is.
pub fn expand(s: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
                "labels": {"app": "a"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"podIP": "127.0.0.1"}
        }))
        .unwrap()
    }

    #[test]
    fn fields_of_the_downward_api() {
        let p = pod();
        let f = |path: &str| field_value(&p, path);
        assert_eq!(
            f("metadata.annotations['batch.kubernetes.io/job-completion-index']").unwrap(),
            "1"
        );
        assert_eq!(f("metadata.labels['app']").unwrap(), "a");
        assert_eq!(f("metadata.labels['none']").unwrap(), "");
        assert_eq!(f("metadata.name").unwrap(), "p");
        assert_eq!(f("spec.nodeName").unwrap(), "n1");
        assert_eq!(f("status.podIP").unwrap(), "127.0.0.1");
        assert_eq!(
            f("spec.containers"),
            Err(EnvError::Field("spec.containers".into()))
        );
    }

    #[test]
    fn references_expand_like_the_kubelet() {
        let vars = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x".to_string()),
        ];
        assert_eq!(expand("$(A)-$(B)", &vars), "1-x");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(C) $A $(", &vars), "$(C) $A $(");
    }

    #[test]
    fn env_from_then_env_with_keys_and_errors_naming_the_source() {
        let p = pod();
        let mut src = Sources::default();
        src.secrets.insert(
            "store".into(),
            BTreeMap::from([
                ("KEY".into(), b"s3cret".to_vec()),
                ("X".into(), b"from-secret".to_vec()),
            ]),
        );
        src.config_maps
            .insert("cm".into(), BTreeMap::from([("k".into(), b"v".to_vec())]));
        let c: Container = serde_json::from_value(json!({
            "name": "c",
            "envFrom": [{"secretRef": {"name": "store"}}],
            "env": [
                {"name": "X", "value": "$(KEY)!"},
                {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                {"name": "O", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope", "optional": true}}}
            ]
        }))
        .unwrap();
        let env = container_env(&p, &c, &src).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KEY"), Some("s3cret"));
        assert_eq!(get("X"), Some("s3cret!"));
        assert_eq!(get("RANK"), Some("1"));
        assert_eq!(get("C"), Some("v"));
        assert_eq!(get("O"), None);
        let missing: Container = serde_json::from_value(json!({
            "name": "c", "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "store", "key": "NOPE"}}}]
        }))
        .unwrap();
        assert_eq!(
            container_env(&p, &missing, &src).unwrap_err().to_string(),
            "Secret store has no key NOPE"
        );
    }
}
