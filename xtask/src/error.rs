//! The one error type that is not a message: a status whose report has already
//! been printed (a failed check's table). `main` turns it into the exit status.

/// An error whose message has already been printed: only the exit status is left.
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}
