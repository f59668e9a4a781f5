//! A pod's volumes as folders under the pod's own directory (ConfigMap, Secret, emptyDir,
//! downward API, and projected volumes of those and service-account tokens), and the one
//! departure from a container runtime: a process sees the host's file system, so the container's
//! mount paths in its command, arguments and environment are rewritten to those folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use crate::env::{field_value, lookup, EnvError, Sources};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume}: {source}")]
    Source { volume: String, source: EnvError },
    #[error("volume {0}: this kind of volume is not supported by orchestra-node-agent")]
    Unsupported(String),
    #[error("volume {volume}: item path {path} leaves the volume")]
    Escape { volume: String, path: String },
    #[error("volume mount {0} names no volume of the pod")]
    NoVolume(String),
    #[error("writing {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// The folder of volume `name` in the pod's directory.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

fn write(path: &Path, data: &[u8], mode: Option<i32>) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e| VolumeError::Io(path.to_path_buf(), e);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, data).map_err(io)?;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(mode.unwrap_or(0o644) as u32),
    )
    .map_err(io)
}

/// A relative item path that stays inside its volume.
fn item_path(volume: &str, dir: &Path, rel: &str) -> Result<PathBuf, VolumeError> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(VolumeError::Escape {
            volume: volume.to_string(),
            path: rel.to_string(),
        });
    }
    Ok(dir.join(p))
}

/// Writes the keys of a ConfigMap or Secret (all, or the listed items) into `dir`.
fn write_keys(
    volume: &str,
    dir: &Path,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    mode: Option<i32>,
    missing: impl Fn() -> EnvError,
) -> Result<(), VolumeError> {
    let source = |source| VolumeError::Source {
        volume: volume.to_string(),
        source,
    };
    let Some(data) = data else { return Ok(()) };
    match items {
        Some(items) => {
            for it in items {
                let value = data.get(&it.key).ok_or_else(|| source(missing()))?;
                write(&item_path(volume, dir, &it.path)?, value, it.mode.or(mode))?;
            }
        }
        None => {
            for (k, v) in data {
                write(&item_path(volume, dir, k)?, v, mode)?;
            }
        }
    }
    Ok(())
}

/// Creates every volume of the pod under `pod_dir/volumes/`.
pub fn materialize(pod: &Pod, pod_dir: &Path, src: &Sources) -> Result<(), VolumeError> {
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        materialize_one(pod, v, &volume_dir(pod_dir, &v.name), src)?;
    }
    Ok(())
}

fn materialize_one(pod: &Pod, v: &Volume, dir: &Path, src: &Sources) -> Result<(), VolumeError> {
    let name = v.name.as_str();
    std::fs::create_dir_all(dir).map_err(|e| VolumeError::Io(dir.to_path_buf(), e))?;
    if v.empty_dir.is_some() {
        Ok(())
    } else if let Some(cm) = &v.config_map {
        let source = Keys::config_map(&cm.name, cm.optional, cm.items.as_ref());
        source.write(name, dir, src, cm.default_mode)
    } else if let Some(s) = &v.secret {
        let secret = s.secret_name.clone().unwrap_or_default();
        Keys::secret(&secret, s.optional, s.items.as_ref()).write(name, dir, src, s.default_mode)
    } else if let Some(d) = &v.downward_api {
        write_fields(pod, name, dir, d.items.iter().flatten(), d.default_mode)
    } else if let Some(p) = &v.projected {
        for s in p.sources.iter().flatten() {
            if let Some(cm) = &s.config_map {
                let source = Keys::config_map(&cm.name, cm.optional, cm.items.as_ref());
                source.write(name, dir, src, p.default_mode)?;
            } else if let Some(sec) = &s.secret {
                Keys::secret(&sec.name, sec.optional, sec.items.as_ref()).write(
                    name,
                    dir,
                    src,
                    p.default_mode,
                )?;
            } else if let Some(t) = &s.service_account_token {
                let token = src.service_account_token.as_deref().unwrap_or_default();
                write(&item_path(name, dir, &t.path)?, token.as_bytes(), p.default_mode)?;
            } else if let Some(d) = &s.downward_api {
                write_fields(pod, name, dir, d.items.iter().flatten(), p.default_mode)?;
            } else {
                return Err(VolumeError::Unsupported(format!("{name} (a projected source)")));
            }
        }
        Ok(())
    } else {
        Err(VolumeError::Unsupported(name.to_string()))
    }
}

/// The keys of one ConfigMap or Secret as files: a volume's or a projected volume's source.
struct Keys<'a> {
    kind: &'static str,
    name: &'a str,
    optional: bool,
    items: Option<&'a Vec<KeyToPath>>,
}

impl<'a> Keys<'a> {
    fn config_map(name: &'a str, optional: Option<bool>, items: Option<&'a Vec<KeyToPath>>) -> Keys<'a> {
        Keys {
            kind: "ConfigMap",
            name,
            optional: optional.unwrap_or(false),
            items,
        }
    }

    fn secret(name: &'a str, optional: Option<bool>, items: Option<&'a Vec<KeyToPath>>) -> Keys<'a> {
        Keys {
            kind: "Secret",
            name,
            optional: optional.unwrap_or(false),
            items,
        }
    }

    fn write(&self, volume: &str, dir: &Path, src: &Sources, mode: Option<i32>) -> Result<(), VolumeError> {
        let all = if self.kind == "Secret" {
            &src.secrets
        } else {
            &src.config_maps
        };
        let data =
            lookup(self.kind, all, self.name, self.optional).map_err(|source| VolumeError::Source {
                volume: volume.to_string(),
                source,
            })?;
        let missing = || EnvError::MissingKey {
            kind: self.kind,
            name: self.name.to_string(),
            key: "(an item's key)".into(),
        };
        write_keys(volume, dir, data, self.items, mode, missing)
    }
}

/// Downward-API items (a volume's or a projected volume's) as files.
fn write_fields<'i>(
    pod: &Pod,
    volume: &str,
    dir: &Path,
    items: impl Iterator<Item = &'i DownwardAPIVolumeFile>,
    default_mode: Option<i32>,
) -> Result<(), VolumeError> {
    for it in items {
        let Some(f) = &it.field_ref else {
            return Err(VolumeError::Unsupported(format!("{volume} (resourceFieldRef)")));
        };
        let value = field_value(pod, &f.field_path).map_err(|source| VolumeError::Source {
            volume: volume.to_string(),
            source,
        })?;
        write(
            &item_path(volume, dir, &it.path)?,
            value.as_bytes(),
            it.mode.or(default_mode),
        )?;
    }
    Ok(())
}

/// Where a container's mount paths are on the host, longest first.
#[derive(Clone, Debug, Default)]
pub struct Mounts {
    pairs: Vec<(String, PathBuf)>,
}

impl Mounts {
    pub fn of(pod: &Pod, c: &Container, pod_dir: &Path) -> Result<Mounts, VolumeError> {
        let volumes: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .map(|v| v.name.as_str())
            .collect();
        let mut pairs = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains(&m.name.as_str()) {
                return Err(VolumeError::NoVolume(m.name.clone()));
            }
            let mut host = volume_dir(pod_dir, &m.name);
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                host = item_path(&m.name, &host, sub)?;
            }
            pairs.push((m.mount_path.trim_end_matches('/').to_string(), host));
        }
        pairs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Ok(Mounts { pairs })
    }

    /// `s` with a leading mount path (the whole path or a path under it) put on the host.
    pub fn rewrite(&self, s: &str) -> String {
        for (mount, host) in &self.pairs {
            if s == mount {
                return host.display().to_string();
            }
            if let Some(rest) = s.strip_prefix(mount.as_str()).and_then(|r| r.strip_prefix('/')) {
                return host.join(rest).display().to_string();
            }
        }
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{"name": "c", "volumeMounts": [
                    {"name": "spec", "mountPath": "/etc/orchestra", "readOnly": true},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "info", "mountPath": "/etc/orchestra/info"}
                ]}],
                "volumes": [
                    {"name": "spec", "configMap": {"name": "t-spec"}},
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn volumes_become_folders_and_mount_paths_point_at_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod();
        let mut src = Sources::default();
        src.config_maps.insert(
            "t-spec".into(),
            BTreeMap::from([("trial.yaml".into(), b"steps: 3".to_vec())]),
        );
        materialize(&p, dir.path(), &src).unwrap();
        let vol = |n: &str| volume_dir(dir.path(), n);
        assert_eq!(
            std::fs::read_to_string(vol("spec").join("trial.yaml")).unwrap(),
            "steps: 3"
        );
        assert_eq!(std::fs::read_to_string(vol("info").join("name")).unwrap(), "p");
        assert!(vol("tmp").is_dir());
        let c = &p.spec.as_ref().unwrap().containers[0];
        let m = Mounts::of(&p, c, dir.path()).unwrap();
        assert_eq!(
            m.rewrite("/etc/orchestra/trial.yaml"),
            vol("spec").join("trial.yaml").display().to_string()
        );
        assert_eq!(
            m.rewrite("/etc/orchestra/info/name"),
            vol("info").join("name").display().to_string()
        );
        assert_eq!(m.rewrite("/tmp"), vol("tmp").display().to_string());
        assert_eq!(m.rewrite("/tmpfoo"), "/tmpfoo");
        assert_eq!(m.rewrite("--flag"), "--flag");
    }

    #[test]
    fn a_missing_config_map_or_an_escaping_item_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = materialize(&pod(), dir.path(), &Sources::default()).unwrap_err();
        assert_eq!(err.to_string(), "volume spec: ConfigMap t-spec not found");
        let mut p = pod();
        p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0] = serde_json::from_value(json!(
            {"name": "spec", "configMap": {"name": "t-spec", "items": [{"key": "a", "path": "../../x"}]}}
        ))
        .unwrap();
        let mut src = Sources::default();
        src.config_maps
            .insert("t-spec".into(), BTreeMap::from([("a".into(), b"1".to_vec())]));
        let err = materialize(&p, dir.path(), &src).unwrap_err();
        assert!(matches!(err, VolumeError::Escape { .. }), "{err}");
    }
}
