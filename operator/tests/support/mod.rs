#![allow(dead_code)] // Each test binary uses its own part of the mock.
pub mod fake_api;
