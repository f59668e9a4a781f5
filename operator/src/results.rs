//! Reading an Experiment's finished trials back from the store, and publishing its leaderboard
//! there and in a local folder. Keys come from `orchestra_store::layout`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orchestra_api::Experiment;
use orchestra_store::layout::{self, ExperimentKeys, LEADERBOARD_STEM};
use orchestra_store::{Store, StoreError};

use crate::leaderboard::{rank, Finished, Leaderboard};
use crate::plot::write_plots;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Every finished trial of `experiment` in the store, with its swept parameters.
pub fn read_finished(store: &Store, experiment: &str) -> Result<Vec<Finished>, ResultsError> {
    let exp = ExperimentKeys::new(experiment);
    let mut out = Vec::new();
    for key in store.list(exp.prefix())? {
        let Some(trial) = exp.trial_of_result(&key) else {
            continue;
        };
        let keys = exp.trial(trial);
        let Some(result) = layout::read_result(store, &keys)? else {
            continue;
        };
        let pk = keys.params();
        let params: BTreeMap<String, f64> = match store.get(&pk)? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| ResultsError::Corrupt {
                key: pk,
                reason: format!("not a parameter map: {e}"),
            })?,
            None => BTreeMap::new(),
        };
        out.push(Finished { result, params });
    }
    Ok(out)
}

/// Experiment names found in a store (those with a stored Experiment).
pub fn experiments_in(store: &Store) -> Result<Vec<String>, ResultsError> {
    let mut names: Vec<String> = store
        .list("")?
        .iter()
        .filter_map(|k| ExperimentKeys::experiment_of_spec(k).map(String::from))
        .collect();
    names.dedup();
    Ok(names)
}

pub fn read_experiment(store: &Store, name: &str) -> Result<Option<Experiment>, ResultsError> {
    let key = ExperimentKeys::new(name).spec();
    match store.get(&key)? {
        None => Ok(None),
        Some(b) => serde_yaml::from_slice(&b)
            .map(Some)
            .map_err(|e| ResultsError::Corrupt {
                key,
                reason: format!("not an Experiment: {e}"),
            }),
    }
}

/// Ranks the experiment's finished trials and writes `leaderboard.{json,md,svg,png}` into
/// `dir` and into the store beside the trials.
pub fn publish(store: &Store, exp: &Experiment, dir: &Path) -> Result<(Leaderboard, PathBuf), ResultsError> {
    let name = exp.metadata.name.clone().unwrap_or_default();
    let finished = read_finished(store, &name)?;
    let lb = rank(&name, &finished, &exp.spec.objective);
    std::fs::create_dir_all(dir).map_err(|e| ResultsError::Write {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let stem = dir.join(LEADERBOARD_STEM);
    let json = serde_json::to_vec_pretty(&lb).expect("leaderboard serialises");
    let md = lb.to_markdown();
    for (ext, bytes) in [("json", json.as_slice()), ("md", md.as_bytes())] {
        let path = stem.with_extension(ext);
        std::fs::write(&path, bytes).map_err(|e| ResultsError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    let (svg, png) = write_plots(&lb, &stem).map_err(|reason| ResultsError::Write {
        path: stem.clone(),
        reason,
    })?;
    let keys = ExperimentKeys::new(&name);
    for path in [
        stem.with_extension("json"),
        stem.with_extension("md"),
        svg,
        png.clone(),
    ] {
        let bytes = std::fs::read(&path).map_err(|e| ResultsError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        store.put(&keys.leaderboard(extension), bytes)?;
    }
    Ok((lb, png))
}
