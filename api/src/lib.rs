//! Orchestra's contract between the operator and its workers: the trial spec every worker
//! receives, the result every trial writes, and the validation rules both sides share.
//!
//! Serde and the CRD derive only: no libtorch, no Kubernetes client, no async runtime.

pub mod algorithm;
pub mod experiment;
pub mod experiment_file;
pub mod model_source;
pub mod redact;
pub mod sweepable;
pub mod training;
pub mod trial_progress;
pub mod trial_result;
pub mod trial_spec;
pub mod validation;

pub use algorithm::{Algorithm, AlgorithmKind, Sampler, Sampling, Schedule};
pub use experiment::{
    BestTrial, Experiment, ExperimentPhase, ExperimentSpec, ExperimentStatus, Objective, ObjectiveMode,
    Resources, RungOccupancy, SearchSpace,
};
pub use model_source::ModelSource;
pub use redact::{credentials_refused, redact, uri_credentials, RedactingStderr};
pub use sweepable::{affects, sweepable, Sweepable, SWEEPABLE};
pub use training::{
    DeviceKind, DisReduction, Distill, DistillLoss, Hyper, LrSchedule, ModelSpec, Precision, Preset, SegLoss,
    Variant, DEFAULT_DOWNSAMPLE,
};
pub use trial_progress::TrialProgress;
pub use trial_result::{
    ParamCounts, RateScores, RungRecord, RungScore, SegmentationScores, StoppedTrial, TeacherCost, Timings,
    TrialResult,
};
pub use trial_spec::{Trial, TrialPhase, TrialSpec, TrialStatus};
pub use validation::{parse_yaml, Problem, Problems, ValidationError};
