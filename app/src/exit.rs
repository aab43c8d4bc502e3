//! The command line's exit statuses: a contract scripts can rely on (the
//! README's table is checked against [`Exit::TABLE`] by a test).

use std::process::ExitCode;

/// Why `scorer` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// An internal error, or input/output that failed (a file that cannot
    /// be opened or written, a service that cannot be reached).
    Failure = 1,
    /// Bad flags or arguments (clap's usage errors, and ours: an output path
    /// that is the input, ...).
    Usage = 2,
    /// The input cannot be scored at all (a required column missing, empty,
    /// header only, binary, corrupt): nothing was written.
    Unscorable = 3,
    /// Rows were rejected beyond --max-rejected / --max-rejected-fraction:
    /// the outputs were written, and the run is a failure.
    TooManyRejected = 4,
    /// `reconcile` found input objects without committed outputs.
    Unscored = 5,
}

impl Exit {
    /// Every status with its meaning, in order.
    pub const TABLE: [(Exit, &'static str); 6] = [
        (Exit::Ok, "success"),
        (
            Exit::Failure,
            "internal error, or a file, bucket or service that cannot be read, written or reached",
        ),
        (
            Exit::Usage,
            "bad flags or arguments (including an output path that is the input or another output)",
        ),
        (
            Exit::Unscorable,
            "the input cannot be scored at all; nothing was written",
        ),
        (
            Exit::TooManyRejected,
            "more rows rejected than --max-rejected / --max-rejected-fraction allow; outputs written",
        ),
        (
            Exit::Unscored,
            "reconcile found input objects without committed outputs",
        ),
    ];

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}
