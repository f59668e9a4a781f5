//! Datasets in object storage (`s3://`, `gs://`, `az://`): the folder's `images/` and `masks/`
//! objects are mirrored into a local cache (each file written under a temporary name and
//! renamed, so an interrupted download never leaves a truncated image behind), then loaded and
//! checked like a local folder. Files already in the cache are not fetched again; delete the
//! cache folder to refresh it.

use std::path::{Path, PathBuf};

use orchestra_store::Store;

use super::error::DataError;

/// Where mirrors live: `ORCHESTRA_DATA_CACHE`, else `~/.cache/orchestra/datasets`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("ORCHESTRA_DATA_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/orchestra/datasets")
}

/// The local folder mirroring `store_uri` (`s3://bucket/prefix` -> `<cache>/s3/bucket/prefix`).
pub fn mirror_dir(store_uri: &str) -> PathBuf {
    let (scheme, rest) = store_uri.split_once("://").unwrap_or(("store", store_uri));
    cache_root().join(scheme).join(rest)
}

/// Mirrors the dataset folder at `store_uri` and returns the local folder.
pub fn mirror(store_uri: &str, uri: &str) -> Result<PathBuf, DataError> {
    let remote = |reason: String| DataError::Remote {
        uri: uri.to_string(),
        reason,
    };
    let store = Store::open(store_uri).map_err(|e| remote(e.to_string()))?;
    let keys: Vec<String> = store
        .list("")
        .map_err(|e| remote(e.to_string()))?
        .into_iter()
        // Image folders (images/ + masks/) and volume folders (images/ + labels/, or MM-WHS's
        // NIfTI pairs side by side; a scan may be a folder of DICOM slices).
        .filter(|k| {
            k.starts_with("images/")
                || k.starts_with("masks/")
                || k.starts_with("labels/")
                || (!k.contains('/') && (k.ends_with(".nii.gz") || k.ends_with(".nii")))
                // MM-WHS-style pairs whose scan is a DICOM series folder (ID_image/).
                || k.split_once('/').is_some_and(|(folder, _)| folder.ends_with("_image"))
        })
        .collect();
    if keys.is_empty() {
        return Err(remote(format!(
            "no dataset objects under {store_uri}: expected images/ with masks/ or labels/, or NIfTI pairs"
        )));
    }
    let dir = mirror_dir(store_uri);
    let mut fetched = 0usize;
    for key in &keys {
        if key.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(remote(format!("object key {key:?} is not a plain relative path")));
        }
        let local = dir.join(key);
        if local.is_file() {
            continue;
        }
        let bytes = store
            .get(key)
            .map_err(|e| remote(e.to_string()))?
            .ok_or_else(|| remote(format!("{key} was listed but is gone")))?;
        write_atomically(&local, &bytes)
            .map_err(|e| remote(format!("cannot write {}: {e}", local.display())))?;
        fetched += 1;
    }
    tracing::info!(dataset = uri, objects = keys.len(), fetched, cache = %dir.display(), "dataset mirrored");
    Ok(dir)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("part-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
