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
    // Cursor's MCP calls carry no cwd: the first workspace root stands in for it.
    let cwd = obj
        .get("cwd")
        .and_then(Value::as_str)
        .or_else(|| {
            obj.get("workspace_roots")
                .and_then(Value::as_array)
                .and_then(|r| r.first())
                .and_then(Value::as_str)
        })
        .map(PathBuf::from);
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

/// Which jobs a risky call affects: those whose database it names (as a database: a
/// connection URL's path, `-d NAME`, `dbname=NAME`, `PGDATABASE=NAME`, a client's
/// database operand, `DROP DATABASE NAME`, `\\c NAME`) or whose volume path it touches;
/// else every production job (only the PostgreSQL ones when every rule hit puts only
/// databases at risk).
pub(crate) fn affected<'a>(plans: &'a [JobPlan], hits: &[Hit], text: &str) -> Vec<&'a JobPlan> {
    let dbs = named_databases(text);
    let named: Vec<&JobPlan> = plans
        .iter()
        .filter(|p| match &p.source {
            SourcePlan::Postgres(pg) => dbs.iter().any(|d| d == pg.url.dbname()),
            // A cluster job holds every database of its server.
            SourcePlan::Cluster(_) => !dbs.is_empty(),
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
    let production: Vec<&JobPlan> = plans.iter().filter(|p| p.is_production()).collect();
    if !hits.is_empty() && hits.iter().all(|h| h.database) {
        let databases: Vec<&JobPlan> = production
            .iter()
            .copied()
            .filter(|p| matches!(p.source, SourcePlan::Postgres(_) | SourcePlan::Cluster(_)))
            .collect();
        if !databases.is_empty() {
            return databases;
        }
    }
    production
}

/// Programs whose first operand is a database name.
const DB_OPERAND: &[&str] = &[
    "psql",
    "pgcli",
    "dropdb",
    "createdb",
    "pg_dump",
    "vacuumdb",
    "reindexdb",
    "clusterdb",
];

/// Options of those programs that take a value (skipped when looking for the operand).
const DB_VALUE_OPTIONS: &[&str] = &[
    "-h",
    "--host",
    "-p",
    "--port",
    "-U",
    "--username",
    "-c",
    "--command",
    "-f",
    "--file",
    "-v",
    "--set",
    "--variable",
    "-o",
    "--output",
    "-T",
    "--table-attr",
    "-P",
    "--pset",
    "-F",
    "--field-separator",
    "-R",
    "--record-separator",
    "-L",
    "--log-file",
    "-n",
    "--schema",
    "-t",
    "--table",
    "-j",
    "--jobs",
    "-Z",
    "--compress",
    "-E",
    "--encoding",
    "--maintenance-db",
    "-S",
    "--role",
];

/// The database names a call names as databases (not as words of a path or a sentence).
pub(crate) fn named_databases(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let tokens: Vec<&str> = text
        .split(|c: char| {
            c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ';' | '(' | ')' | '|' | '&')
        })
        .filter(|t| !t.is_empty())
        .collect();
    let clean = |s: &str| -> String {
        s.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .to_string()
    };
    for (i, t) in tokens.iter().enumerate() {
        let lower = t.to_ascii_lowercase();
        // postgres://user@host:5432/NAME?opts
        for scheme in ["postgres://", "postgresql://"] {
            if let Some(at) = lower.find(scheme) {
                let rest = &t[at + scheme.len()..];
                if let Some((_, path)) = rest.split_once('/') {
                    out.push(clean(path.split(['?', '/']).next().unwrap_or("")));
                }
            }
        }
        for key in ["dbname=", "pgdatabase=", "--dbname=", "database="] {
            if let Some(v) = lower.strip_prefix(key) {
                out.push(clean(&t[t.len() - v.len()..]));
            }
        }
        if matches!(*t, "-d" | "--dbname" | "\\c" | "\\connect") {
            if let Some(n) = tokens.get(i + 1) {
                if !n.contains("://") {
                    out.push(clean(n));
                }
            }
        }
        if lower == "database"
            && i > 0
            && matches!(
                tokens[i - 1].to_ascii_lowercase().as_str(),
                "drop" | "alter"
            )
        {
            let mut j = i + 1;
            while tokens
                .get(j)
                .is_some_and(|w| matches!(w.to_ascii_lowercase().as_str(), "if" | "exists"))
            {
                j += 1;
            }
            if let Some(n) = tokens.get(j) {
                out.push(clean(n));
            }
        }
    }
    // A client's first operand, from the words of each command (quotes kept together).
    let (pipelines, _) = crate::guard::shell::parse_shell(text);
    for s in pipelines.iter().flatten() {
        let Some(at) = s
            .words
            .iter()
            .position(|w| DB_OPERAND.contains(&w.rsplit('/').next().unwrap_or(w)))
        else {
            continue;
        };
        let mut i = at + 1;
        while let Some(w) = s.words.get(i) {
            if DB_VALUE_OPTIONS.contains(&w.as_str()) {
                i += 2;
            } else if w.starts_with('-') {
                i += 1;
            } else {
                if !w.contains('=') && !w.contains("://") {
                    out.push(clean(w));
                }
                break;
            }
        }
    }
    out.retain(|d| !d.is_empty());
    out.sort();
    out.dedup();
    out
}

pub(crate) const HARMLESS: &str = "backstop: no risky action found";

pub(crate) fn risky(message: &str) -> bool {
    message != HARMLESS
}
