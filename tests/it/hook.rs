//! `backstop hook` fed recorded tool calls of Claude Code and Cursor: risky calls (every
//! rule, also inside `bash -c`, pipes and heredocs) take a snapshot and are allowed naming
//! it; with the S3 server stopped they are denied; harmless calls are allowed without a
//! snapshot (and without the network); garbage is denied.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

#[derive(Clone, Copy)]
enum Format {
    ClaudeBash,
    ClaudeMcp,
    CursorShell,
    CursorMcp,
}

fn fixture(f: Format, command: &str) -> String {
    let name = match f {
        Format::ClaudeBash => "claude-code-pretooluse-bash.json",
        Format::ClaudeMcp => "claude-code-pretooluse-mcp.json",
        Format::CursorShell => "cursor-before-shell-execution.json",
        Format::CursorMcp => "cursor-before-mcp-execution.json",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hook")
        .join(name);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    match f {
        Format::ClaudeBash => v["tool_input"]["command"] = command.into(),
        Format::ClaudeMcp => v["tool_input"]["sql"] = command.into(),
        Format::CursorShell => v["command"] = command.into(),
        Format::CursorMcp => {
            v["tool_input"] = serde_json::json!({"query": command}).to_string().into()
        }
    }
    v.to_string()
}

/// Run the hook with `input` on stdin: (decision, message, exit code).
fn hook(sb: &Sandbox, input: &str) -> (String, String, i32) {
    let mut child = sb
        .cmd(&["hook"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "hook output is not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let code = out.status.code().unwrap_or(-1);
    if let Some(p) = v.get("permission").and_then(Value::as_str) {
        let msg = v["agent_message"].as_str().unwrap_or_default().to_string();
        return (p.to_string(), msg, code);
    }
    let decision = v["hookSpecificOutput"]["permissionDecision"]
        .as_str()
        // Claude Code without a decision: backstop does not object.
        .unwrap_or("allow")
        .to_string();
    let msg = v["hookSpecificOutput"]["permissionDecisionReason"]
        .as_str()
        .or(v["systemMessage"].as_str())
        .unwrap_or_default()
        .to_string();
    (decision, msg, code)
}

struct Setup {
    pg: Pg,
    s3: S3,
    sb: Sandbox,
    volume: std::path::PathBuf,
}

fn setup() -> Setup {
    let pg = Pg::start();
    let s3 = S3::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(s3.storage("offsite", "backups", 5, false));
    sb.s3_job("app", &pg.url("app"), &s3, "offsite", "");
    sb.append_job("app", "environment = \"production\"", "");
    let volume = sb.path().join("srv/app-data");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("state.db"), b"volume content").unwrap();
    sb.volume_job("data", &volume, "");
    std::fs::write(
        sb.jobs().join("hook.toml"),
        "timeout = \"2m\"\n\n[[rule]]\nname = \"wipe tool\"\ncommand = \"mytool\"\nargs = [\"wipe\"]\n",
    )
    .unwrap();
    Setup { pg, s3, sb, volume }
}

fn snapshot_ids(sb: &Sandbox, job: &str) -> Vec<String> {
    sb.snapshots(job).into_iter().map(|(id, _)| id).collect()
}

#[test]
fn risky_calls_snapshot_first_and_name_the_snapshot() {
    let Setup {
        pg: _pg,
        s3: _s3,
        sb,
        volume,
    } = setup();
    let vol = volume.display().to_string();
    let rm = format!("rm -rf {vol}");
    let cases: Vec<(Format, String, &str)> = vec![
        (Format::ClaudeBash, "psql -h 127.0.0.1 -d app -c 'DROP TABLE bulk'".into(), "app"),
        (Format::ClaudeBash, "bash -c \"echo 'truncate bulk' | psql app\"".into(), "app"),
        (Format::ClaudeBash, "psql app <<'EOF'\nBEGIN;\nDELETE FROM bulk;\nCOMMIT;\nEOF".into(), "app"),
        (Format::ClaudeBash, "psql app -c 'UPDATE bulk SET a = NULL'".into(), "app"),
        (Format::ClaudeBash, "cd /tmp && dropdb app".into(), "app"),
        (Format::ClaudeBash, "pg_ctl stop -D /var/lib/pg -m immediate".into(), "app"),
        (Format::ClaudeBash, rm.clone(), "data"),
        (Format::ClaudeBash, format!("sh -c 'ls | sort; sudo rm -r {vol}/..'"), "data"),
        (Format::ClaudeBash, "docker volume rm pgdata".into(), "app"),
        (Format::ClaudeBash, "kubectl -n prod delete pvc data-db-0".into(), "app"),
        (Format::ClaudeBash, "terraform destroy -auto-approve".into(), "app"),
        (Format::ClaudeBash, "railway volume delete vol_123".into(), "app"),
        (Format::ClaudeBash, "fly volumes destroy vol_abc -y".into(), "app"),
        (Format::ClaudeBash, "heroku pg:reset DATABASE_URL --confirm prod".into(), "app"),
        (Format::ClaudeBash, "aws rds delete-db-instance --db-instance-identifier prod".into(), "app"),
        (Format::ClaudeBash, "aws s3 rm s3://prod-uploads/ --recursive".into(), "app"),
        (
            Format::ClaudeBash,
            "curl -s https://backboard.railway.app/graphql/v2 -H 'Authorization: Bearer x' -d '{\"query\":\"mutation { volumeDelete(volumeId: \\\"v1\\\") }\"}'".into(),
            "app",
        ),
        (Format::ClaudeBash, "backstop prune app --yes".into(), "app"),
        (Format::ClaudeBash, "backstop restore app --yes".into(), "app"),
        (Format::ClaudeBash, "mytool wipe --everything".into(), "app"),
        (Format::ClaudeMcp, "TRUNCATE bulk".into(), "app"),
        (Format::CursorShell, "psql app -c 'ALTER TABLE bulk DROP COLUMN a'".into(), "app"),
        (Format::CursorShell, format!("rm -rf {vol}"), "data"),
        (Format::CursorMcp, "update bulk set a = 'x'".into(), "app"),
    ];
    for (f, cmd, job) in &cases {
        let before = snapshot_ids(&sb, job);
        let (decision, msg, code) = hook(&sb, &fixture(*f, cmd));
        assert_eq!((decision.as_str(), code), ("allow", 0), "{cmd}: {msg}");
        let after = snapshot_ids(&sb, job);
        assert_eq!(
            after.len(),
            before.len() + 1,
            "{cmd}: no new snapshot of {job}: {msg}"
        );
        let id = &after[0];
        assert!(
            msg.contains(id) && msg.contains("snapshot taken first"),
            "{cmd}: {msg}"
        );
        let trig = sb.snapshots(job)[0].1.clone();
        assert_eq!(trig, "hook", "{cmd}");
    }
    // Snapshots taken by the hook are pinned against retention.
    let out = sb.run(&["--json", "list", "app"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v[0]["pinned_until"].is_string(), "{v}");
    assert!(
        v[0]["reason"].as_str().unwrap().starts_with("hook: "),
        "{v}"
    );
    // Every decision is in the audit log with the command text.
    let audit = sb.audit_lines();
    let decisions: Vec<&Value> = audit.iter().filter(|l| l["action"] == "hook").collect();
    assert_eq!(decisions.len(), cases.len());
    assert!(
        decisions
            .iter()
            .any(|l| l["details"]["command"].as_str().unwrap().contains(&rm))
    );

    // hook.confirm = true: the answer becomes "ask", after the snapshot.
    sb.append_job("app", "", "[hook]\nconfirm = true\n");
    let before = snapshot_ids(&sb, "app").len();
    let (decision, msg, _) = hook(&sb, &fixture(Format::ClaudeBash, "dropdb app"));
    assert_eq!(decision, "ask", "{msg}");
    assert_eq!(snapshot_ids(&sb, "app").len(), before + 1);
    let (decision, _, _) = hook(&sb, &fixture(Format::CursorShell, "dropdb app"));
    assert_eq!(decision, "ask");
}

#[test]
fn risky_calls_are_denied_when_the_snapshot_fails_and_harmless_ones_pass() {
    let Setup {
        pg: _pg,
        mut s3,
        sb,
        volume: _v,
    } = setup();
    let harmless = [
        (Format::ClaudeBash, "ls -la"),
        (Format::ClaudeBash, "cargo test --workspace"),
        (
            Format::ClaudeBash,
            "psql app -c 'SELECT count(*) FROM bulk'",
        ),
        (Format::ClaudeMcp, "SELECT * FROM bulk LIMIT 5"),
        (Format::CursorShell, "git status && git diff"),
        (Format::CursorMcp, "SELECT 1"),
    ];
    for (f, cmd) in harmless {
        let (decision, _, code) = hook(&sb, &fixture(f, cmd));
        assert_eq!((decision.as_str(), code), ("allow", 0), "{cmd}");
    }
    assert!(snapshot_ids(&sb, "app").is_empty());
    // Other Claude Code tools (file edits) have no rules: allowed.
    let edit = serde_json::json!({"hook_event_name": "PreToolUse", "tool_name": "Edit", "tool_input": {"file_path": "/x", "old_string": "a", "new_string": "b"}});
    assert_eq!(hook(&sb, &edit.to_string()).0, "allow");

    s3.kill();
    for (f, cmd) in [
        (Format::ClaudeBash, "psql app -c 'DROP TABLE bulk'"),
        (Format::ClaudeBash, "bash -c 'dropdb app'"),
        (Format::CursorShell, "terraform destroy"),
        (Format::ClaudeMcp, "TRUNCATE bulk"),
    ] {
        let (decision, msg, code) = hook(&sb, &fixture(f, cmd));
        assert_eq!((decision.as_str(), code), ("deny", 0), "{cmd}: {msg}");
        assert!(msg.contains("snapshot of job app failed"), "{cmd}: {msg}");
    }
    // Harmless calls do not need the network: still allowed, at once.
    let t = Instant::now();
    let (decision, _, _) = hook(&sb, &fixture(Format::ClaudeBash, "cargo build"));
    assert_eq!(decision, "allow");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // Garbage and unknown events: denied (exit 2, both formats), never a panic.
    for bad in [
        "not json",
        "[1, 2]",
        "{}",
        "{\"hook_event_name\": \"Stop\"}",
        "{\"hook_event_name\": \"PreToolUse\", \"tool_name\": \"Bash\"}",
        "",
    ] {
        let (decision, msg, code) = hook(&sb, bad);
        assert_eq!((decision.as_str(), code), ("deny", 2), "{bad:?}: {msg}");
        assert!(msg.contains("cannot read"), "{bad:?}: {msg}");
    }
    let audit = sb.audit_lines();
    let denied = audit
        .iter()
        .filter(|l| l["action"] == "hook" && l["details"]["decision"] == "deny")
        .count();
    assert_eq!(denied, 4 + 6);
}
