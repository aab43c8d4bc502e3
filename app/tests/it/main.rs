//! Black-box tests: the real `scorer` binary and the real HTTP service on a
//! free port, against real files and (for the cloud path) Google's emulators.
//! One test binary, so the release build links once.

mod auth;
mod burst;
mod cli;
mod cloud;
mod corpus;
mod emulators;
mod eventarc;
mod exit_paths;
mod faults;
mod first_hour;
mod harness;
mod hostile;
mod integrity;
mod models;
mod parity;
mod platform;
mod readme;
mod reliability;
mod service;
mod sharding;
mod support;
