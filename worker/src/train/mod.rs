//! Training: Adam, schedules, metrics, the alternating C+S / D updates and whole trial runs.

pub mod adam;
pub mod autocast;
pub mod evaluation;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod seg_loss;
pub mod trainer;
pub mod volume_eval;

pub use evaluation::Evaluation;
pub use run::{run_trial, Outcome, RunError, RunOptions};
pub use trainer::{device_for_spec, evaluate, StepMetrics, TrainError, Trainer};
