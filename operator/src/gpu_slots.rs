//! Which GPU each of the local runner's trials runs on: up to `trialsPerGpu` trials per GPU, a
//! new trial on the least-loaded one (the lowest index among equals), so that packed trials
//! spread over every GPU before any GPU takes a second. Pure: the runner asks and tells it.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct GpuSlots {
    /// The GPUs' ids as CUDA_VISIBLE_DEVICES names them (indices or UUIDs).
    gpus: Vec<String>,
    per_gpu: usize,
    /// Trial -> index into `gpus`.
    assigned: BTreeMap<String, usize>,
}

impl GpuSlots {
    pub fn new(gpus: Vec<String>, per_gpu: usize) -> GpuSlots {
        GpuSlots {
            gpus,
            per_gpu: per_gpu.max(1),
            assigned: BTreeMap::new(),
        }
    }

    /// Trials that can run at once.
    pub fn capacity(&self) -> usize {
        self.gpus.len() * self.per_gpu
    }

    /// The GPU `trial` runs on: the one it holds, or the least-loaded one with room; `None`
    /// when every GPU is full.
    pub fn assign(&mut self, trial: &str) -> Option<&str> {
        if let Some(&g) = self.assigned.get(trial) {
            return Some(&self.gpus[g]);
        }
        let (g, _) = self
            .load()
            .into_iter()
            .enumerate()
            .filter(|&(_, l)| l < self.per_gpu)
            .min_by_key(|&(i, l)| (l, i))?;
        self.assigned.insert(trial.to_string(), g);
        Some(&self.gpus[g])
    }

    /// `trial` no longer runs: its place is free.
    pub fn release(&mut self, trial: &str) {
        self.assigned.remove(trial);
    }

    /// Trials on each GPU, in the GPUs' order.
    pub fn load(&self) -> Vec<usize> {
        let mut load = vec![0usize; self.gpus.len()];
        for &g in self.assigned.values() {
            load[g] += 1;
        }
        load
    }
}

/// The GPUs this machine offers the worker: CUDA_VISIBLE_DEVICES when it is set (its entries,
/// as the user restricted them), else every GPU `nvidia-smi` lists; empty when there are none.
pub fn visible_gpus(
    cuda_visible_devices: Option<&str>,
    nvidia_smi_indices: impl FnOnce() -> Option<String>,
) -> Vec<String> {
    match cuda_visible_devices {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            // CUDA stops at the first invalid entry (e.g. "-1" hides every GPU).
            .take_while(|s| !s.starts_with('-'))
            .map(String::from)
            .collect(),
        None => nvidia_smi_indices()
            .map(|out| {
                out.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_least_loaded_first_and_never_past_the_limit() {
        let mut s = GpuSlots::new(vec!["0".into(), "1".into()], 3);
        assert_eq!(s.capacity(), 6);
        let got: Vec<String> = (0..6)
            .map(|i| s.assign(&format!("t{i}")).unwrap().to_string())
            .collect();
        assert_eq!(got, ["0", "1", "0", "1", "0", "1"], "spread before stacking");
        assert_eq!(s.assign("t6"), None, "full");
        assert_eq!(s.assign("t2"), Some("0"), "a trial keeps its GPU");
        s.release("t3");
        assert_eq!(s.load(), [3, 2]);
        assert_eq!(s.assign("t7"), Some("1"), "the freed place");
        s.release("unknown");
        assert_eq!(s.load(), [3, 3]);
    }

    #[test]
    fn visible_gpus_follow_cuda_visible_devices_then_nvidia_smi() {
        let never = || -> Option<String> { panic!("nvidia-smi is not asked when the variable is set") };
        assert_eq!(visible_gpus(Some("2, 3"), never), ["2", "3"]);
        assert_eq!(visible_gpus(Some("GPU-8f3a,1"), never), ["GPU-8f3a", "1"]);
        assert!(visible_gpus(Some(""), never).is_empty());
        assert_eq!(visible_gpus(Some("0,-1,2"), never), ["0"]);
        assert_eq!(visible_gpus(None, || Some("0\n1\n".into())), ["0", "1"]);
        assert!(visible_gpus(None, || None).is_empty(), "no nvidia-smi: no GPU");
    }
}
