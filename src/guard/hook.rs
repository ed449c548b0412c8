//! The agents' pre-tool hook protocols: one tool call as JSON (Claude Code `PreToolUse`:
//! Bash and MCP tools; Cursor `beforeShellExecution` and `beforeMCPExecution`) in, an
//! answer in the calling agent's format out; `hook.toml`; which jobs a risky call affects.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::{JobPlan, SourcePlan};
use crate::error::{Error, Result};
use crate::guard::rules::{self, Hit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agent {
    Claude,
    Cursor,
}

/// What the call asks to do.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Shell(String),
    Tool {
        name: String,
        input: Value,
    },
    /// A tool backstop has no rules for (file edits, reads, web fetches).
    Other(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub agent: Agent,
    pub event: String,
    pub cwd: Option<PathBuf>,
    pub action: Action,
}

impl Call {
    /// The call as text, for the audit log and messages.
    pub(crate) fn text(&self) -> String {
        match &self.action {
            Action::Shell(c) => c.clone(),
            Action::Tool { name, input } => format!("{name} {input}"),
            Action::Other(name) => name.clone(),
        }
    }
}

/// Recognise the agent and the call; an error says what was wrong with the input.
pub(crate) fn parse(raw: &str) -> std::result::Result<Call, String> {
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
pub(crate) enum Permission {
    /// No objection (a snapshot was taken, or nothing risky was found).
    Allow,
    Ask,
    Deny,
}

/// The answer on stdout and the exit code, in the agent's format. For Claude Code,
/// "allow" is backstop's lack of objection: it does not approve calls the user's own
/// permission rules would ask about, unless `approve = true` in hook.toml.
pub(crate) fn answer(
    agent: Option<Agent>,
    p: Permission,
    message: &str,
    approve: bool,
) -> (String, i32) {
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
pub(crate) struct HookFile {
    /// How long the snapshots of one risky call may take (default 10m).
    pub timeout: Option<String>,
    /// How long hook snapshots are pinned against retention (default 14d).
    pub keep_for: Option<String>,
    /// Claude Code: answer an explicit "allow" (skipping its permission prompt) once the
    /// snapshots are taken. Default false: backstop only objects, never approves.
    pub approve: Option<bool>,
    #[serde(default)]
    pub rule: Vec<rules::ExtraRule>,
}

pub(crate) fn load_hook_file(dir: &Path) -> Result<HookFile> {
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
pub(crate) fn affected<'a>(plans: &'a [JobPlan], hits: &[Hit], text: &str) -> Vec<&'a JobPlan> {
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
                    || hits.iter().any(|h| {
                        h.paths
                            .iter()
                            .any(|x| v.path.starts_with(x) || x.starts_with(&v.path))
                    })
            }
        })
        .collect();
    if !named.is_empty() {
        return named;
    }
    plans.iter().filter(|p| p.is_production()).collect()
}

pub(crate) const HARMLESS: &str = "backstop: no risky action found";

pub(crate) fn risky(message: &str) -> bool {
    message != HARMLESS
}
