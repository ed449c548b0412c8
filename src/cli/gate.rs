//! The one confirmation gate: `--yes` goes on; on a terminal the operator types what the
//! request expects (the target's name, or the job's name for production jobs); without a
//! terminal it refuses (exit 4). Restore and prune both ask through it.

use std::io::IsTerminal;

use crate::error::{Error, Result};
use crate::run::GateRequest;

/// Answer one request: `Ok(())` to go on, a refusal (exit 4) otherwise.
pub(crate) fn confirm(req: &GateRequest<'_>, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Error::refused(req.refusal));
    }
    eprint!("{}\nType {:?} to go on: ", req.prompt, req.expected);
    let mut line = String::new();
    let read = tokio::task::block_in_place(|| std::io::stdin().read_line(&mut line));
    if read.is_ok() && line.trim() == req.expected {
        return Ok(());
    }
    Err(Error::refused(
        "not confirmed (the answer did not match); nothing was changed",
    ))
}
