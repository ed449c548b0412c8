//! `hook`: read an agent's tool call on stdin, classify it (`guard`), snapshot the jobs a
//! risky call affects (`run`), answer allow / ask / deny on stdout, audit the decision.
//! Fails closed: a call it cannot read, or a snapshot that fails, is a deny.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::Global;
use crate::config::SourcePlan;
use crate::error::{Error, Result};
use crate::guard::hook::{
    Action, Agent, Call, HARMLESS, Permission, affected, answer, load_hook_file, parse, risky,
};
use crate::guard::rules::{self, Context, Extra};
use crate::snapshot::Trigger;

pub(crate) async fn run(g: &Global, explain: bool) -> Result<i32> {
    let started = std::time::Instant::now();
    let mut raw = String::new();
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut buf = String::new();
        std::io::stdin()
            .take(16 << 20)
            .read_to_string(&mut buf)
            .map(|_| buf)
    })
    .await;
    let read_err = match read {
        Ok(Ok(s)) => {
            raw = s;
            None
        }
        Ok(Err(e)) => Some(format!("cannot read stdin: {e}")),
        Err(e) => Some(format!("cannot read stdin: {e}")),
    };
    let parsed = match read_err {
        Some(e) => Err(e),
        None => parse(&raw),
    };
    let call = match parsed {
        Ok(c) => c,
        Err(why) => {
            let msg = format!("backstop: refusing a tool call it cannot read: {why}");
            audit(
                None,
                Permission::Deny,
                &raw.chars().take(2000).collect::<String>(),
                &[],
                &[],
                Some(&msg),
            );
            let (out, code) = answer(None, Permission::Deny, &msg, false);
            super::print_line(&out);
            eprintln!("{msg}");
            return Ok(code);
        }
    };
    let dir = crate::config::jobs_dir(g.jobs.as_deref());
    if explain {
        return explain_call(&dir, &call);
    }
    // Any internal error, and a panic too, is a deny with a reason: the agent's call must
    // never run because backstop failed to look at it.
    let decided = {
        let (g, dir, call) = (g.clone(), dir.clone(), call.clone());
        tokio::spawn(async move { decide(&g, &dir, &call).await }).await
    };
    let (decision, message, approve) = match decided {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => (
            Permission::Deny,
            format!("backstop: {}", e.message()),
            false,
        ),
        Err(e) => {
            let msg = format!(
                "backstop: internal error while checking this call ({}); refusing it",
                if e.is_panic() {
                    "a panic"
                } else {
                    "the check was cancelled"
                }
            );
            audit(
                Some(&call),
                Permission::Deny,
                &call.text(),
                &[],
                &[],
                Some(&msg),
            );
            (Permission::Deny, msg, false)
        }
    };
    tracing::debug!("hook decided in {:?}", started.elapsed());
    // Claude Code shows a systemMessage to the user: say nothing about harmless calls.
    if call.agent == Agent::Claude && decision == Permission::Allow && !risky(&message) {
        super::print_line("{}");
        return Ok(0);
    }
    let (out, code) = answer(Some(call.agent), decision, &message, approve);
    super::print_line(&out);
    Ok(code)
}

/// What the hook sees of one call: its settings, the jobs, and the rules the call hits.
struct Seen {
    hook: crate::guard::hook::HookFile,
    plans: Vec<crate::config::JobPlan>,
    broken: Vec<String>,
    hits: Vec<rules::Hit>,
}

/// `hook --explain`: the rules a call hits and the jobs it would snapshot, as JSON.
fn explain_call(dir: &Path, call: &Call) -> Result<i32> {
    let seen = see(dir, call)?;
    let jobs: Vec<&str> = affected(&seen.plans, &seen.hits, &call.text())
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let limit = seen.hits.iter().any(|h| h.rule.starts_with(rules::LIMIT));
    let out = json!({
        "risky": !seen.hits.is_empty(),
        "decision": if limit { "deny" } else if seen.hits.is_empty() { "allow" } else { "snapshot" },
        // `what` may hold a `$VAR` expanded from the environment: secrets are masked.
        "rules": seen.hits.iter().map(|h| json!({"rule": h.rule, "what": crate::text::redact_secrets(&h.what)})).collect::<Vec<_>>(),
        "jobs": if seen.hits.is_empty() { Vec::new() } else { jobs },
        "broken_jobs": seen.broken,
    });
    super::print_line(&out.to_string());
    Ok(0)
}

fn see(dir: &Path, call: &Call) -> Result<Seen> {
    let hook = load_hook_file(dir)?;
    let extra = Extra {
        rules: hook.rule.clone(),
    };
    // Job files are read leniently: a broken one must not block harmless calls.
    let mut plans = Vec::new();
    let mut broken = Vec::new();
    for name in crate::config::job_names(dir).unwrap_or_default() {
        match crate::config::load(dir, &name) {
            Ok(p) => plans.push(p),
            Err(e) => broken.push(e.message().to_string()),
        }
    }
    let volume_paths: Vec<PathBuf> = plans
        .iter()
        .filter_map(|p| match &p.source {
            SourcePlan::Volume(v) => Some(v.path.clone()),
            _ => None,
        })
        .collect();
    let ctx = Context {
        cwd: call.cwd.as_deref(),
        volume_paths: &volume_paths,
        extra: &extra,
    };
    let hits = match &call.action {
        Action::Shell(cmd) => rules::classify_shell(cmd, &ctx),
        Action::Tool { name, input } => rules::classify_json(name, input, &ctx),
        Action::Other(_) => Vec::new(),
    };
    Ok(Seen {
        hook,
        plans,
        broken,
        hits,
    })
}

/// Classify, snapshot when risky, and decide; audits the decision.
async fn decide(g: &Global, dir: &Path, call: &Call) -> Result<(Permission, String, bool)> {
    let Seen {
        hook,
        plans,
        broken,
        hits,
    } = see(dir, call)?;
    let text = call.text();
    // Fail closed: a call that could not be read in full is refused, never waved through.
    if let Some(limit) = hits.iter().find(|h| h.rule.starts_with(rules::LIMIT)) {
        let msg = format!(
            "backstop: refusing a call it cannot fully check ({}); rewrite it without the nesting, or run it yourself",
            limit.rule.trim_start_matches(rules::LIMIT).trim()
        );
        let why = vec![limit.rule.clone()];
        audit(Some(call), Permission::Deny, &text, &why, &[], Some(&msg));
        return Ok((Permission::Deny, msg, false));
    }
    if hits.is_empty() {
        let msg = HARMLESS.to_string();
        audit(Some(call), Permission::Allow, &text, &[], &[], None);
        return Ok((Permission::Allow, msg, false));
    }
    let why: Vec<String> = hits.iter().map(|h| h.rule.clone()).collect();
    if !broken.is_empty() {
        let msg = format!(
            "backstop: risky call ({}), but job files could not be read, so it cannot tell which backups to take: {}",
            why.join(", "),
            broken.join("; ")
        );
        audit(Some(call), Permission::Deny, &text, &why, &[], Some(&msg));
        return Ok((Permission::Deny, msg, false));
    }
    let jobs = affected(&plans, &hits, &text);
    if jobs.is_empty() {
        let msg = format!(
            "backstop: risky call ({}), but no backstop job covers what it touches (and no job has environment = \"production\"); no snapshot taken",
            why.join(", ")
        );
        audit(Some(call), Permission::Allow, &text, &why, &[], None);
        return Ok((Permission::Allow, msg, false));
    }
    let timeout = match &hook.timeout {
        Some(t) => crate::config::parse_duration(t)
            .map_err(|e| Error::config(format!("hook.toml: timeout {e}")))?,
        None => Duration::from_secs(600),
    };
    let keep_for = hook.keep_for.as_deref().unwrap_or("14d");
    let keep = crate::config::parse_duration(keep_for)
        .map_err(|e| Error::config(format!("hook.toml: keep_for {e}")))?;
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(keep.as_secs() as i64);
    // The manifest's reason is stored off-site for good: a bounded, redacted excerpt.
    let (shown, _) = crate::text::command_excerpt(&text, 160);
    let reason = format!("hook: {} before `{shown}`", why.join(", "));
    // Quiet (stdout is the answer), and waiting for a scheduled run of the job to finish
    // rather than failing: the timeout bounds it.
    let quiet = Global {
        quiet: true,
        json: true,
        wait: true,
        ..g.clone()
    };
    let mut ids = Vec::new();
    let snap_all = async {
        for p in &jobs {
            let m = super::backup::run_durable(
                &quiet,
                &p.name,
                Trigger::Hook,
                Some(reason.clone()),
                Some(until),
            )
            .await
            .map_err(|e| e.context(format!("the snapshot of job {} failed", p.name)))?;
            ids.push(format!("{} {}", p.name, m.snapshot));
        }
        Ok::<(), Error>(())
    };
    let res = match tokio::time::timeout(timeout, snap_all).await {
        Ok(r) => r,
        Err(_) => Err(Error::failed(format!(
            "the snapshots did not finish within {timeout:?} (hook.toml timeout)"
        ))),
    };
    if let Err(e) = res {
        let msg = format!(
            "backstop: blocked a risky call ({}): {}. Nothing was run; fix the backup (see `backstop list`) and try again",
            why.join(", "),
            e.message()
        );
        audit(Some(call), Permission::Deny, &text, &why, &ids, Some(&msg));
        return Ok((Permission::Deny, msg, false));
    }
    let confirm = jobs.iter().any(|p| p.hook_confirm);
    let p = if confirm {
        Permission::Ask
    } else {
        Permission::Allow
    };
    let msg = format!(
        "backstop: risky call ({}); snapshot taken first: {}{}",
        why.join(", "),
        ids.join(", "),
        if confirm {
            "; a human must approve it (hook.confirm)"
        } else {
            ""
        }
    );
    audit(Some(call), p, &text, &why, &ids, None);
    Ok((p, msg, hook.approve.unwrap_or(false)))
}

fn audit(
    call: Option<&Call>,
    p: Permission,
    text: &str,
    rules: &[String],
    snapshots: &[String],
    error: Option<&str>,
) {
    let err = error.map(Error::refused);
    crate::state::audit::append(crate::state::audit::Record {
        action: "hook",
        job: None,
        snapshot: None,
        outcome: match &err {
            Some(e) if p == Permission::Deny => Err(e),
            _ => Ok(()),
        },
        details: json!({
            "decision": match p { Permission::Allow => "allow", Permission::Ask => "ask", Permission::Deny => "deny" },
            "agent": call.map(|c| match c.agent { Agent::Claude => "claude-code", Agent::Cursor => "cursor" }),
            "event": call.map(|c| c.event.clone()),
            "command": crate::text::command_excerpt(text, 500).0,
            "command_sha256": crate::text::command_excerpt(text, 0).1,
            "rules": rules,
            "snapshots": snapshots,
        }),
    });
}
