//! Gradient averaging in flat buckets: many small tensors are concatenated into buffers of
//! about `bucket_bytes` (one collective call per bucket instead of one per tensor, each large
//! enough to run at the transport's bandwidth), summed over ranks, divided by the world size
//! and copied back.

use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

use super::{Collective, DistError};

/// PyTorch DDP's default bucket size.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// What one averaging call moved and how long it took.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReduceStats {
    pub bytes: usize,
    pub buckets: usize,
    pub elapsed: Duration,
}

/// Groups consecutive tensors (by their element counts) into buckets of at most `bucket_bytes`
/// (a tensor larger than that gets a bucket of its own); returns index ranges.
pub fn plan_buckets(numels: &[usize], elem_bytes: usize, bucket_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, n) in numels.iter().enumerate() {
        let b = n * elem_bytes;
        if i > start && bytes + b > bucket_bytes {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < numels.len() {
        out.push(start..numels.len());
    }
    out
}

/// Replaces every tensor of `tensors` (float, same device) by its mean over all ranks.
pub fn all_reduce_mean(
    comm: &mut dyn Collective,
    tensors: &[Tensor],
    bucket_bytes: usize,
) -> Result<ReduceStats, DistError> {
    let world = comm.world_size();
    if !comm.communicates() || tensors.is_empty() {
        return Ok(ReduceStats::default());
    }
    let started = Instant::now();
    let numels: Vec<usize> = tensors.iter().map(|t| t.numel()).collect();
    let elem = tensors[0].kind().elt_size_in_bytes();
    let mut stats = ReduceStats::default();
    tch::no_grad(|| -> Result<(), DistError> {
        for range in plan_buckets(&numels, elem, bucket_bytes.max(1)) {
            let parts: Vec<Tensor> = tensors[range.clone()].iter().map(|t| t.reshape([-1])).collect();
            let flat = Tensor::cat(&parts, 0).contiguous();
            comm.all_reduce_sum(&flat)?;
            let flat = flat / world as f64;
            let mut offset = 0i64;
            for t in &tensors[range] {
                let n = t.numel() as i64;
                t.shallow_clone().copy_(&flat.narrow(0, offset, n).view_as(t));
                offset += n;
            }
            stats.bytes += flat.numel() * elem;
            stats.buckets += 1;
        }
        Ok(())
    })?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Replaces each flat, contiguous buffer (a parameter group's gradients end to end) by its mean
/// over all ranks in place, `bucket_bytes` at a time: each bucket is a view of the buffer, so
/// nothing is gathered before the collective or scattered after it. Element for element the
/// same sums as `all_reduce_mean` over the group's separate tensors.
pub fn all_reduce_mean_flat(
    comm: &mut dyn Collective,
    buffers: &[Tensor],
    bucket_bytes: usize,
) -> Result<ReduceStats, DistError> {
    let world = comm.world_size();
    if !comm.communicates() || buffers.is_empty() {
        return Ok(ReduceStats::default());
    }
    let started = Instant::now();
    let mut stats = ReduceStats::default();
    tch::no_grad(|| -> Result<(), DistError> {
        for buffer in buffers {
            let elem = buffer.kind().elt_size_in_bytes();
            let total = buffer.numel() as i64;
            let per_bucket = (bucket_bytes / elem).max(1) as i64;
            let mut offset = 0i64;
            while offset < total {
                let n = per_bucket.min(total - offset);
                let mut bucket = buffer.narrow(0, offset, n);
                comm.all_reduce_sum(&bucket)?;
                bucket /= world as f64;
                stats.bytes += n as usize * elem;
                stats.buckets += 1;
                offset += n;
            }
        }
        Ok(())
    })?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Mean of a few scalars over all ranks (losses for the metrics, and so that every rank takes
/// the same decision on divergence).
pub fn mean_scalars(comm: &mut dyn Collective, values: &[f64]) -> Result<Vec<f64>, DistError> {
    if !comm.communicates() {
        return Ok(values.to_vec());
    }
    let t = Tensor::from_slice(values)
        .to_kind(Kind::Double)
        .to_device(comm.device());
    comm.all_reduce_sum(&t)?;
    let sum: Vec<f64> =
        Vec::<f64>::try_from(&t.to_device(tch::Device::Cpu)).map_err(|e: tch::TchError| {
            DistError::Backend {
                backend: "tensor",
                reason: e.to_string(),
            }
        })?;
    Ok(sum.into_iter().map(|v| v / comm.world_size() as f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_tensor_once_in_order() {
        let numels = [10, 300, 5, 5, 1000, 2];
        let plan = plan_buckets(&numels, 4, 1024);
        // The 1200-byte tensor fills a bucket alone; 20 + 20 bytes share one.
        assert_eq!(plan, vec![0..1, 1..2, 2..4, 4..5, 5..6]);
        let flat: Vec<usize> = plan.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(flat, (0..numels.len()).collect::<Vec<_>>());
        assert_eq!(plan_buckets(&numels, 4, usize::MAX), vec![0..6]);
        assert!(plan_buckets(&[], 4, 1024).is_empty());
    }

    /// Two ranks simulated in one process: the "collective" adds a fixed other rank's data.
    struct TwoRanks {
        other: Vec<f32>,
        calls: usize,
    }
    impl Collective for TwoRanks {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn backend(&self) -> &'static str {
            "test"
        }
        fn all_reduce_sum(&mut self, t: &Tensor) -> Result<(), DistError> {
            let n = t.numel();
            let other: Vec<f32> = self.other.drain(..n).collect();
            let _ = t
                .shallow_clone()
                .f_add_(&Tensor::from_slice(&other).to_kind(t.kind()))
                .unwrap();
            self.calls += 1;
            Ok(())
        }
        fn broadcast(&mut self, _: &Tensor, _: usize) -> Result<(), DistError> {
            Ok(())
        }
        fn barrier(&mut self, _: Option<Duration>) -> Result<(), DistError> {
            Ok(())
        }
    }

    #[test]
    fn averages_into_the_original_tensors() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[10.0f32, 20.0]);
        let mut comm = TwoRanks {
            other: vec![3.0, 2.0, 1.0, 0.0, 30.0, 40.0],
            calls: 0,
        };
        let stats = all_reduce_mean(&mut comm, &[a.shallow_clone(), b.shallow_clone()], 16).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(a.reshape([-1])).unwrap(),
            vec![2.0, 2.0, 2.0, 2.0]
        );
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![20.0, 30.0]);
        assert_eq!((stats.buckets, comm.calls, stats.bytes), (2, 2, 24));
    }

    #[test]
    fn flat_buffers_average_in_place_to_the_bucketed_result() {
        // A group's tensors one by one (bucketed, gathered and scattered) against the same
        // values end to end in one buffer (reduced in views): the same bits, no copies.
        let values: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        let other: Vec<f32> = (0..1000)
            .map(|i| ((i * 104_729) % 997) as f32 / 89.0 - 6.0)
            .collect();
        let sizes = [3usize, 250, 1, 600, 146];
        let mut offset = 0;
        let tensors: Vec<Tensor> = sizes
            .iter()
            .map(|&n| {
                offset += n;
                Tensor::from_slice(&values[offset - n..offset])
            })
            .collect();
        all_reduce_mean(
            &mut TwoRanks {
                other: other.clone(),
                calls: 0,
            },
            &tensors,
            1024,
        )
        .unwrap();
        let flat = Tensor::from_slice(&values);
        let before = flat.data_ptr();
        let mut comm = TwoRanks { other, calls: 0 };
        let stats = all_reduce_mean_flat(&mut comm, &[flat.shallow_clone()], 1024).unwrap();
        assert_eq!(flat.data_ptr(), before, "in place");
        assert_eq!(
            (stats.buckets, comm.calls, stats.bytes),
            (4, 4, 4000),
            "256 floats a bucket"
        );
        let bucketed: Vec<f32> = tensors
            .iter()
            .flat_map(|t| Vec::<f32>::try_from(t).unwrap())
            .collect();
        let flat: Vec<f32> = Vec::try_from(&flat).unwrap();
        assert!(
            flat.iter()
                .zip(&bucketed)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "the same bits"
        );
    }
}
