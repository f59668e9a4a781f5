//! Batching of concurrent requests: one thread owns the model and runs g + s on every decoded
//! code that is waiting, as one batch, instead of one forward pass per request.
//!
//! A GPU does a batch of 16 small codes in about the time of one, so under load the batch
//! raises throughput without adding latency. The batch is whatever has queued while the last
//! one ran (no waiting by default), so a lone request is never held back; `max_wait` can hold
//! a batch open a little longer to gather more. Codes of different shapes (images of other
//! sizes) go in batches of their own.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestra_codec::volume_stream::VolumeGeometry;
use tch::{Device, Kind};

use super::Metrics;
use crate::codec::model_file::CompressionModel;
use crate::codec::CodeShape;

/// How requests are gathered into batches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchOptions {
    /// At most this many codes per forward pass (1 turns batching off).
    pub max_batch: usize,
    /// How long a batch stays open for more requests after its first one arrived.
    pub max_wait: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_batch: 16,
            max_wait: Duration::ZERO,
        }
    }
}

/// A label map: class indices in raster order and the spatial sides; a volume's also carries
/// the scan's voxel-to-world affine (so that the answer lies on the scan).
#[derive(Clone, Debug, PartialEq)]
pub struct LabelMap {
    pub sides: Vec<usize>,
    pub labels: Vec<u8>,
    pub affine: Option<[[f32; 4]; 3]>,
}

/// Why a code was not segmented.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    #[error("the segmentation thread has stopped")]
    Stopped,
    #[error("segmentation failed: {0}")]
    Failed(String),
    /// The request does not fit the model (a volume stream's geometry against its code).
    #[error("{0}")]
    Refused(String),
}

/// What a request asks for: an image's code (batched with others of its shape) or a whole
/// volume (segmented on its own by sliding window).
enum Work {
    Code,
    Volume(Box<VolumeGeometry>),
}

struct Job {
    shape: CodeShape,
    bits: Vec<i8>,
    work: Work,
    reply: tokio::sync::oneshot::Sender<Result<LabelMap, BatchError>>,
}

/// The handle requests use; the thread stops when every handle is dropped.
#[derive(Clone)]
pub struct Batcher {
    jobs: SyncSender<Job>,
}

impl Batcher {
    /// Starts the thread that owns `model`. `queue` bounds the codes waiting (the service's
    /// concurrency limit, so a request never blocks on a full queue).
    pub fn start(
        model: CompressionModel,
        options: BatchOptions,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Batcher {
        let (jobs, rx) = sync_channel(queue.max(1));
        std::thread::Builder::new()
            .name("segment-batches".into())
            .spawn(move || run(model, options, rx, &metrics))
            .expect("spawn the segmentation thread");
        Batcher { jobs }
    }

    /// Queues a decoded code and waits for its label map.
    pub async fn segment(&self, shape: CodeShape, bits: Vec<i8>) -> Result<LabelMap, BatchError> {
        self.submit(shape, bits, Work::Code).await
    }

    /// Queues a volume's decoded code with its scan geometry and waits for its label volume.
    pub async fn segment_volume(
        &self,
        geometry: VolumeGeometry,
        shape: CodeShape,
        bits: Vec<i8>,
    ) -> Result<LabelMap, BatchError> {
        self.submit(shape, bits, Work::Volume(Box::new(geometry))).await
    }

    async fn submit(&self, shape: CodeShape, bits: Vec<i8>, work: Work) -> Result<LabelMap, BatchError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let jobs = self.jobs.clone();
        let job = Job {
            shape,
            bits,
            work,
            reply,
        };
        // A bounded std channel may block on send; keep that off the async workers.
        tokio::task::spawn_blocking(move || jobs.send(job))
            .await
            .map_err(|_| BatchError::Stopped)?
            .map_err(|_| BatchError::Stopped)?;
        answer.await.map_err(|_| BatchError::Stopped)?
    }
}

/// The next batch: the first job to arrive, then whatever else arrives before the batch is
/// full or `max_wait` has passed since the first. `None` once every handle is gone.
fn gather(rx: &Receiver<Job>, options: &BatchOptions) -> Option<Vec<Job>> {
    let first = rx.recv().ok()?;
    let deadline = Instant::now() + options.max_wait;
    let mut jobs = vec![first];
    while jobs.len() < options.max_batch {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = if left.is_zero() {
            rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
        } else {
            rx.recv_timeout(left)
        };
        match next {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

fn run(model: CompressionModel, options: BatchOptions, rx: Receiver<Job>, metrics: &Metrics) {
    while let Some(mut jobs) = gather(&rx, &options) {
        // Requests that timed out while queued have nobody waiting: no work for them.
        jobs.retain(|j| !j.reply.is_closed());
        // Volumes one at a time (each is many windows already), images batched by shape.
        let (volumes, codes): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| matches!(j.work, Work::Volume(_)));
        jobs = codes;
        for job in volumes {
            let Work::Volume(geometry) = &job.work else {
                continue;
            };
            metrics.record_batch(1);
            let result = guarded(|| label_volume(&model, geometry, &job.shape, &job.bits)).and_then(|r| r);
            let _ = job.reply.send(result);
        }
        // One forward pass per code shape, in order of arrival of each shape's first job.
        while !jobs.is_empty() {
            let shape = jobs[0].shape.clone();
            let (same, rest): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.shape == shape);
            jobs = rest;
            metrics.record_batch(same.len());
            let codes: Vec<&[i8]> = same.iter().map(|j| j.bits.as_slice()).collect();
            // A failure inside libtorch (say, out of GPU memory) answers this batch's requests
            // with an error and leaves the service running.
            let result = guarded(|| label_maps(&model, &shape, &codes));
            for (i, job) in same.into_iter().enumerate() {
                let answer = match &result {
                    Ok(maps) => Ok(maps[i].clone()),
                    Err(e) => Err(e.clone()),
                };
                // The request may have timed out meanwhile; nobody is waiting then.
                let _ = job.reply.send(answer);
            }
        }
    }
}

/// Runs `f`, turning a panic inside libtorch into an error answer.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, BatchError> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown error".into());
        BatchError::Failed(reason)
    })
}

/// A volume's label volume on the scan's voxels; a geometry that does not fit is refused.
fn label_volume(
    model: &CompressionModel,
    geometry: &VolumeGeometry,
    shape: &CodeShape,
    bits: &[i8],
) -> Result<LabelMap, BatchError> {
    let labels = model
        .segment_volume(geometry, shape, bits)
        .map_err(|e| BatchError::Refused(e.to_string()))?;
    Ok(LabelMap {
        sides: geometry.sides.map(|s| s as usize).to_vec(),
        labels,
        affine: Some(geometry.affine),
    })
}

fn label_maps(model: &CompressionModel, shape: &CodeShape, codes: &[&[i8]]) -> Vec<LabelMap> {
    let labels = model
        .segment_codes(shape, codes)
        .to_device(Device::Cpu)
        .to_kind(Kind::Uint8);
    let sides: Vec<usize> = labels.size()[1..].iter().map(|&s| s as usize).collect();
    let per_image: usize = sides.iter().product();
    let flat = Vec::<u8>::try_from(labels.flatten(0, -1)).expect("uint8 labels");
    flat.chunks(per_image.max(1))
        .map(|c| LabelMap {
            sides: sides.clone(),
            labels: c.to_vec(),
            affine: None,
        })
        .collect()
}
