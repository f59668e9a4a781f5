//! Object storage for checkpoints, metrics and results, through the `object_store` crate.
//!
//! A blocking facade over the async API (the worker's training loop and the local runner are
//! synchronous): every call runs on a small private runtime. Writes are retried with backoff.
//! No tensors here: the operator reads results through it without linking libtorch.

pub mod layout;
#[doc(hidden)]
pub mod moto;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{local::LocalFileSystem, memory::InMemory, path::Path, ObjectStore, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URI {uri:?}: {reason}")]
    BadUri { uri: String, reason: String },
    #[error("store {uri}: {op} {key}: {source}")]
    Io {
        uri: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("store {uri}: {key}: {reason}")]
    Corrupt {
        uri: String,
        key: String,
        reason: String,
    },
}

/// Attempts per write before the error is reported.
const WRITE_ATTEMPTS: u32 = 4;

/// A store URI opened for blocking use. Keys are relative to the URI's path.
#[derive(Clone)]
pub struct Store {
    uri: String,
    inner: Arc<dyn ObjectStore>,
    root: Path,
    rt: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("uri", &self.uri).finish()
    }
}

/// In-memory stores live as long as the process; the same `memory://name` gives the same store,
/// so that a resumed run in the same process (tests) sees the earlier checkpoints.
fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// The private runtime that drives a store's async calls (with I/O for cloud stores).
fn runtime(uri: &str) -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::BadUri {
            uri: uri.to_string(),
            reason: format!("cannot start the I/O runtime: {e}"),
        })
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the store's root.
    pub key: String,
    pub size: u64,
    /// When it was last written, in milliseconds since the Unix epoch.
    pub written_ms: i64,
}

impl Store {
    /// Opens `file:///abs/path` (created if missing), `memory://name`, or `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix`.
    pub fn open(uri: &str) -> Result<Store, StoreError> {
        let bad = |reason: &str| StoreError::BadUri {
            uri: orchestra_api::redact(uri),
            reason: reason.to_string(),
        };
        if let Some(reason) = orchestra_api::uri_credentials(uri) {
            return Err(bad(&orchestra_api::credentials_refused(reason)));
        }
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://..."))?;
        let inner: Arc<dyn ObjectStore> = match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad("file URIs need an absolute path: file:///runs"));
                }
                let dir = PathBuf::from(rest);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| bad(&format!("cannot create {}: {e}", dir.display())))?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| bad(&e.to_string()))?
                        .with_automatic_cleanup(true),
                )
            }
            "memory" => {
                let mut stores = memory_stores().lock().expect("memory store registry");
                stores
                    .entry(rest.to_string())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone()
            }
            // Credentials, region and endpoint come from the usual environment variables
            // (AWS_*, GOOGLE_*, AZURE_*), as the providers' own tools read them.
            "s3" | "gs" | "az" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("needs a bucket (container) name"));
                }
                let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
                    "s3" => object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .build()
                        .map(|s| Arc::new(s) as _),
                    "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(bucket)
                        .build()
                        .map(|s| Arc::new(s) as _),
                    _ => object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_container_name(bucket)
                        .build()
                        .map(|s| Arc::new(s) as _),
                };
                let inner = built.map_err(|e| bad(&e.to_string()))?;
                let root = Path::from(prefix.trim_matches('/'));
                return Ok(Store {
                    uri: uri.to_string(),
                    inner,
                    root,
                    rt: Arc::new(runtime(uri)?),
                });
            }
            _ => {
                return Err(bad(
                    "unsupported scheme: expected file://, memory://, s3://, gs:// or az://",
                ))
            }
        };
        Ok(Store {
            uri: uri.to_string(),
            inner,
            root: Path::default(),
            rt: Arc::new(runtime(uri)?),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn path(&self, key: &str) -> Path {
        let mut p = self.root.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.child(part);
        }
        p
    }

    fn io(&self, op: &'static str, key: &str, source: object_store::Error) -> StoreError {
        StoreError::Io {
            uri: self.uri.clone(),
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    /// Writes one object atomically (readers see the old object or the whole new one),
    /// retrying with exponential backoff.
    pub fn put(&self, key: &str, bytes: impl Into<Bytes>) -> Result<(), StoreError> {
        let bytes = bytes.into();
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=WRITE_ATTEMPTS {
            match self.put_once(key, bytes.clone()) {
                Ok(()) => return Ok(()),
                Err(e) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(store = %self.uri, key, attempt, error = %e, "write failed, retrying");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Writes one object in a single attempt: for objects nothing depends on (a progress
    /// record), so that a store that is away costs one failed request, not `put`'s backoff.
    pub fn put_once(&self, key: &str, bytes: impl Into<Bytes>) -> Result<(), StoreError> {
        let path = self.path(key);
        self.rt
            .block_on(self.inner.put(&path, PutPayload::from(bytes.into())))
            .map(|_| ())
            .map_err(|e| self.io("put", key, e))
    }

    /// Reads one object; `None` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = self.path(key);
        let result = self.rt.block_on(async {
            match self.inner.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        result.map_err(|e| self.io("get", key, e))
    }

    /// Keys (relative to the store's root) of every object under `prefix`.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.list_objects(prefix)?.into_iter().map(|o| o.key).collect())
    }

    /// Every object under `prefix` with its size and time of writing, in key order (a listing
    /// that also tells when an object was written again, as a progress record is).
    pub fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let path = self.path(prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.inner.list(Some(&path)).try_collect())
            .map_err(|e| self.io("list", prefix, e))?;
        // Keys relative to the store's root, as every other call takes them.
        let root = self.root.to_string();
        let mut objects: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| {
                let k = m.location.to_string();
                let key = if root.is_empty() {
                    k
                } else {
                    k.strip_prefix(&format!("{root}/")).map(String::from).unwrap_or(k)
                };
                ObjectInfo {
                    key,
                    size: m.size,
                    written_ms: m.last_modified.timestamp_millis(),
                }
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Deletes every object under `prefix`.
    pub fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        for key in self.list(prefix)? {
            let path = self.path(&key);
            match self.rt.block_on(self.inner.delete(&path)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.io("delete", &key, e)),
            }
        }
        Ok(())
    }
}
