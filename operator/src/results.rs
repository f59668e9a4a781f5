//! Reading an Experiment's finished trials back from the store, and publishing its leaderboard
//! there and in a local folder. Keys come from `orchestra_store::layout`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orchestra_api::Experiment;
use orchestra_store::layout::{self, ExperimentKeys, LEADERBOARD_STEM};
use orchestra_store::{Store, StoreError};

use crate::figure::write_figure;
use crate::leaderboard::{rank_entries, Entry, Finished, Leaderboard, StoppedEntry};

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
        if let Some(trial) = exp.trial_of_result(&key) {
            out.extend(read_one_finished(store, &exp.trial(trial))?);
        }
    }
    Ok(out)
}

fn read_one_finished(store: &Store, keys: &layout::TrialKeys) -> Result<Option<Finished>, ResultsError> {
    let Some(result) = layout::read_result(store, keys)? else {
        return Ok(None);
    };
    Ok(Some(Finished {
        result,
        params: layout::read_params(store, keys)?,
    }))
}

/// What has been read of one Experiment's finished and stopped trials, kept between rankings: a
/// trial's result and its stop record are not written again once there, so a ranking reads
/// only the trials that ended since the last one. (The operator keeps one per Experiment: at a
/// thousand finished trials, reading them all again was most of a reconciliation's time.) Of a
/// result only its leaderboard entry is kept: at 10,000 trials whole results were a good part
/// of the operator's memory (docs/results/2026-12-03-cluster-scale.md).
#[derive(Clone, Debug, Default)]
pub struct ReadSoFar {
    finished: BTreeMap<String, Entry>,
    stopped: BTreeMap<String, StoppedEntry>,
}

impl ReadSoFar {
    /// The entries of the finished trials whose results are among `keys` (a listing of the
    /// Experiment's prefix), in the listing's order; read from the store when not read before.
    fn finished_among(
        &mut self,
        store: &Store,
        exp: &ExperimentKeys,
        keys: &[String],
    ) -> Result<Vec<Entry>, ResultsError> {
        let mut out = Vec::new();
        for key in keys {
            let Some(trial) = exp.trial_of_result(key) else {
                continue;
            };
            if !self.finished.contains_key(trial) {
                let Some(finished) = read_one_finished(store, &exp.trial(trial))? else {
                    continue;
                };
                self.finished.insert(trial.to_string(), Entry::of(&finished));
            }
            out.push(self.finished[trial].clone());
        }
        Ok(out)
    }

    /// The trials the search stopped early whose records are among `keys` (a listing of the
    /// Experiment's prefix), with their scores at the step they reached.
    fn stopped_among(
        &mut self,
        store: &Store,
        exp: &ExperimentKeys,
        keys: &[String],
    ) -> Result<Vec<StoppedEntry>, ResultsError> {
        let mut out = Vec::new();
        for key in keys {
            let Some(trial) = exp.trial_of_stopped(key) else {
                continue;
            };
            if !self.stopped.contains_key(trial) {
                let Some(entry) = read_stopped_entry(store, &exp.trial(trial))? else {
                    continue;
                };
                self.stopped.insert(trial.to_string(), entry);
            }
            out.push(self.stopped[trial].clone());
        }
        Ok(out)
    }
}

/// A stopped trial's leaderboard entry: its stop record and the rung record it stopped at.
fn read_stopped_entry(store: &Store, keys: &layout::TrialKeys) -> Result<Option<StoppedEntry>, ResultsError> {
    let Some(stopped) = layout::read_stopped(store, keys)? else {
        return Ok(None);
    };
    let Some(record) = layout::read_rung(store, keys, stopped.step)? else {
        return Ok(None);
    };
    Ok(Some(StoppedEntry {
        trial: stopped.trial,
        variant: stopped.variant,
        params: layout::read_params(store, keys)?,
        step: stopped.step,
        bpp: record.bpp(),
        dice: record.scores.dice,
        reason: stopped.reason,
    }))
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

/// The leaderboard of an Experiment as the store holds it: its finished trials ranked, and the
/// trials the search stopped early beside them, from one listing of its objects.
pub fn leaderboard(store: &Store, exp: &Experiment) -> Result<Leaderboard, ResultsError> {
    leaderboard_after(store, exp, &mut ReadSoFar::default())
}

/// As `leaderboard`, reading only the trials `read` has not read yet (and adding them to it).
pub fn leaderboard_after(
    store: &Store,
    exp: &Experiment,
    read: &mut ReadSoFar,
) -> Result<Leaderboard, ResultsError> {
    let name = exp.metadata.name.clone().unwrap_or_default();
    let keys = ExperimentKeys::new(&name);
    let listing = store.list(keys.prefix())?;
    let mut lb = rank_entries(
        &name,
        read.finished_among(store, &keys, &listing)?,
        &exp.spec.objective,
    );
    lb.stopped = read.stopped_among(store, &keys, &listing)?;
    Ok(lb)
}

/// Ranks the experiment's finished trials and writes `leaderboard.{json,md,svg,png}` into
/// `dir` and into the store beside the trials.
pub fn publish(store: &Store, exp: &Experiment, dir: &Path) -> Result<(Leaderboard, PathBuf), ResultsError> {
    let lb = leaderboard(store, exp)?;
    let png = write_leaderboard(store, &lb, dir)?;
    Ok((lb, png))
}

/// Writes a ranked leaderboard as `leaderboard.{json,md,svg,png}` into `dir` and into the store
/// beside its Experiment's trials; returns the PNG's path.
pub fn write_leaderboard(store: &Store, lb: &Leaderboard, dir: &Path) -> Result<PathBuf, ResultsError> {
    std::fs::create_dir_all(dir).map_err(|e| ResultsError::Write {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let stem = dir.join(LEADERBOARD_STEM);
    let json = serde_json::to_vec_pretty(lb).expect("leaderboard serialises");
    let md = lb.to_markdown();
    for (ext, bytes) in [("json", json.as_slice()), ("md", md.as_bytes())] {
        let path = stem.with_extension(ext);
        std::fs::write(&path, bytes).map_err(|e| ResultsError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    let (svg, png) = write_figure(lb, &stem).map_err(|reason| ResultsError::Write {
        path: stem.clone(),
        reason,
    })?;
    let keys = ExperimentKeys::new(&lb.experiment);
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
    Ok(png)
}
