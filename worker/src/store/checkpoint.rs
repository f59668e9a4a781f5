//! Checkpoints in the store, laid out as `orchestra_store::layout` spells it: each checkpoint's
//! weights, optimizer moments and state in its own `step-<n>` folder, then the trial's `latest`
//! pointer.
//!
//! The `latest` pointer is written only once all of a checkpoint's objects are, so a reader never
//! sees a partial checkpoint; the state object records every object's size, so a checkpoint whose
//! objects were damaged later is rejected instead of loaded.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use orchestra_store::layout::{TrialKeys, CHECKPOINT_DIR_FORM};

use super::{from_safetensors, to_safetensors, Store, StoreError};

/// Everything needed to continue a run exactly.
pub struct Checkpoint {
    pub step: u64,
    pub weights: Vec<(String, Tensor)>,
    pub optimizer: Vec<(String, Tensor)>,
    /// Adam step counts per optimiser name.
    pub optimizer_steps: Vec<(String, i64)>,
    /// Training wall time up to this checkpoint, over all attempts.
    pub elapsed_seconds: f64,
}

#[derive(Serialize, Deserialize)]
struct State {
    format: u32,
    step: u64,
    optimizer_steps: Vec<(String, i64)>,
    elapsed_seconds: f64,
    weights_bytes: u64,
    optimizer_bytes: u64,
}

const FORMAT: u32 = 1;

/// One trial's objects in a store.
#[derive(Clone, Debug)]
pub struct TrialStore {
    pub store: Store,
    pub keys: TrialKeys,
}

impl TrialStore {
    pub fn new(store: Store, experiment: &str, trial: &str) -> TrialStore {
        TrialStore {
            store,
            keys: TrialKeys::new(experiment, trial),
        }
    }

    /// Writes a checkpoint, then the `latest` pointer, then deletes all but the newest `keep`.
    pub fn save(&self, ckpt: &Checkpoint, keep: u32) -> Result<(), StoreError> {
        let corrupt = |key: &str, reason: String| StoreError::Corrupt {
            uri: self.store.uri().to_string(),
            key: key.to_string(),
            reason,
        };
        let weights_key = self.keys.weights(ckpt.step);
        let weights = to_safetensors(&ckpt.weights).map_err(|e| corrupt(&weights_key, e))?;
        let opt_key = self.keys.optimizer(ckpt.step);
        let optimizer = to_safetensors(&ckpt.optimizer).map_err(|e| corrupt(&opt_key, e))?;
        let state = State {
            format: FORMAT,
            step: ckpt.step,
            optimizer_steps: ckpt.optimizer_steps.clone(),
            elapsed_seconds: ckpt.elapsed_seconds,
            weights_bytes: weights.len() as u64,
            optimizer_bytes: optimizer.len() as u64,
        };
        self.store.put(&weights_key, weights)?;
        self.store.put(&opt_key, optimizer)?;
        self.store.put(
            &self.keys.checkpoint_state(ckpt.step),
            serde_json::to_vec_pretty(&state).expect("state serialises"),
        )?;
        self.store.put(
            &self.keys.latest(),
            TrialKeys::checkpoint_dir(ckpt.step).into_bytes(),
        )?;
        self.prune(keep, ckpt.step)
    }

    /// Deletes checkpoints older than the newest `keep` (never the one `latest` names).
    fn prune(&self, keep: u32, latest: u64) -> Result<(), StoreError> {
        let mut steps: Vec<u64> = self
            .store
            .list(self.keys.prefix())?
            .iter()
            .filter_map(|k| self.keys.checkpoint_step_of(k))
            .collect();
        steps.sort_unstable();
        steps.dedup();
        let excess = steps.len().saturating_sub(keep as usize);
        for step in steps.into_iter().take(excess).filter(|s| *s != latest) {
            self.store.delete_prefix(&self.keys.checkpoint(step))?;
        }
        Ok(())
    }

    /// The step of the latest complete checkpoint, if any.
    pub fn latest_step(&self) -> Result<Option<u64>, StoreError> {
        let key = self.keys.latest();
        let Some(bytes) = self.store.get(&key)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let step = TrialKeys::parse_checkpoint_dir(&text).ok_or_else(|| StoreError::Corrupt {
            uri: self.store.uri().to_string(),
            key,
            reason: format!("expected {CHECKPOINT_DIR_FORM}, found {text:?}"),
        })?;
        Ok(Some(step))
    }

    /// Loads the latest complete checkpoint, checking that every object is whole.
    pub fn load_latest(&self) -> Result<Option<Checkpoint>, StoreError> {
        let Some(step) = self.latest_step()? else {
            return Ok(None);
        };
        self.load(step).map(Some)
    }

    pub fn load(&self, step: u64) -> Result<Checkpoint, StoreError> {
        let uri = self.store.uri().to_string();
        let read = |key: String| -> Result<(String, bytes::Bytes), StoreError> {
            match self.store.get(&key)? {
                Some(b) => Ok((key, b)),
                None => Err(StoreError::Corrupt {
                    uri: uri.clone(),
                    key,
                    reason: "missing: the checkpoint is incomplete".into(),
                }),
            }
        };
        let corrupt = |key: &str, reason: String| StoreError::Corrupt {
            uri: uri.clone(),
            key: key.to_string(),
            reason,
        };
        let (state_key, state_bytes) = read(self.keys.checkpoint_state(step))?;
        let state: State = serde_json::from_slice(&state_bytes)
            .map_err(|e| corrupt(&state_key, format!("not a checkpoint state: {e}")))?;
        if state.format != FORMAT || state.step != step {
            return Err(corrupt(
                &state_key,
                format!(
                    "format {} step {}, expected format {FORMAT} step {step}",
                    state.format, state.step
                ),
            ));
        }
        let (wk, wb) = read(self.keys.weights(step))?;
        let (ok, ob) = read(self.keys.optimizer(step))?;
        for (key, bytes, expected) in [(&wk, &wb, state.weights_bytes), (&ok, &ob, state.optimizer_bytes)] {
            if bytes.len() as u64 != expected {
                return Err(corrupt(
                    key,
                    format!("{} bytes, state.json records {expected}", bytes.len()),
                ));
            }
        }
        Ok(Checkpoint {
            step,
            weights: from_safetensors(&wb).map_err(|e| corrupt(&wk, e))?,
            optimizer: from_safetensors(&ob).map_err(|e| corrupt(&ok, e))?,
            optimizer_steps: state.optimizer_steps,
            elapsed_seconds: state.elapsed_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ckpt(step: u64) -> Checkpoint {
        Checkpoint {
            step,
            weights: vec![("s.w".into(), Tensor::from_slice(&[1.0f32, 2.0, step as f32]))],
            optimizer: vec![("main.m.s.w".into(), Tensor::from_slice(&[0.5f32; 3]))],
            optimizer_steps: vec![("main".into(), step as i64)],
            elapsed_seconds: 1.5,
        }
    }

    #[test]
    fn saves_loads_and_keeps_the_newest() {
        let ts = TrialStore::new(Store::open("memory://ckpt-keep").unwrap(), "exp", "t1");
        assert!(ts.load_latest().unwrap().is_none());
        for step in [10, 20, 30] {
            ts.save(&ckpt(step), 2).unwrap();
        }
        let back = ts.load_latest().unwrap().unwrap();
        assert_eq!(back.step, 30);
        let w: Vec<f32> = Vec::try_from(&back.weights[0].1).unwrap();
        assert_eq!(w, vec![1.0, 2.0, 30.0]);
        assert_eq!(back.optimizer_steps, vec![("main".to_string(), 30)]);
        let keys = ts.store.list("exp/t1").unwrap();
        assert!(!keys.contains(&ts.keys.weights(10)), "{keys:?}");
        assert!(keys.contains(&ts.keys.weights(20)), "{keys:?}");
    }

    #[test]
    fn incomplete_or_damaged_checkpoints_are_rejected() {
        let ts = TrialStore::new(Store::open("memory://ckpt-damaged").unwrap(), "exp", "t1");
        ts.save(&ckpt(5), 3).unwrap();
        // A truncated weights object.
        let key = ts.keys.weights(5);
        let bytes = ts.store.get(&key).unwrap().unwrap();
        ts.store.put(&key, bytes.slice(..bytes.len() - 3)).unwrap();
        let err = ts.load_latest().err().expect("damaged checkpoint").to_string();
        assert!(
            err.contains("weights.safetensors") && err.contains("state.json records"),
            "{err}"
        );
        // A pointer to a checkpoint whose objects never arrived.
        ts.store
            .put(&ts.keys.latest(), TrialKeys::checkpoint_dir(9))
            .unwrap();
        let err = ts.load_latest().err().expect("missing checkpoint").to_string();
        assert!(
            err.contains("step-00000009/state.json") && err.contains("incomplete"),
            "{err}"
        );
        ts.store.put(&ts.keys.latest(), "garbage").unwrap();
        assert!(ts
            .load_latest()
            .err()
            .unwrap()
            .to_string()
            .contains("expected step-<n>"));
    }
}
