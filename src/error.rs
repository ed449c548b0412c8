//! The error type every command returns, and the mapping from error kind to exit code.
//!
//! Policy: errors are typed by what the operator must do next, not by where they came from.
//! Each carries a one-paragraph message that names the job, file, key or value at fault and
//! says what would be valid. Context is added as errors rise (`Error::context`), never
//! downgraded: a `Config` error stays a `Config` error (exit 2) however far it travels.

use std::fmt;

/// What kind of failure this is; decides the process exit code (see SPEC.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The operation failed (I/O, network, child process, corrupt object). Exit 1.
    Failed,
    /// Bad usage or configuration. Exit 2.
    Config,
    /// A verification found the restored data wrong. Exit 3.
    VerifyMismatch,
    /// Refused by a safety gate (confirmation missing, target not empty). Exit 4.
    Refused,
    /// Another run of the same job holds the lock. Exit 5.
    Locked,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Failed => 1,
            Kind::Config => 2,
            Kind::VerifyMismatch => 3,
            Kind::Refused => 4,
            Kind::Locked => 5,
        }
    }
}

/// backstop's error: a kind plus a human paragraph (outermost context first).
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    /// The command already printed its one `--json` document (which says what failed):
    /// no second document for the error.
    in_json: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            in_json: false,
        }
    }
    /// Mark the error as told in the command's own `--json` document.
    pub fn told_in_json(mut self) -> Self {
        self.in_json = true;
        self
    }
    pub fn is_told_in_json(&self) -> bool {
        self.in_json
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Kind::Failed, message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(Kind::Config, message)
    }
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(Kind::Refused, message)
    }
    pub fn locked(message: impl Into<String>) -> Self {
        Self::new(Kind::Locked, message)
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefix the message with what was being done; the kind is kept.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
            in_json: self.in_json,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Adds context to any `Result` whose error converts into ours.
pub(crate) trait ResultExt<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // An io::Error may carry one of ours (raised inside a Write/Read adapter).
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let inner = e.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        Error::failed(e.to_string())
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_spec() {
        assert_eq!(Kind::Failed.exit_code(), 1);
        assert_eq!(Kind::Config.exit_code(), 2);
        assert_eq!(Kind::VerifyMismatch.exit_code(), 3);
        assert_eq!(Kind::Refused.exit_code(), 4);
        assert_eq!(Kind::Locked.exit_code(), 5);
    }

    #[test]
    fn kind_survives_a_trip_through_io_error() {
        let e: std::io::Error = Error::refused("target not empty").into();
        let back: Error = e.into();
        assert_eq!(back.kind(), Kind::Refused);
        assert_eq!(back.message(), "target not empty");
        let c = back.context("restore job app");
        assert_eq!(c.kind(), Kind::Refused);
        assert_eq!(c.to_string(), "restore job app: target not empty");
    }
}
