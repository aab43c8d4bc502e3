//! How a command ends: an [`Exit`] status, and on failure an error.

pub use scorer::exit::Exit;

/// An error that ends the command with a given status.
#[derive(Debug)]
pub struct Failed {
    pub exit: Exit,
    pub error: anyhow::Error,
}

impl Failed {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Failed {
        Failed {
            exit,
            error: error.into(),
        }
    }

    pub fn usage(message: impl std::fmt::Display) -> Failed {
        Failed::new(Exit::Usage, anyhow::anyhow!("{message}"))
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed::new(Exit::Failure, e)
    }
}
