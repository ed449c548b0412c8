#!/usr/bin/env bash
# Measures `backstop hook`'s decision time for harmless calls (the common case: no
# snapshot, no network): N runs of the release binary per input, median and 95th
# percentile in milliseconds, including process start and reading the job files; then
# every harmless call of the corpus (tests/hook-corpus/calls.jsonl) once, in its agent's
# format, from a copy of the corpus workspace.
#   scripts/bench-hook.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
cargo build --release --locked -q --bin backstop
bs="$(pwd)/target/release/backstop"
work=$(mktemp -d /tmp/backstop-hook-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/jobs"
for j in app billing files; do
  cat > "$work/jobs/$j.toml" <<TOML
environment = "production"
[source]
type = "postgres"
url = "postgres://backup@db.internal:5432/$j"
[storage]
url = "s3://offsite/backups"
endpoint = "https://s3.example.com"
[encryption]
recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
TOML
done
export BACKSTOP_STATE_DIR="$work/state"
python3 - "$bs" "$work/jobs" "$n" <<'PY'
import json, subprocess, sys, time, statistics
bs, jobs, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
inputs = {
    "Claude Code Bash `cargo test`": {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "cargo test --workspace"}, "cwd": "/srv/app"},
    "Claude Code Bash, a long pipeline": {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "git log --oneline | head -50 && psql app -c 'SELECT count(*) FROM users' | tee /tmp/x; for f in *.rs; do wc -l \"$f\"; done"}, "cwd": "/srv/app"},
    "Cursor beforeShellExecution `ls`": {"hook_event_name": "beforeShellExecution", "command": "ls -la", "cwd": "/srv/app"},
    "Claude Code MCP SELECT": {"hook_event_name": "PreToolUse", "tool_name": "mcp__pg__query", "tool_input": {"sql": "SELECT * FROM orders LIMIT 10"}},
}
print(f"{'input':<40} {'median':>8} {'p95':>8}   ({n} runs each, process start included)")
for name, doc in inputs.items():
    data = json.dumps(doc).encode()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = subprocess.run([bs, "--jobs", jobs, "hook"], input=data, capture_output=True)
        times.append((time.perf_counter() - t) * 1000)
        assert out.returncode == 0, out.stderr
        ans = json.loads(out.stdout)
        assert "deny" not in json.dumps(ans), ans
    times.sort()
    print(f"{name:<40} {statistics.median(times):>6.1f} ms {times[int(len(times) * 0.95)]:>6.1f} ms")
PY
cp -r tests/hook-corpus/workspace "$work/ws"
python3 - "$bs" "$work/jobs" "$work/ws" tests/hook-corpus/calls.jsonl <<'PY'
import json, subprocess, sys, time, statistics
bs, jobs, ws, corpus = sys.argv[1:5]
def payload(c):
    fmt = c["format"]
    if fmt == "claude-bash":
        return {"hook_event_name": "PreToolUse", "tool_name": "Bash", "cwd": ws, "tool_input": {"command": c["command"]}}
    if fmt == "cursor-shell":
        return {"hook_event_name": "beforeShellExecution", "command": c["command"], "cwd": ws, "workspace_roots": [ws]}
    if fmt == "claude-mcp":
        return {"hook_event_name": "PreToolUse", "tool_name": c["tool"], "cwd": ws, "tool_input": c["input"]}
    return {"hook_event_name": "beforeMCPExecution", "tool_name": c["tool"], "workspace_roots": [ws], "tool_input": json.dumps(c["input"])}
calls = [json.loads(l) for l in open(corpus) if l.strip()]
harmless = [c for c in calls if c["expect"] == "harmless"]
times = []
for c in harmless:
    data = json.dumps(payload(c)).encode()
    t = time.perf_counter()
    out = subprocess.run([bs, "--jobs", jobs, "hook"], input=data, capture_output=True)
    times.append((time.perf_counter() - t) * 1000)
    assert out.returncode == 0, out.stderr
    assert "deny" not in out.stdout.decode() and "ask" not in out.stdout.decode(), (c, out.stdout)
times.sort()
print(f"{'corpus: every harmless call once':<40} {statistics.median(times):>6.1f} ms {times[int(len(times) * 0.95)]:>6.1f} ms   ({len(times)} calls, max {times[-1]:.1f} ms)")
PY
