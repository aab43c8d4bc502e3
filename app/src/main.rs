//! The `scorer` command line (see `cli`): it parses arguments, runs one
//! command of the library and turns its end into an exit status.

mod cli;

// glibc's malloc keeps freed arenas of the scoring threads and the resident
// size creeps up over hours of jobs (measured in the soak test, see
// docs/RELIABILITY.md); mimalloc returns memory and stays flat.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}
