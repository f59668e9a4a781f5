//! What every request handler of the service shares: the batcher in front of the model
//! thread, the codec, the accepted tokens, the metrics and the request counter.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::batcher::Batcher;
use super::metrics::Metrics;
use crate::codec::Codec;

pub(super) struct AppState {
    pub batcher: Batcher,
    pub codec: Codec,
    pub tokens: Vec<String>,
    pub metrics: Arc<Metrics>,
    pub next_id: AtomicU64,
}
