#![allow(dead_code)] // Each test binary uses its own part of the support.
pub mod browser;
pub mod cluster;
pub mod fake_api;
pub mod fake_operator;
pub mod gang_watch;
pub mod local_gang;
pub mod poller;
pub mod results;
pub mod s3;
