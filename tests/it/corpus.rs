//! The hook's call corpus (`tests/hook-corpus/calls.jsonl`): several hundred risky and
//! harmless calls written the way coding agents write them, in both agents' formats, each
//! with the rule it must trigger (or "harmless", or "deny" for calls past a limit) and, for
//! some, the jobs it must snapshot. Every call goes through the real binary
//! (`backstop hook --explain`); the test fails on any miss, any needless snapshot, any
//! wrong job set and any crash, and prints recall per kind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::support::*;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// One corpus line as the agent would send it, with `{vol}` and `{volparent}` filled in.
fn payload(call: &Value, ws: &Path, vol: &Path) -> String {
    let fill = |s: &str| {
        s.replace("{vol}", &vol.display().to_string())
            .replace("{volparent}", &vol.parent().unwrap().display().to_string())
    };
    let ws_s = ws.display().to_string();
    let command = call["command"].as_str().map(fill);
    let tool = call["tool"].as_str().unwrap_or_default();
    let input: Value = serde_json::from_str(&fill(&call["input"].to_string())).unwrap();
    let v = match call["format"].as_str().unwrap() {
        "claude-bash" => json!({
            "session_id": "2b0f7c6e-4f1e-4d7a-9a53-6a1f5d2c9e10",
            "transcript_path": "/home/dev/.claude/projects/shop/2b0f7c6e.jsonl",
            "cwd": ws_s, "permission_mode": "default", "hook_event_name": "PreToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": command.unwrap(), "description": "Run the command"},
            "tool_use_id": "toolu_01ABCDEF",
        }),
        "cursor-shell" => json!({
            "conversation_id": "c0a8012e", "generation_id": "g-7f3e2d1c",
            "hook_event_name": "beforeShellExecution", "workspace_roots": [ws_s],
            "command": command.unwrap(), "cwd": ws_s,
        }),
        "claude-mcp" => json!({
            "session_id": "2b0f7c6e-4f1e-4d7a-9a53-6a1f5d2c9e10",
            "transcript_path": "/home/dev/.claude/projects/shop/2b0f7c6e.jsonl",
            "cwd": ws_s, "permission_mode": "default", "hook_event_name": "PreToolUse",
            "tool_name": tool, "tool_input": input, "tool_use_id": "toolu_01ABCDEG",
        }),
        "cursor-mcp" => json!({
            "conversation_id": "c0a8012e", "generation_id": "g-7f3e2d1d",
            "hook_event_name": "beforeMCPExecution", "workspace_roots": [ws_s],
            "tool_name": tool, "tool_input": input.to_string(),
            "url": "http://localhost:3000/mcp",
        }),
        other => panic!("corpus: unknown format {other}"),
    };
    v.to_string()
}

fn explain(sb: &Sandbox, input: &str) -> Result<Value, String> {
    let mut child = sb
        .cmd(&["hook", "--explain"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON ({e})"))
}

#[derive(Default)]
struct Tally {
    risky: usize,
    caught: usize,
    harmless: usize,
    flagged: usize,
}

#[test]
fn the_call_corpus_gets_the_rules_and_jobs_it_expects() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hook-corpus");
    let sb = Sandbox::new();
    let mut sb = sb;
    // `~/srv/uploads` is the volume.
    sb.env
        .push(("HOME".into(), sb.path().display().to_string()));
    let ws = sb.path().join("code/shop");
    copy_tree(&root.join("workspace"), &ws);
    let vol: PathBuf = sb.path().join("srv/uploads");
    std::fs::create_dir_all(vol.join("avatars")).unwrap();
    sb.file_job("app", "postgres://app@127.0.0.1:5432/app", "");
    sb.append_job("app", "environment = \"production\"", "");
    sb.file_job("billing", "postgres://app@127.0.0.1:5432/billing_prod", "");
    sb.volume_job("uploads", &vol, "");
    sb.append_job("uploads", "environment = \"production\"", "");

    // HOOK_CORPUS runs another file of calls in the same format (for a corpus of your own).
    let own = std::env::var_os("HOOK_CORPUS").map(PathBuf::from);
    let file = own.clone().unwrap_or_else(|| root.join("calls.jsonl"));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let calls: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("corpus line {l}: {e}")))
        .collect();
    assert!(
        own.is_some() || calls.len() >= 400,
        "the corpus holds {} calls",
        calls.len()
    );

    // Two workers: the answers are independent.
    let results: Vec<Result<Value, String>> = std::thread::scope(|s| {
        let half = calls.len().div_ceil(2);
        let handles: Vec<_> = calls
            .chunks(half)
            .map(|chunk| {
                let (sb, ws, vol) = (&sb, &ws, &vol);
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|c| explain(sb, &payload(c, ws, vol)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });

    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for (call, res) in calls.iter().zip(results) {
        let expect = call["expect"].as_str().unwrap();
        let kind = call["kind"].as_str().unwrap().to_string();
        let shown = call["command"]
            .as_str()
            .map(|c| c.chars().take(160).collect::<String>())
            .unwrap_or_else(|| format!("{} {}", call["tool"], call["input"]));
        let t = tally.entry(kind).or_default();
        let out = match res {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("CRASH {shown}: {e}"));
                continue;
            }
        };
        let rules: Vec<&str> = out["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        let decision = out["decision"].as_str().unwrap();
        let ok = match expect {
            "harmless" => {
                t.harmless += 1;
                if !rules.is_empty() {
                    t.flagged += 1;
                }
                rules.is_empty()
            }
            "deny" => {
                t.risky += 1;
                let ok = decision == "deny";
                t.caught += ok as usize;
                ok
            }
            rule => {
                t.risky += 1;
                let ok = rules.iter().any(|r| *r == rule || r.starts_with(rule));
                t.caught += (decision != "allow") as usize;
                ok
            }
        };
        if !ok {
            failures.push(format!(
                "expected {expect:?}, got {decision} {rules:?}: {shown}"
            ));
            continue;
        }
        if let Some(jobs) = call["jobs"].as_array() {
            let mut want: Vec<&str> = jobs.iter().map(|j| j.as_str().unwrap()).collect();
            let mut got: Vec<&str> = out["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j.as_str().unwrap())
                .collect();
            want.sort();
            got.sort();
            if want != got {
                failures.push(format!("jobs {got:?}, expected {want:?}: {shown}"));
            }
        }
    }
    let (mut r, mut c, mut h, mut f) = (0, 0, 0, 0);
    eprintln!("kind          risky caught harmless flagged");
    for (k, t) in &tally {
        eprintln!(
            "{k:<13} {:>5} {:>6} {:>8} {:>7}",
            t.risky, t.caught, t.harmless, t.flagged
        );
        (r, c, h, f) = (r + t.risky, c + t.caught, h + t.harmless, f + t.flagged);
    }
    eprintln!("{:<13} {r:>5} {c:>6} {h:>8} {f:>7}", "all");
    assert!(
        failures.is_empty(),
        "{} of {} corpus calls failed:\n{}",
        failures.len(),
        calls.len(),
        failures.join("\n")
    );
}
