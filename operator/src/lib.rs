//! Orchestra's operator side: the sweep planner and the leaderboard (pure), the local runner
//! that executes an Experiment on one machine, and the `orchestra` command line.

pub mod bench;
pub mod candidates;
pub mod cluster_bench;
pub mod dashboard;
pub mod gpu_slots;
pub mod k8s;
pub mod learning_curves;
pub mod local;
pub mod observed;
pub mod planner;
pub mod results;
pub mod runner;
pub mod search;
pub mod search_bench;
pub mod sobol;
pub mod summary;

pub use orchestra_report::{figure, leaderboard};
