//! Evaluation, for images and volumes: the scores (Dice and IoU per structure), the real
//! bitstreams' rate, and the inference passes they need over whole volumes (the sliding window
//! of s, C and g tile by tile). Training calls it on its validation split; the baselines, the
//! latency tables and `orchestra-worker segment` use its passes.

pub mod cloud_pass;
pub mod evaluation;
pub mod images;
pub mod scores;
pub mod sliding_window;
pub mod tiled_volume;
pub mod volumes;

pub use evaluation::Evaluation;
pub use images::evaluate_images;
pub use volumes::evaluate_volumes;
