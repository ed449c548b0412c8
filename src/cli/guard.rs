//! `guard JOB... -- COMMAND ARGS...`: snapshot every named job (pinned, trigger "guard"),
//! then run the command with inherited stdio and environment and pass its exit code
//! through. If any snapshot fails the command is not run (exit 1). Both steps go to the
//! audit log.

use crate::cli::Global;
use crate::error::{Error, Result};
use crate::snapshot::Trigger;

pub(crate) async fn guard(
    g: &Global,
    jobs: &[String],
    reason: Option<String>,
    keep_for: &str,
    command: &[String],
) -> Result<i32> {
    let keep = crate::config::parse_duration(keep_for)
        .map_err(|e| Error::config(format!("--keep-for {e}")))?;
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(keep.as_secs() as i64))
        .map_err(|e| Error::config(format!("--keep-for {keep_for}: {e}")))?;
    let (shown, _) = crate::text::command_excerpt(&command.join(" "), 200);
    let reason = reason.unwrap_or_else(|| format!("guard: {shown}"));
    let mut ids = Vec::new();
    for job in jobs {
        let m =
            super::backup::run_durable(g, job, Trigger::Guard, Some(reason.clone()), Some(until))
                .await
                .map_err(|e| {
                    e.context(format!(
                        "guard: the snapshot of job {job} failed, so `{shown}` was not run"
                    ))
                })?;
        if !g.quiet {
            eprintln!("backstop: job {job}: snapshot {} is durable", m.snapshot);
        }
        ids.push(m.snapshot);
    }
    let status = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .kill_on_drop(true)
        .status()
        .await;
    let (code, outcome) = match &status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
            (code, Ok(()))
        }
        Err(e) => (
            1,
            Err(Error::failed(format!(
                "guard: cannot run {:?}: {e}",
                command[0]
            ))),
        ),
    };
    crate::state::audit::append(crate::state::audit::Record {
        action: "guard",
        job: None,
        snapshot: None,
        outcome: outcome.as_ref().map(|_| ()),
        details: serde_json::json!({"step": "command", "command": command, "exit_code": code, "jobs": jobs, "snapshots": ids}),
    });
    outcome?;
    Ok(code)
}
