//! Dataset URIs: `synthetic://lesion?n=512&size=128&seed=7`, `synthetic://nested?...`,
//! `file:///path/to/folder?val=200&classes=5`, and the same folders in object storage:
//! `s3://bucket/isic2017/train?val=200` (also `gs://`, `az://`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::DataError;
use super::synthetic::SyntheticKind;

/// A parsed dataset address.
#[derive(Clone, Debug, PartialEq)]
pub enum DatasetUri {
    Synthetic {
        kind: SyntheticKind,
        n: usize,
        size: u32,
        seed: u64,
        val: usize,
    },
    Folder {
        path: PathBuf,
        /// Validation images: the last `val` ids in sorted order.
        val: Option<usize>,
        /// Number of classes including background; inferred from the masks when absent.
        classes: Option<usize>,
        /// Read only the first `limit` ids in sorted order (quick runs on big folders).
        limit: Option<usize>,
    },
    /// A folder in object storage, mirrored to a local cache before loading.
    Remote {
        /// The store URI of the folder (`s3://bucket/prefix`), without the query.
        store: String,
        val: Option<usize>,
        classes: Option<usize>,
        limit: Option<usize>,
    },
}

impl DatasetUri {
    pub fn parse(uri: &str) -> Result<DatasetUri, DataError> {
        let mut q = Query::parse(uri)?;
        let (scheme, body) = (q.scheme.clone(), q.body.clone());
        let shown = orchestra_api::redact(uri);
        let bad = |reason: String| DataError::BadUri {
            uri: shown.clone(),
            reason,
        };
        let mut take = |name: &str| q.number(name);
        let parsed = match scheme.as_str() {
            "synthetic" => {
                let kind = match body.as_str() {
                    "lesion" => SyntheticKind::Lesion,
                    "nested" => SyntheticKind::Nested,
                    other => {
                        return Err(bad(format!(
                            "unknown synthetic dataset {other:?}: expected lesion or nested"
                        )))
                    }
                };
                let n = take("n")?.unwrap_or(512) as usize;
                let size = take("size")?.unwrap_or(128);
                let seed = take("seed")?.unwrap_or(7);
                let val = take("val")?.unwrap_or((n / 8).max(1) as u64) as usize;
                if !(16..=1024).contains(&size) {
                    return Err(bad(format!("size={size} must be in 16..=1024")));
                }
                if val >= n {
                    return Err(bad(format!("val={val} leaves no training images out of n={n}")));
                }
                DatasetUri::Synthetic {
                    kind,
                    n,
                    size: size as u32,
                    seed,
                    val,
                }
            }
            "file" | "s3" | "gs" | "az" => {
                if scheme == "file" && !body.starts_with('/') {
                    return Err(bad("file URIs need an absolute path: file:///data/...".into()));
                }
                if scheme != "file" && body.split('/').next().unwrap_or("").is_empty() {
                    return Err(bad(format!(
                        "{scheme} URIs need a bucket: {scheme}://bucket/folder"
                    )));
                }
                let val = take("val")?.map(|v| v as usize);
                let classes = take("classes")?.map(|v| v as usize);
                let limit = take("limit")?.map(|v| v as usize);
                if classes.is_some_and(|c| !(2..=256).contains(&c)) {
                    return Err(bad("classes must be in 2..=256 (background included)".into()));
                }
                if scheme == "file" {
                    DatasetUri::Folder {
                        path: PathBuf::from(body),
                        val,
                        classes,
                        limit,
                    }
                } else {
                    DatasetUri::Remote {
                        store: format!("{scheme}://{}", body.trim_end_matches('/')),
                        val,
                        classes,
                        limit,
                    }
                }
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?}: expected synthetic://, file://, s3://, gs:// or az://"
                )))
            }
        };
        q.finish()?;
        Ok(parsed)
    }
}

/// A dataset URI taken apart: scheme, body and query parameters, each parameter removed as it
/// is read so that whatever is left at the end is reported as unknown.
pub(crate) struct Query {
    uri: String,
    pub scheme: String,
    pub body: String,
    params: BTreeMap<String, String>,
}

impl Query {
    pub fn parse(uri: &str) -> Result<Query, DataError> {
        let bad = |reason: String| DataError::BadUri {
            uri: orchestra_api::redact(uri),
            reason,
        };
        if let Some(reason) = orchestra_api::uri_credentials(uri) {
            return Err(bad(orchestra_api::credentials_refused(reason)));
        }
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://...".into()))?;
        let (body, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut params = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("query parameter {pair:?} has no '='")))?;
            params.insert(k.to_string(), v.to_string());
        }
        Ok(Query {
            uri: uri.to_string(),
            scheme: scheme.to_string(),
            body: body.to_string(),
            params,
        })
    }

    /// The error for this URI.
    pub fn bad(&self, reason: String) -> DataError {
        DataError::BadUri {
            uri: orchestra_api::redact(&self.uri),
            reason,
        }
    }

    /// A parameter's text, removed from those left to check.
    pub fn text(&mut self, name: &str) -> Option<String> {
        self.params.remove(name)
    }

    /// A non-negative integer parameter.
    pub fn number(&mut self, name: &str) -> Result<Option<u64>, DataError> {
        match self.params.remove(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| self.bad(format!("parameter {name}={v:?} is not a non-negative integer"))),
        }
    }

    /// Fails on the first parameter nobody read.
    pub fn finish(self) -> Result<(), DataError> {
        match self.params.keys().next() {
            Some(unknown) => Err(self.bad(format!("unknown parameter {unknown:?}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_synthetic_with_defaults_and_overrides() {
        let u = DatasetUri::parse("synthetic://lesion?n=64&size=32&seed=3").unwrap();
        assert_eq!(
            u,
            DatasetUri::Synthetic {
                kind: SyntheticKind::Lesion,
                n: 64,
                size: 32,
                seed: 3,
                val: 8
            }
        );
    }

    #[test]
    fn parses_folder() {
        let u = DatasetUri::parse("file:///data/isic?val=200&limit=300").unwrap();
        assert_eq!(
            u,
            DatasetUri::Folder {
                path: "/data/isic".into(),
                val: Some(200),
                classes: None,
                limit: Some(300)
            }
        );
    }

    #[test]
    fn rejects_bad_uris_with_the_reason() {
        for (uri, needle) in [
            ("lesion", "scheme"),
            ("synthetic://blob", "unknown synthetic dataset"),
            ("synthetic://lesion?n=ten", "n=\"ten\""),
            ("synthetic://lesion?n=8&val=8", "leaves no training images"),
            ("synthetic://lesion?colour=1", "unknown parameter \"colour\""),
            ("file://relative/path", "absolute path"),
            ("ftp://host/x", "unsupported scheme"),
            ("s3:///no-bucket", "need a bucket"),
        ] {
            let e = DatasetUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(needle), "{uri}: {e}");
        }
    }
}
