//! Rankings and pictures of rate against accuracy, shared by the operator (leaderboards of
//! sweeps) and the worker (rate-accuracy comparisons with baseline codecs). Pure: data in,
//! tables and plots out.

pub mod figure;
pub mod leaderboard;
pub mod lines;
pub mod pareto;
pub mod plot;
