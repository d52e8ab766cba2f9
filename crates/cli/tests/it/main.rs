//! Integration tests of the whole flow, on real files in temporary folders: one test binary
//! for the crate (faster to link).

mod bad_input;
mod cli;
mod dashboard;
mod export;
mod generated;
mod marts;
mod orchestrate;
mod quality;
mod recovery;
mod replay;
mod report;
mod schedule;
mod seeds;
mod serve;
mod servers;
mod slt;
mod util;
