//! Training: Adam, schedules, metrics, the alternating C+S / D updates and whole trial runs.

pub mod adam;
pub mod autocast;
pub mod model_sources;
pub mod progress;
pub mod reconstruction_loss;
pub mod run;
pub mod schedule;
pub mod seg_loss;
pub mod tensorboard;
pub mod trainer;

pub use run::{run_trial, Outcome, RunError, RunOptions};
pub use trainer::{device_for_spec, StepMetrics, TrainError, Trainer};
