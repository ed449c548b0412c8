//! `backstop hook`: the pre-tool hook for AI coding agents. Reads one tool call as JSON on
//! stdin (Claude Code `PreToolUse`: Bash and MCP tools; Cursor `beforeShellExecution` and
//! `beforeMCPExecution`), classifies it with `rules`, snapshots the jobs a risky call
//! affects, and answers in the calling agent's format. Harmless calls are answered without
//! touching the network; every decision goes to the audit log with the command text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::Global;
use crate::error::{Error, Result};
use crate::job::{JobPlan, SourcePlan};
use crate::rules::{self, Context, Extra, Hit};
use crate::snapshot::Trigger;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Claude,
    Cursor,
}

/// What the call asks to do.
#[derive(Debug, Clone)]
pub enum Action {
    Shell(String),
    Tool {
        name: String,
        input: Value,
    },
    /// A tool backstop has no rules for (file edits, reads, web fetches).
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Call {
    pub agent: Agent,
    pub event: String,
    pub cwd: Option<PathBuf>,
    pub action: Action,
}

impl Call {
    /// The call as text, for the audit log and messages.
    pub fn text(&self) -> String {
        match &self.action {
            Action::Shell(c) => c.clone(),
            Action::Tool { name, input } => format!("{name} {input}"),
            Action::Other(name) => name.clone(),
        }
    }
}

/// Recognise the agent and the call; an error says what was wrong with the input.
pub fn parse(raw: &str) -> std::result::Result<Call, String> {
    let v: Value = serde_json::from_str(raw).map_err(|e| {
        format!("the input is not JSON ({e}); backstop hook expects one tool call as a JSON object on stdin")
    })?;
    let obj = v
        .as_object()
        .ok_or("the input is JSON but not an object; expected a tool call")?;
    let event = obj
        .get("hook_event_name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let cwd = obj.get("cwd").and_then(Value::as_str).map(PathBuf::from);
    match event {
        "PreToolUse" => {
            let tool = obj
                .get("tool_name")
                .and_then(Value::as_str)
                .ok_or("a PreToolUse call without tool_name")?;
            let input = obj.get("tool_input").cloned().unwrap_or(Value::Null);
            let action = if tool == "Bash" {
                Action::Shell(
                    input
                        .get("command")
                        .and_then(Value::as_str)
                        .ok_or("a Bash call without tool_input.command")?
                        .to_string(),
                )
            } else if tool.starts_with("mcp__") {
                Action::Tool {
                    name: tool.to_string(),
                    input,
                }
            } else {
                Action::Other(tool.to_string())
            };
            Ok(Call {
                agent: Agent::Claude,
                event: event.into(),
                cwd,
                action,
            })
        }
        "beforeShellExecution" => Ok(Call {
            agent: Agent::Cursor,
            event: event.into(),
            cwd,
            action: Action::Shell(
                obj.get("command")
                    .and_then(Value::as_str)
                    .ok_or("a beforeShellExecution call without command")?
                    .to_string(),
            ),
        }),
        "beforeMCPExecution" => Ok(Call {
            agent: Agent::Cursor,
            event: event.into(),
            cwd,
            action: Action::Tool {
                name: obj
                    .get("tool_name")
                    .and_then(Value::as_str)
                    .unwrap_or("mcp")
                    .to_string(),
                input: obj.get("tool_input").cloned().unwrap_or(Value::Null),
            },
        }),
        "" => Err("the input has no hook_event_name; expected Claude Code's PreToolUse or Cursor's beforeShellExecution / beforeMCPExecution".into()),
        other => Err(format!(
            "hook event {other:?} is not one backstop answers; install it for Claude Code's PreToolUse or Cursor's beforeShellExecution / beforeMCPExecution"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// No objection (a snapshot was taken, or nothing risky was found).
    Allow,
    Ask,
    Deny,
}

/// The answer on stdout and the exit code, in the agent's format. For Claude Code,
/// "allow" is backstop's lack of objection: it does not approve calls the user's own
/// permission rules would ask about, unless `approve = true` in hook.toml.
pub fn answer(agent: Option<Agent>, p: Permission, message: &str, approve: bool) -> (String, i32) {
    match agent {
        Some(Agent::Claude) => {
            let decision = match p {
                Permission::Allow if approve => Some("allow"),
                Permission::Allow => None,
                Permission::Ask => Some("ask"),
                Permission::Deny => Some("deny"),
            };
            let mut out = json!({"systemMessage": message});
            if let Some(d) = decision {
                out["hookSpecificOutput"] = json!({
                    "hookEventName": "PreToolUse",
                    "permissionDecision": d,
                    "permissionDecisionReason": message,
                });
            }
            (out.to_string(), 0)
        }
        Some(Agent::Cursor) => {
            let perm = match p {
                Permission::Allow => "allow",
                Permission::Ask => "ask",
                Permission::Deny => "deny",
            };
            let out = json!({
                "permission": perm,
                "user_message": message, "agent_message": message,
                "userMessage": message, "agentMessage": message,
            });
            (out.to_string(), 0)
        }
        // Unknown caller: deny in both formats, and exit 2 (the block code of both agents).
        None => {
            let out = json!({
                "hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": message},
                "permission": "deny", "user_message": message, "agent_message": message,
            });
            (out.to_string(), 2)
        }
    }
}

/// `hook.toml` in the jobs directory: extra rules and settings.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HookFile {
    /// How long the snapshots of one risky call may take (default 10m).
    timeout: Option<String>,
    /// How long hook snapshots are pinned against retention (default 14d).
    keep_for: Option<String>,
    /// Claude Code: answer an explicit "allow" (skipping its permission prompt) once the
    /// snapshots are taken. Default false: backstop only objects, never approves.
    approve: Option<bool>,
    #[serde(default)]
    rule: Vec<rules::ExtraRule>,
}

fn load_hook_file(dir: &Path) -> Result<HookFile> {
    let path = dir.join("hook.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            Error::config(format!(
                "{}: {}; valid keys: timeout, keep_for, approve, [[rule]] (name, command, args, contains)",
                path.display(),
                e.message()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HookFile::default()),
        Err(e) => Err(Error::config(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Which jobs a risky call affects: those whose database or volume path it names (or
/// whose volume an `rm` removes), else every production job.
pub fn affected<'a>(plans: &'a [JobPlan], hits: &[Hit], text: &str) -> Vec<&'a JobPlan> {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
        .filter(|w| !w.is_empty())
        .collect();
    let named: Vec<&JobPlan> = plans
        .iter()
        .filter(|p| match &p.source {
            SourcePlan::Postgres(pg) => words.contains(&pg.url.dbname()),
            SourcePlan::Volume(v) => {
                text.contains(&*v.path.to_string_lossy())
                    || hits
                        .iter()
                        .any(|h| h.paths.iter().any(|x| v.path.starts_with(x)))
            }
        })
        .collect();
    if !named.is_empty() {
        return named;
    }
    plans.iter().filter(|p| p.is_production()).collect()
}

pub async fn run(g: &Global) -> Result<i32> {
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
            crate::commands::print_line(&out);
            eprintln!("{msg}");
            return Ok(code);
        }
    };
    let dir = crate::job::jobs_dir(g.jobs.as_deref());
    let (decision, message, approve) = match decide(g, &dir, &call).await {
        Ok(d) => d,
        Err(e) => (
            Permission::Deny,
            format!("backstop: {}", e.message()),
            false,
        ),
    };
    tracing::debug!("hook decided in {:?}", started.elapsed());
    // Claude Code shows a systemMessage to the user: say nothing about harmless calls.
    if call.agent == Agent::Claude && decision == Permission::Allow && !risky(&message) {
        crate::commands::print_line("{}");
        return Ok(0);
    }
    let (out, code) = answer(Some(call.agent), decision, &message, approve);
    crate::commands::print_line(&out);
    Ok(code)
}

const HARMLESS: &str = "backstop: no risky action found";

fn risky(message: &str) -> bool {
    message != HARMLESS
}

/// Classify, snapshot when risky, and decide; audits the decision.
async fn decide(g: &Global, dir: &Path, call: &Call) -> Result<(Permission, String, bool)> {
    let hook = load_hook_file(dir)?;
    let extra = Extra {
        timeout: hook.timeout.clone(),
        rules: hook.rule.clone(),
    };
    // Job files are read leniently: a broken one must not block harmless calls.
    let mut plans = Vec::new();
    let mut broken = Vec::new();
    for name in crate::job::job_names(dir).unwrap_or_default() {
        match crate::job::load(dir, &name) {
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
    let text = call.text();
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
        Some(t) => crate::commands::parse_duration(t)
            .map_err(|e| Error::config(format!("hook.toml: timeout {e}")))?,
        None => Duration::from_secs(600),
    };
    let keep_for = hook.keep_for.as_deref().unwrap_or("14d");
    let keep = crate::commands::parse_duration(keep_for)
        .map_err(|e| Error::config(format!("hook.toml: keep_for {e}")))?;
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(keep.as_secs() as i64);
    let shown: String = text.chars().take(160).collect();
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
            let m = crate::commands::backup_run(
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
    crate::audit::append(crate::audit::Record {
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
            "command": text,
            "rules": rules,
            "snapshots": snapshots,
        }),
    });
}
