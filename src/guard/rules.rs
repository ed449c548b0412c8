//! The risk rules of `backstop hook`: a shell command (or an MCP tool call's arguments)
//! is parsed — pipes, `&&`/`||`/`;`, `sh -c`/`bash -c`, `$(...)`, `$VAR`s, wrappers like
//! `sudo` and `env`, containers and remote shells, heredocs and `-c` strings fed to `psql`,
//! code fed to interpreters, scripts and task runners' recipes — and each simple command,
//! and the SQL it carries, is checked against the rule packs plus the rules of `hook.toml`.
//! No network; the only files read are those a call names under its cwd.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::paths::{Vars, base, expand, in_pg_data_dir, read_named, resolve, touched_volumes};
pub(crate) use super::shell::{Simple, parse_shell};
pub(crate) use super::sql::risky_sql;

/// A rule that matched: its id and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub rule: String,
    pub what: String,
    /// Paths the command removes (for matching volume jobs).
    pub paths: Vec<PathBuf>,
    /// The rule only puts databases at risk (SQL, ORMs, PostgreSQL tools): volume jobs
    /// need no snapshot for it.
    pub database: bool,
}

/// Extra rules from `hook.toml` in the jobs directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Extra {
    #[serde(default, rename = "rule")]
    pub rules: Vec<ExtraRule>,
}

/// `[[rule]]`: a program (and optionally words among its arguments), or a text anywhere.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtraRule {
    pub name: String,
    /// Program name, e.g. "mytool" (matched on the file name).
    pub command: Option<String>,
    /// Words that must all appear among the arguments, e.g. ["cluster", "delete"].
    #[serde(default)]
    pub args: Vec<String>,
    /// Text that makes any call risky wherever it appears (case-insensitive).
    pub contains: Option<String>,
}

/// What the classifier knows of the world: volume paths (for `rm`) and the cwd.
pub(crate) struct Context<'a> {
    pub cwd: Option<&'a Path>,
    pub volume_paths: &'a [PathBuf],
    pub extra: &'a Extra,
}

// ---------------------------------------------------------------------------------------
// Commands

const SQL_CLIENTS: &[&str] = &[
    "psql",
    "pgcli",
    "mysql",
    "mariadb",
    "sqlite3",
    "cockroach",
    "clickhouse-client",
];
const SHELLS: &[&str] = &["sh", "bash", "zsh", "dash", "ksh", "fish"];
/// Wrappers whose arguments are another command.
const WRAPPERS: &[&str] = &[
    "sudo",
    "doas",
    "env",
    "nohup",
    "time",
    "nice",
    "ionice",
    "exec",
    "command",
    "xargs",
    "timeout",
    "watch",
    "stdbuf",
    "setsid",
    "chroot",
    "runuser",
    "su",
    "cross-env",
    "dotenvx",
];

/// Classify a whole shell command line.
pub(crate) fn classify_shell(src: &str, ctx: &Context) -> Vec<Hit> {
    super::paths::forget_written();
    let mut hits = Vec::new();
    classify_shell_into(src, ctx, &mut hits, 0);
    // A file it runs that is too large to read in full: what was not read may be what
    // destroys data, so the call is treated as risky (snapshot first), not waved through.
    for name in super::paths::too_large() {
        hits.push(hit("a file the call runs is larger than 1 MiB", &name));
    }
    for r in &ctx.extra.rules {
        if let Some(t) = &r.contains
            && src.to_lowercase().contains(&t.to_lowercase())
        {
            hits.push(hit(&format!("hook.toml: {}", r.name), t));
        }
    }
    dedup(hits)
}

fn dedup(mut hits: Vec<Hit>) -> Vec<Hit> {
    let mut seen = std::collections::BTreeSet::new();
    hits.retain(|h| seen.insert((h.rule.clone(), h.what.clone())));
    hits
}

pub(crate) fn hit(rule: &str, what: &str) -> Hit {
    Hit {
        rule: rule.to_string(),
        what: what.chars().take(200).collect(),
        paths: Vec::new(),
        database: false,
    }
}

/// The prefix of a rule that says the call could not be read in full (too deep, too
/// large): the hook fails closed on it and denies.
pub const LIMIT: &str = "limit:";

/// What a command's output feeds, when a later command of its pipeline reads stdin as
/// SQL (`| psql`), as code (`| python`, `| rails console`) or as a command line (`| sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    None,
    Sql,
    Code,
    Shell,
}

fn classify_shell_into(src: &str, ctx: &Context, hits: &mut Vec<Hit>, depth: usize) {
    if depth > 8 {
        hits.push(hit(
            &format!("{LIMIT} commands nested more than 8 deep"),
            src,
        ));
        return;
    }
    let (pipelines, nested) = parse_shell(src);
    for n in nested {
        classify_shell_into(&n, ctx, hits, depth + 1);
    }
    // `cd DIR` changes where later relative paths point; `VAR=x` and `export VAR=x` set
    // what later `$VAR`s mean.
    let mut cwd: Option<PathBuf> = ctx.cwd.map(Path::to_path_buf);
    let mut vars = Vars::new();
    for p in &pipelines {
        let p: Vec<Simple> = p.iter().map(|s| expand_simple(s, &vars)).collect();
        let sinks: Vec<Sink> = p.iter().map(sink_of).collect();
        for (i, s) in p.iter().enumerate() {
            if let Some(set) = assignments_only(s) {
                vars.extend(set);
                continue;
            }
            if s.words.first().map(String::as_str) == Some("cd") {
                let to = s.words.get(1).map(String::as_str).unwrap_or("~/");
                cwd = Some(resolve(to, cwd.as_deref()));
                continue;
            }
            note_writes(s, cwd.as_deref());
            let fed = sinks[i + 1..]
                .iter()
                .copied()
                .find(|k| *k != Sink::None)
                .unwrap_or(Sink::None);
            let here = Context {
                cwd: cwd.as_deref(),
                volume_paths: ctx.volume_paths,
                extra: ctx.extra,
            };
            classify_simple(s, &here, hits, depth, fed);
        }
    }
}

/// `cat > FILE <<EOF`, `tee FILE <<EOF`, `echo TEXT > FILE`, `printf TEXT > FILE`: the
/// text a later command of the same call may run from FILE.
fn note_writes(s: &Simple, cwd: Option<&Path>) {
    let words = command_words(s);
    let Some(prog) = words.first().map(|w| base(w)) else {
        return;
    };
    let args: Vec<&str> = words[1..]
        .iter()
        .copied()
        .filter(|a| !a.starts_with('-'))
        .collect();
    let text = match prog {
        "cat" | "tee" => s.heredocs.join("\n"),
        "echo" | "printf" => args.join(" ").replace("\\n", "\n"),
        _ => return,
    };
    let mut targets: Vec<&str> = s.outputs.iter().map(String::as_str).collect();
    if prog == "tee" {
        targets.extend(args.iter().copied());
    }
    for t in targets {
        super::paths::note_written(t, cwd, &text);
    }
}

/// A simple command with `$VAR`s replaced (its own leading `VAR=x` assignments included).
fn expand_simple(s: &Simple, vars: &Vars) -> Simple {
    let mut local = vars.clone();
    for w in s.words.iter().take_while(|w| is_assignment(w)) {
        if let Some((k, v)) = w.split_once('=') {
            local.insert(k.to_string(), expand(v, vars));
        }
    }
    Simple {
        words: s.words.iter().map(|w| expand(w, &local)).collect(),
        heredocs: s.heredocs.clone(),
        inputs: s.inputs.iter().map(|w| expand(w, &local)).collect(),
        outputs: s.outputs.iter().map(|w| expand(w, &local)).collect(),
    }
}

/// The variables a command made only of assignments sets (`A=1 B=2`, `export A=1`).
fn assignments_only(s: &Simple) -> Option<Vec<(String, String)>> {
    let mut w: &[String] = &s.words;
    if w.first().is_some_and(|f| {
        matches!(
            f.as_str(),
            "export" | "declare" | "local" | "readonly" | "typeset"
        )
    }) {
        w = &w[1..];
        while w.first().is_some_and(|f| f.starts_with('-')) {
            w = &w[1..];
        }
    }
    if w.is_empty() || !w.iter().all(|x| is_assignment(x)) {
        return None;
    }
    Some(
        w.iter()
            .filter_map(|x| x.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// How a command reads its stdin.
fn sink_of(s: &Simple) -> Sink {
    let words = command_words(s);
    if words.is_empty() {
        return Sink::None;
    }
    let mut stage: Vec<&str> = words.clone();
    for _ in 0..5 {
        let prog = program_name(stage[0]);
        if SQL_CLIENTS.contains(&prog)
            || super::packs::sql_runner(prog, &stage[1..]).is_some_and(|r| r.stdin)
        {
            return Sink::Sql;
        }
        // A container's or a remote host's command reads the pipe.
        let inner = match prog {
            "docker" | "podman" | "nerdctl" => {
                super::packs::container_command(&stage[1..]).map(|(w, _)| w)
            }
            "kubectl" | "oc" => stage
                .iter()
                .position(|a| *a == "--")
                .map(|i| stage[i + 1..].to_vec()),
            _ => None,
        };
        if let Some(inner) = inner.filter(|w| !w.is_empty()) {
            stage = inner;
            continue;
        }
        if let Some((code, file, stdin)) = super::code::code_call(&stage) {
            if stdin && code.is_empty() && file.is_none() {
                return Sink::Code;
            }
            return Sink::None;
        }
        if SHELLS.contains(&prog) && stage[1..].iter().all(|a| a.starts_with('-') && *a != "-c") {
            return Sink::Shell;
        }
        match super::packs::unwrap_once(&stage) {
            Some(i) if i < stage.len() => {
                stage.drain(..i);
            }
            _ => break,
        }
    }
    Sink::None
}

/// Shell keywords that may start a simple command and are not the program.
const KEYWORDS: &[&str] = &[
    "do", "then", "else", "elif", "if", "while", "until", "!", "time",
];

/// The words of a simple command after leading assignments, shell keywords and wrappers
/// (`sudo -iu postgres`, `timeout 10s`, `env A=1`) are taken off.
fn command_words(s: &Simple) -> Vec<&str> {
    let mut words: Vec<&str> = s.words.iter().map(String::as_str).collect();
    loop {
        while words
            .first()
            .is_some_and(|w| is_assignment(w) || KEYWORDS.contains(w))
        {
            words.remove(0);
        }
        let Some(first) = words.first().copied() else {
            break;
        };
        if matches!(first, "for" | "case" | "select" | "function") {
            return Vec::new();
        }
        if !WRAPPERS.contains(&base(first)) || base(first) == "su" {
            break;
        }
        let sudo_like = matches!(base(first), "sudo" | "doas" | "runuser");
        words.remove(0);
        // Options of the wrapper (sudo -u x, sudo -iu x, timeout 10, nice -n 5).
        while let Some(w) = words.first().copied() {
            if w == "--" {
                words.remove(0);
                break;
            }
            if w.starts_with('-') {
                words.remove(0);
                let takes_value = [
                    "-u", "-g", "-n", "-s", "-k", "-c", "-p", "-C", "-D", "-h", "-r", "-t", "-U",
                ]
                .contains(&w)
                    || (sudo_like
                        && !w.starts_with("--")
                        && w.len() > 2
                        && w.ends_with(['u', 'g', 'C', 'D', 'h', 'p', 'r', 't', 'U']));
                if takes_value && !words.is_empty() {
                    words.remove(0);
                }
            } else if w
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == 's' || c == 'm')
                && w.chars().next().is_some_and(|c| c.is_ascii_digit())
            {
                words.remove(0); // timeout 10s CMD
            } else if is_assignment(w) || (base(first) == "env" && w.starts_with("$(")) {
                // `env $(cat .env | xargs) CMD`: the substitution yields assignments.
                words.remove(0);
            } else {
                break;
            }
        }
    }
    words
}

fn classify_simple(s: &Simple, ctx: &Context, hits: &mut Vec<Hit>, depth: usize, fed: Sink) {
    let words = command_words(s);
    if words.is_empty() {
        fed_text(s, "", &[], ctx, hits, depth, fed);
        overwrites(s, ctx, hits);
        return;
    }
    let joined = words.join(" ");
    // `su - postgres -c CMD`: the command is the -c string.
    if base(words[0]) == "su" {
        if let Some(i) = words.iter().position(|w| *w == "-c" || *w == "--command") {
            if let Some(cmd) = words.get(i + 1) {
                classify_shell_into(cmd, ctx, hits, depth + 1);
            }
        }
        return;
    }
    // Task runners: `npm run X`, `make X`, `just X` run what the project's files say.
    for text in super::scripts::task_text(&words, ctx.cwd) {
        classify_shell_into(&text, ctx, hits, depth + 1);
    }
    // Package runners and interpreters in front of the tool that does the work
    // (`npx prisma ...`, `poetry run alembic ...`, `uv run python -c ...`); code is read at
    // every stage.
    let mut stage: Vec<&str> = words.clone();
    for _ in 0..5 {
        interpreter_code(s, &stage, ctx, hits, depth);
        match super::packs::unwrap_once(&stage) {
            Some(i) if i < stage.len() => {
                stage.drain(..i);
            }
            _ => break,
        }
    }
    let words = stage;
    let first = words[0];
    let prog = program_name(first);
    let args = &words[1..];

    shell_text(s, first, prog, args, ctx, hits, depth);
    if prog == "eval" {
        classify_shell_into(&args.join(" "), ctx, hits, depth + 1);
    }
    remote_command(s, prog, args, ctx, hits, depth, fed);
    sql_client_text(s, prog, args, ctx, hits, fed);
    fed_text(s, prog, args, ctx, hits, depth, fed);
    filesystem_rules(prog, args, &joined, ctx, hits);
    overwrites(s, ctx, hits);
    tool_rules(prog, args, &joined, s, ctx, hits);
    for (rule, pack) in super::packs::matching(prog, args) {
        let mut h = hit(rule, &joined);
        h.database = matches!(pack, "orm" | "postgres");
        hits.push(h);
    }
    for r in &ctx.extra.rules {
        if let Some(c) = &r.command
            && base(c) == prog
            && r.args.iter().all(|a| args.contains(&a.as_str()))
        {
            hits.push(hit(&format!("hook.toml: {}", r.name), &joined));
        }
    }
}

/// The program's name as rules know it: the file name, without an npm version
/// (`prisma@5` -> `prisma`).
fn program_name(w: &str) -> &str {
    let b = base(w);
    match b.find('@') {
        Some(i) if i > 0 => &b[..i],
        _ => b,
    }
}

/// Text a command writes into a pipe that ends in a SQL client, an interpreter or a
/// shell: `echo ... | psql`, `cat reset.sql | psql`, `echo 'User.delete_all' | rails c`,
/// SQL one client generates for another (`psql -Atc "select 'DROP TABLE ' || ..." | psql`).
fn fed_text(
    s: &Simple,
    prog: &str,
    args: &[&str],
    ctx: &Context,
    hits: &mut Vec<Hit>,
    depth: usize,
    fed: Sink,
) {
    if fed == Sink::None {
        return;
    }
    let mut texts: Vec<String> = s.heredocs.clone();
    if ["echo", "printf", "cat"].contains(&prog) {
        for a in args.iter().filter(|a| !a.starts_with('-')) {
            texts.push(a.to_string());
            if prog == "cat" {
                texts.extend(read_named(a, ctx.cwd));
            }
        }
        for f in &s.inputs {
            texts.extend(read_named(f, ctx.cwd));
        }
    }
    if SQL_CLIENTS.contains(&prog) && fed == Sink::Sql {
        // The statements it prints are built from its string literals.
        for sql in sql_of_client(s, prog, args, ctx) {
            for lit in super::sql::quoted(&sql) {
                sql_hits(&lit, hits);
            }
        }
    }
    for t in &texts {
        match fed {
            Sink::Sql => sql_hits(t, hits),
            Sink::Code => {
                super::code::code_hits(t, hits);
                code_commands(t, ctx, hits, depth);
            }
            Sink::Shell => classify_shell_into(t, ctx, hits, depth + 1),
            Sink::None => {}
        }
    }
}

/// Commands run elsewhere: `ssh HOST CMD`, `docker exec|run ... CMD` (and compose,
/// podman, nerdctl), `kubectl exec ... -- CMD`, `heroku run CMD`, `railway run CMD`,
/// `fly ssh console -C CMD`. A container's mounts map its paths back to the host's.
fn remote_command(
    s: &Simple,
    prog: &str,
    args: &[&str],
    ctx: &Context,
    hits: &mut Vec<Hit>,
    depth: usize,
    fed: Sink,
) {
    let inner: Option<super::packs::Inside> = match prog {
        "ssh" => {
            // ssh [opts] host CMD...: the remote command is the words after the host.
            let mut i = 0;
            while i < args.len() && args[i].starts_with('-') {
                i += if ["-p", "-i", "-l", "-o", "-J", "-F"].contains(&args[i]) {
                    2
                } else {
                    1
                };
            }
            if args.len() > i + 1 {
                classify_shell_into(&args[i + 1..].join(" "), ctx, hits, depth + 1);
            }
            None
        }
        "docker" | "podman" | "nerdctl" => super::packs::container_command(args),
        "kubectl" | "oc" => args
            .iter()
            .position(|a| *a == "--")
            .filter(|_| args.contains(&"exec") || args.contains(&"run"))
            .map(|i| (args[i + 1..].to_vec(), Vec::new())),
        "heroku" | "railway" if args.first() == Some(&"run") => {
            let rest: Vec<&str> = args[1..]
                .iter()
                .copied()
                .skip_while(|a| a.starts_with('-'))
                .collect();
            Some((rest, Vec::new()))
        }
        "fly" | "flyctl" if args.contains(&"ssh") => {
            if let Some(i) = args.iter().position(|a| *a == "-C" || *a == "--command") {
                if let Some(cmd) = args.get(i + 1) {
                    classify_shell_into(cmd, ctx, hits, depth + 1);
                }
            }
            None
        }
        _ => None,
    };
    let Some((rest, mounts)) = inner else {
        return;
    };
    if rest.is_empty() {
        return;
    }
    let inner = Simple {
        words: rest.iter().map(|s| s.to_string()).collect(),
        ..s.clone()
    };
    if mounts.is_empty() {
        classify_simple(&inner, ctx, hits, depth + 1, fed);
        return;
    }
    // Inside the container, each mount's target stands for its source: a host path (a
    // volume job's, or one above or below it) or a named volume.
    let mut paths: Vec<PathBuf> = ctx.volume_paths.to_vec();
    let mut map: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    for (src, dst) in &mounts {
        let named = !src.starts_with(['/', '.', '~', '$']);
        let host = (!named).then(|| resolve(src, ctx.cwd));
        let counts = named
            || host.as_ref().is_some_and(|h| {
                ctx.volume_paths
                    .iter()
                    .any(|v| v.starts_with(h) || h.starts_with(v))
            });
        if counts {
            paths.push(PathBuf::from(dst));
            map.push((PathBuf::from(dst), host));
        }
    }
    let inside = Context {
        cwd: ctx.cwd,
        volume_paths: &paths,
        extra: ctx.extra,
    };
    let mut found = Vec::new();
    classify_simple(&inner, &inside, &mut found, depth + 1, fed);
    for mut h in found {
        let mut mapped = false;
        h.paths = h
            .paths
            .iter()
            .filter_map(|p| {
                for (dst, host) in &map {
                    if let Ok(rel) = p.strip_prefix(dst) {
                        mapped = true;
                        return host.as_ref().map(|h| h.join(rel));
                    }
                }
                Some(p.clone())
            })
            .collect();
        if mapped {
            h.rule = "container deletes inside a volume".into();
        }
        hits.push(h);
    }
}

/// Removals and overwrites of a volume job's data, a PostgreSQL data directory or a disk.
fn filesystem_rules(prog: &str, args: &[&str], joined: &str, ctx: &Context, hits: &mut Vec<Hit>) {
    let operands: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with('-'))
        .collect();
    let touched = |targets: &[&str], inside: bool| -> Vec<PathBuf> {
        targets
            .iter()
            .flat_map(|t| touched_volumes(t, ctx.cwd, ctx.volume_paths, inside))
            .collect()
    };
    let recursive = args.iter().any(|a| {
        *a == "--recursive"
            || (a.starts_with('-') && !a.starts_with("--") && a.contains(['r', 'R']))
    });
    match prog {
        "rm" | "rmdir" | "shred" | "srm" | "unlink" => {
            // At or above a volume, or recursively inside one (a subdirectory is part of its
            // data); a plain `rm FILE` inside one is left to the agent's own rules.
            let inside = recursive || prog != "rm";
            push_paths(
                hits,
                joined,
                "rm -r of a volume job's path",
                touched(&operands, inside),
            );
            let docker_volumes = [
                "/var/lib/docker/volumes",
                "/var/lib/containers/storage/volumes",
            ];
            if recursive
                && operands.iter().any(|t| {
                    let t = resolve(t, ctx.cwd);
                    docker_volumes.iter().any(|d| t.starts_with(d))
                })
            {
                hits.push(hit("docker volume removal", joined));
            }
            if (recursive || prog == "rmdir") && operands.iter().any(|t| in_pg_data_dir(t, ctx.cwd))
            {
                let mut h = hit("rm -r of a PostgreSQL data directory", joined);
                h.database = true;
                hits.push(h);
            }
            if prog == "shred" && operands.iter().any(|t| t.starts_with("/dev/")) {
                hits.push(hit("disk wipe", joined));
            }
        }
        "mv" if operands.len() >= 2 => {
            // Moving a volume (or a directory above it) away.
            let sources = &operands[..operands.len() - 1];
            push_paths(
                hits,
                joined,
                "rm -r of a volume job's path",
                touched(sources, false),
            );
        }
        "git"
            if args.first() == Some(&"clean")
                && args.iter().any(|a| a.starts_with('-') && a.contains('f')) =>
        {
            let targets: Vec<&str> = operands.iter().skip(1).copied().collect();
            let targets = if targets.is_empty() {
                vec!["."]
            } else {
                targets
            };
            push_paths(
                hits,
                joined,
                "rm -r of a volume job's path",
                touched(&targets, true),
            );
        }
        "find"
            if args.contains(&"-delete")
                || args.windows(2).any(|w| {
                    matches!(w[0], "-exec" | "-execdir" | "-ok")
                        && matches!(base(w[1]), "rm" | "shred" | "unlink" | "rmdir")
                }) =>
        {
            let roots: Vec<&str> = args
                .iter()
                .take_while(|a| !a.starts_with('-'))
                .copied()
                .collect();
            push_paths(
                hits,
                joined,
                "find -delete in a volume job's path",
                touched(&roots, true),
            );
        }
        "rsync"
            if args
                .iter()
                .any(|a| a.starts_with("--delete") || *a == "--remove-source-files") =>
        {
            // The destination (the last operand) loses what the source lacks.
            let dst: Vec<&str> = operands
                .iter()
                .rev()
                .find(|a| !a.contains(':'))
                .copied()
                .into_iter()
                .collect();
            push_paths(
                hits,
                joined,
                "rsync --delete into a volume job's path",
                touched(&dst, true),
            );
        }
        "truncate" => {
            let mut targets = Vec::new();
            let mut i = 0;
            while i < args.len() {
                if matches!(args[i], "-s" | "--size" | "-r" | "--reference") {
                    i += 1;
                } else if !args[i].starts_with('-') {
                    targets.push(args[i]);
                }
                i += 1;
            }
            push_paths(
                hits,
                joined,
                "overwrite in a volume job's path",
                touched(&targets, true),
            );
        }
        "dd" => {
            if let Some(of) = args.iter().find_map(|a| a.strip_prefix("of=")) {
                if of.starts_with("/dev/")
                    && !matches!(
                        of,
                        "/dev/null" | "/dev/stdout" | "/dev/stderr" | "/dev/zero"
                    )
                {
                    hits.push(hit("disk wipe", joined));
                }
                push_paths(
                    hits,
                    joined,
                    "overwrite in a volume job's path",
                    touched(&[of], true),
                );
            }
        }
        p if p.starts_with("mkfs") || matches!(p, "wipefs" | "blkdiscard") => {
            hits.push(hit("disk wipe", joined))
        }
        "sgdisk" if args.iter().any(|a| a.starts_with("--zap") || *a == "-Z") => {
            hits.push(hit("disk wipe", joined))
        }
        "zfs" | "zpool" if args.first() == Some(&"destroy") => {
            hits.push(hit("volume manager destroy", joined))
        }
        "lvremove" | "vgremove" | "pvremove" => hits.push(hit("volume manager destroy", joined)),
        "btrfs" if args.contains(&"delete") => hits.push(hit("volume manager destroy", joined)),
        _ => {}
    }
}

fn push_paths(hits: &mut Vec<Hit>, joined: &str, rule: &str, paths: Vec<PathBuf>) {
    if !paths.is_empty() {
        hits.push(Hit {
            paths,
            ..hit(rule, joined)
        });
    }
}

/// `> FILE`: a file inside a volume job's path truncated by a redirection.
fn overwrites(s: &Simple, ctx: &Context, hits: &mut Vec<Hit>) {
    let paths: Vec<PathBuf> = s
        .outputs
        .iter()
        .flat_map(|o| touched_volumes(o, ctx.cwd, ctx.volume_paths, true))
        .collect();
    if !paths.is_empty() {
        hits.push(Hit {
            paths,
            ..hit("overwrite in a volume job's path", &s.outputs.join(" "))
        });
    }
}

/// Rules that need more than the words of a pack: option values, files the call names,
/// HTTP methods and bodies.
fn tool_rules(
    prog: &str,
    args: &[&str],
    joined: &str,
    s: &Simple,
    ctx: &Context,
    hits: &mut Vec<Hit>,
) {
    let has = |w: &str| args.contains(&w);
    let db = |rule: &str| {
        let mut h = hit(rule, joined);
        h.database = true;
        h
    };
    match prog {
        "pg_ctl" | "pg_ctlcluster"
            if has("stop")
                && (args
                    .windows(2)
                    .any(|w| w[0] == "-m" && w[1].starts_with('i'))
                    || args.iter().any(|a| {
                        *a == "-mi"
                            || *a == "-mimmediate"
                            || *a == "--mode=immediate"
                            || *a == "--mode=i"
                    })) =>
        {
            hits.push(db("pg_ctl stop -m immediate"))
        }
        "pg_restore"
            if args.iter().any(|a| {
                *a == "--clean" || (a.starts_with('-') && !a.starts_with("--") && a.contains('c'))
            }) && args.iter().any(|a| {
                *a == "-d"
                    || a.starts_with("--dbname")
                    || (a.starts_with("-d") && !a.starts_with("--"))
            }) =>
        {
            hits.push(db("pg_restore --clean"))
        }
        "pg_resetwal" | "pg_resetxlog" => hits.push(db("pg_resetwal")),
        "kubectl" | "oc" if has("delete") => {
            // `kubectl delete -f FILE`: the kinds the file declares.
            let files = args
                .windows(2)
                .filter(|w| w[0] == "-f" || w[0] == "--filename")
                .map(|w| w[1]);
            for f in files {
                let text = read_named(f, ctx.cwd).unwrap_or_default();
                let storage = text.lines().any(|l| {
                    l.trim_start().strip_prefix("kind:").is_some_and(|k| {
                        let k = k.trim().to_lowercase();
                        super::packs::KUBE_STORAGE.contains(&k.as_str())
                            || k.contains("postgres")
                            || k == "cluster"
                    })
                });
                if storage {
                    hits.push(hit("kubectl delete of storage or a namespace", joined));
                }
            }
        }
        "terraform" | "tofu" | "terragrunt" => {
            let replaced = args
                .iter()
                .filter_map(|a| a.strip_prefix("-replace="))
                .any(|r| {
                    let r = r.to_lowercase();
                    [
                        "db",
                        "rds",
                        "sql",
                        "postgres",
                        "mysql",
                        "database",
                        "volume",
                        "disk",
                        "bucket",
                        "redis",
                        "elasticache",
                    ]
                    .iter()
                    .any(|k| r.contains(k))
                });
            if replaced {
                hits.push(hit("terraform replace of a data resource", joined));
            }
        }
        "aws" if has("rds") => {
            let zero = args
                .windows(2)
                .any(|w| w[0] == "--backup-retention-period" && w[1] == "0")
                || has("--backup-retention-period=0");
            if zero {
                hits.push(hit("cloud delete of data", joined));
            }
        }
        "curl" | "wget" | "http" | "https" | "xh" | "httpie" => {
            let mut all: Vec<&str> = args.to_vec();
            all.extend(s.heredocs.iter().map(String::as_str));
            if let Some(h) = http_delete(&all) {
                hits.push(hit(&h, joined));
            }
        }
        _ => {}
    }
}

/// Shell text a call runs: `sh -c STRING`, heredocs into a shell, a script it names
/// (`bash reset.sh`, `./reset.sh`, `source reset.sh`), read under the cwd.
fn shell_text(
    s: &Simple,
    first: &str,
    prog: &str,
    args: &[&str],
    ctx: &Context,
    hits: &mut Vec<Hit>,
    depth: usize,
) {
    if SHELLS.contains(&prog) {
        let c_flag = args.iter().position(|a| {
            *a == "-c" || (a.starts_with('-') && a.ends_with('c') && !a.starts_with("--"))
        });
        if let Some(i) = c_flag
            && let Some(cmd) = args.get(i + 1)
        {
            classify_shell_into(cmd, ctx, hits, depth + 1);
        }
        for h in &s.heredocs {
            classify_shell_into(h, ctx, hits, depth + 1);
        }
        // `bash reset.sh`: the script the call names, read where it lies under the cwd.
        if c_flag.is_none()
            && let Some(script) = args.iter().find(|a| !a.starts_with('-'))
            && let Some(text) = read_named(script, ctx.cwd)
        {
            classify_shell_into(&text, ctx, hits, depth + 1);
        }
        for f in &s.inputs {
            if let Some(text) = read_named(f, ctx.cwd) {
                classify_shell_into(&text, ctx, hits, depth + 1);
            }
        }
    }
    // `./reset.sh`, `source reset.sh`
    if (first.starts_with("./") && first.ends_with(".sh")) || prog == "source" || prog == "." {
        let script = if first.starts_with("./") {
            first
        } else {
            args.first().copied().unwrap_or("")
        };
        if let Some(text) = read_named(script, ctx.cwd) {
            classify_shell_into(&text, ctx, hits, depth + 1);
        }
    }
}

/// Code an interpreter or console runs (`python -c`, `node -e`, a script it names, a
/// heredoc or `< FILE`): SQL in its string literals, ORM mass deletes, HTTP DELETEs.
fn interpreter_code(s: &Simple, words: &[&str], ctx: &Context, hits: &mut Vec<Hit>, depth: usize) {
    let Some((inline, file, stdin)) = super::code::code_call(words) else {
        return;
    };
    let mut code = inline;
    code.extend(file.and_then(|f| read_named(&f, ctx.cwd)));
    if stdin {
        code.extend(s.heredocs.iter().cloned());
        for f in &s.inputs {
            code.extend(read_named(f, ctx.cwd));
        }
    }
    for c in &code {
        super::code::code_hits(c, hits);
        code_commands(c, ctx, hits, depth);
    }
}

/// Command lines the code runs (`subprocess.run(['dropdb', 'app'])`), checked as such.
fn code_commands(code: &str, ctx: &Context, hits: &mut Vec<Hit>, depth: usize) {
    for cmd in super::code::shell_in_code(code) {
        classify_shell_into(&cmd, ctx, hits, depth + 1);
    }
}

/// SQL a client runs: `-c`/`--command` strings (also in option clusters, `-Atc`),
/// heredocs, here-strings and files (`-f`, `< FILE`).
fn sql_client_text(
    s: &Simple,
    prog: &str,
    args: &[&str],
    ctx: &Context,
    hits: &mut Vec<Hit>,
    _fed: Sink,
) {
    if SQL_CLIENTS.contains(&prog) {
        for sql in sql_of_client(s, prog, args, ctx) {
            sql_hits(&sql, hits);
        }
    } else if let Some(r) = super::packs::sql_runner(prog, args) {
        for sql in sql_of_runner(r, s, prog, args, ctx) {
            sql_hits(&sql, hits);
        }
    }
}

/// The SQL texts a SQL runner call runs (`prisma db execute --file F`, `wrangler d1
/// execute --command=SQL`, `turso db shell DB SQL`, `manage.py dbshell <<< SQL`).
fn sql_of_runner(
    r: &super::packs::SqlRunner,
    s: &Simple,
    prog: &str,
    args: &[&str],
    ctx: &Context,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with('-') => (k, Some(v)),
            _ => (*a, None),
        };
        let value = inline.or_else(|| args.get(i + 1).copied());
        if r.sql_options.contains(&key) {
            out.extend(value.map(str::to_string));
        } else if r.file_options.contains(&key) {
            out.extend(value.and_then(|f| read_named(f, ctx.cwd)));
        }
    }
    if let Some(k) = r.sql_operand {
        let pos = super::packs::positional(prog, args);
        out.extend(pos.get(r.words.len() + k).map(|w| w.to_string()));
    }
    if r.stdin {
        out.extend(s.heredocs.iter().cloned());
        for f in &s.inputs {
            out.extend(read_named(f, ctx.cwd));
        }
    }
    out
}

/// The SQL texts a client call runs.
fn sql_of_client(s: &Simple, prog: &str, args: &[&str], ctx: &Context) -> Vec<String> {
    let mut out = Vec::new();
    // `-Atc SQL`, `-qf FILE`: a cluster of one-letter options ends in the one with a value.
    let cluster_ends = |a: &str, c: char| {
        a.len() > 2
            && a.starts_with('-')
            && !a.starts_with("--")
            && a.ends_with(c)
            && a[1..].chars().all(|x| x.is_ascii_alphabetic())
    };
    let command_flag = if matches!(prog, "mysql" | "mariadb") {
        'e'
    } else {
        'c'
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        let next = args.get(i + 1).copied();
        if (a == "-f" || a == "--file" || cluster_ends(a, 'f')) && next.is_some() {
            out.extend(next.and_then(|f| read_named(f, ctx.cwd)));
            i += 1;
        } else if let Some(f) = a.strip_prefix("--file=") {
            out.extend(read_named(f, ctx.cwd));
        } else if (a == "-c"
            || a == "--command"
            || a == "-e"
            || a == "--execute"
            || cluster_ends(a, command_flag))
            && next.is_some()
        {
            out.extend(next.map(str::to_string));
            i += 1;
        } else if let Some(v) = a
            .strip_prefix("--command=")
            .or_else(|| a.strip_prefix("--execute="))
        {
            out.push(v.to_string());
        } else if prog == "sqlite3" && i > 0 && !a.starts_with('-') {
            out.push(a.to_string());
        }
        i += 1;
    }
    out.extend(s.heredocs.iter().cloned());
    for f in &s.inputs {
        out.extend(read_named(f, ctx.cwd));
    }
    // `psql -c "$(cat reset.sql)"`, `psql -c "$(< reset.sql)"`: the file is the SQL.
    let substituted: Vec<String> = out
        .iter()
        .flat_map(|sql| sql.match_indices("$(").map(move |(at, _)| &sql[at + 2..]))
        .filter_map(|rest| {
            let inner = rest.split(')').next()?.trim();
            let file = inner
                .strip_prefix("cat ")
                .or_else(|| inner.strip_prefix('<'))?
                .trim();
            read_named(file, ctx.cwd)
        })
        .collect();
    out.extend(substituted);
    out
}

fn is_assignment(w: &str) -> bool {
    w.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// An HTTP call that deletes data: a GraphQL delete mutation, or DELETE of a data resource.
fn http_delete(args: &[&str]) -> Option<String> {
    let text = args.join(" ");
    if let Some(m) = graphql_delete(&text) {
        return Some(format!("GraphQL delete mutation {m}"));
    }
    let method_delete = args.windows(2).any(|w| {
        (w[0] == "-X" || w[0] == "--request" || w[0] == "--method")
            && w[1].eq_ignore_ascii_case("DELETE")
    }) || args.iter().any(|a| {
        a.eq_ignore_ascii_case("-XDELETE")
            || *a == "DELETE"
            || ["--method=", "--request=", "-X="].iter().any(|p| {
                a.strip_prefix(p)
                    .is_some_and(|m| m.eq_ignore_ascii_case("DELETE"))
            })
    });
    let lower = text.to_lowercase();
    let data_resource = super::code::DATA_RESOURCES
        .iter()
        .any(|k| lower.contains(k));
    (method_delete && data_resource).then(|| "HTTP DELETE of a data resource".to_string())
}

/// A GraphQL mutation whose name deletes something data-bearing (`volumeDelete`,
/// `deleteDatabase`, `projectDelete`, ...).
pub(crate) fn graphql_delete(text: &str) -> Option<String> {
    // Only a GraphQL document: prose that names `volumeDelete` is not a call of it.
    let lower = text.to_lowercase();
    if !lower.contains("mutation") || !text.contains('{') {
        return None;
    }
    let nouns = [
        "volume",
        "database",
        "db",
        "service",
        "project",
        "environment",
        "snapshot",
        "backup",
        "bucket",
        "cluster",
        "disk",
        "plugin",
        "instance",
        "branch",
    ];
    for ident in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        let l = ident.to_lowercase();
        if l.len() < 8 || !(l.contains("delete") || l.contains("destroy") || l.contains("drop")) {
            continue;
        }
        if nouns.iter().any(|n| l.contains(n)) {
            return Some(ident.to_string());
        }
    }
    None
}

pub(crate) fn sql_hits(sql: &str, hits: &mut Vec<Hit>) {
    for what in risky_sql(sql) {
        let rule = what.split(':').next().unwrap_or("SQL").to_string();
        let mut h = hit(&rule, &what);
        h.database = true;
        hits.push(h);
    }
}

/// Classify an MCP tool call. A database tool's strings are read as SQL; any tool's
/// SQL-named arguments (`sql`, `statement`, ...) too; GraphQL documents are read for
/// delete mutations; shell-like tools' strings as command lines; and a tool whose own name
/// deletes something data-bearing is risky. Prose in other tools (an issue's body that
/// quotes `DROP TABLE`) is not a call.
pub(crate) fn classify_json(tool: &str, input: &serde_json::Value, ctx: &Context) -> Vec<Hit> {
    let lower_tool = tool.to_lowercase();
    let database_tool = [
        "sql",
        "query",
        "postgres",
        "pg",
        "database",
        "db",
        "supabase",
        "neon",
        "migration",
        "mysql",
        "sqlite",
        "prisma",
        "drizzle",
        "psql",
        "turso",
        "planetscale",
    ]
    .iter()
    .any(|k| lower_tool.contains(k));
    let mut strings = Vec::new();
    collect_strings(None, input, &mut strings);
    let mut hits = Vec::new();
    let shellish = [
        "bash",
        "shell",
        "exec",
        "run_command",
        "terminal",
        "start_process",
        "command",
    ]
    .iter()
    .any(|k| lower_tool.contains(k));
    for (key, s) in &strings {
        let key = key.to_lowercase();
        let sql_key = ["sql", "statement", "migration"]
            .iter()
            .any(|k| key.contains(k))
            || key == "query" && database_tool;
        if database_tool || sql_key {
            sql_hits(s, &mut hits);
        }
        if let Some(m) = graphql_delete(s) {
            hits.push(hit("GraphQL delete mutation", &format!("{m} in {tool}")));
        }
        if shellish {
            hits.extend(classify_shell(s, ctx));
        }
    }
    let words: Vec<&str> = lower_tool
        .split(|c: char| !c.is_ascii_alphanumeric())
        .collect();
    let verb = [
        "delete", "destroy", "drop", "remove", "purge", "wipe", "truncate", "reset",
    ];
    let noun = [
        "volume",
        "database",
        "db",
        "snapshot",
        "backup",
        "bucket",
        "project",
        "service",
        "table",
        "branch",
        "postgres",
        "redis",
        "disk",
        "collection",
        "index",
        "cluster",
        "instance",
        "store",
        "storage",
        "schema",
    ];
    if verb.iter().any(|v| lower_tool.contains(v))
        && noun.iter().any(|n| lower_tool.contains(n))
        && !words
            .iter()
            .any(|w| matches!(*w, "list" | "get" | "describe" | "show"))
    {
        hits.push(hit("MCP delete tool", tool));
    }
    for r in &ctx.extra.rules {
        if let Some(t) = &r.contains {
            let t = t.to_lowercase();
            if strings.iter().any(|(_, s)| s.to_lowercase().contains(&t)) || lower_tool.contains(&t)
            {
                hits.push(hit(&format!("hook.toml: {}", r.name), &t));
            }
        }
    }
    dedup(hits)
}

fn collect_strings(key: Option<&str>, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) => {
            // Arguments given as a JSON string (Cursor's beforeMCPExecution).
            if let Ok(inner) = serde_json::from_str::<serde_json::Value>(s)
                && (inner.is_object() || inner.is_array())
            {
                collect_strings(key, &inner, out);
            } else {
                out.push((key.unwrap_or("").to_string(), s.clone()));
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(key, x, out)),
        serde_json::Value::Object(m) => {
            m.iter().for_each(|(k, x)| collect_strings(Some(k), x, out))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(vols: &'a [PathBuf], extra: &'a Extra) -> Context<'a> {
        Context {
            cwd: Some(Path::new("/home/dev/project")),
            volume_paths: vols,
            extra,
        }
    }

    fn rules_of(cmd: &str) -> Vec<String> {
        let vols = vec![PathBuf::from("/var/lib/app-data")];
        let extra = Extra {
            rules: vec![ExtraRule {
                name: "wipe tool".into(),
                command: Some("mytool".into()),
                args: vec!["wipe".into()],
                contains: None,
            }],
        };
        classify_shell(cmd, &ctx(&vols, &extra))
            .into_iter()
            .map(|h| h.rule)
            .collect()
    }

    #[test]
    fn risky_commands_and_where_they_hide() {
        let risky = [
            ("psql -c 'DROP TABLE bookings'", "SQL DROP"),
            ("psql app -c \"truncate events\"", "SQL TRUNCATE"),
            (
                "psql --command='DELETE FROM users'",
                "SQL DELETE without WHERE",
            ),
            (
                "psql -c 'UPDATE users SET admin = true'",
                "SQL UPDATE without WHERE",
            ),
            (
                "psql -c 'DELETE FROM users WHERE 1=1'",
                "SQL DELETE without WHERE",
            ),
            (
                "psql -c 'ALTER TABLE users DROP COLUMN email'",
                "SQL ALTER ... DROP",
            ),
            ("echo 'drop database app;' | psql -h db", "SQL DROP"),
            (
                "psql -h db app <<EOF\nBEGIN;\nDROP TABLE x;\nCOMMIT;\nEOF",
                "SQL DROP",
            ),
            ("cat <<'SQL' | psql\ntruncate t;\nSQL", "SQL TRUNCATE"),
            (
                "bash -c \"psql -c 'drop schema public cascade'\"",
                "SQL DROP",
            ),
            ("sh -c 'cd /tmp && dropdb app'", "dropdb"),
            ("sudo -u postgres dropdb app", "dropdb"),
            ("env PGHOST=db dropdb app", "dropdb"),
            ("ls && dropdb app", "dropdb"),
            ("true; dropdb app", "dropdb"),
            ("x=$(dropdb app)", "dropdb"),
            (
                "pg_ctl stop -D /data -m immediate",
                "pg_ctl stop -m immediate",
            ),
            ("rm -rf /var/lib/app-data", "rm -r of a volume job's path"),
            ("rm -r /var/lib/", "rm -r of a volume job's path"),
            ("sudo rm -fr /var/lib/*", "rm -r of a volume job's path"),
            (
                "cd / && rm -rf var/lib/app-data",
                "rm -r of a volume job's path",
            ),
            ("docker volume rm app_data", "docker volume removal"),
            ("docker volume prune -f", "docker volume removal"),
            ("docker compose down -v", "docker volume removal"),
            (
                "kubectl delete pvc data-app-0",
                "kubectl delete of storage or a namespace",
            ),
            (
                "kubectl -n prod delete namespace prod",
                "kubectl delete of storage or a namespace",
            ),
            (
                "kubectl delete statefulset/db",
                "kubectl delete of storage or a namespace",
            ),
            ("terraform destroy -auto-approve", "terraform destroy"),
            ("terraform apply -destroy", "terraform destroy"),
            ("railway volume delete vol_123", "railway delete"),
            ("railway down -y", "railway delete"),
            ("fly volumes destroy vol_abc -y", "fly destroy"),
            (
                "heroku pg:reset DATABASE_URL --confirm app",
                "heroku destroy",
            ),
            (
                "aws rds delete-db-instance --db-instance-identifier prod",
                "cloud delete of data",
            ),
            (
                "aws ec2 delete-volume --volume-id vol-1",
                "cloud delete of data",
            ),
            ("aws s3 rb s3://backups --force", "cloud delete of data"),
            (
                "aws s3 rm s3://backups/ --recursive",
                "cloud delete of data",
            ),
            (
                "curl -X POST https://backboard.railway.app/graphql/v2 -d '{\"query\":\"mutation { volumeDelete(volumeId: \\\"v1\\\") }\"}'",
                "GraphQL delete mutation volumeDelete",
            ),
            (
                "curl -X DELETE https://api.example.com/v1/databases/prod",
                "HTTP DELETE of a data resource",
            ),
            ("backstop prune app --yes", "backstop prune --yes"),
            (
                "backstop --jobs /etc/backstop/jobs restore app --yes",
                "backstop restore --yes",
            ),
            ("mytool wipe --all", "hook.toml: wipe tool"),
            ("ssh db1 'dropdb app'", "dropdb"),
            (
                "docker exec -it pg psql -U postgres -c 'DROP DATABASE app'",
                "SQL DROP",
            ),
        ];
        for (cmd, want) in risky {
            let got = rules_of(cmd);
            assert!(
                got.iter().any(|r| r == want),
                "{cmd:?}: want {want:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn harmless_commands_pass() {
        for cmd in [
            "ls -la",
            "cargo test",
            "psql -c 'SELECT count(*) FROM users'",
            "psql -c 'DELETE FROM sessions WHERE expires < now()'",
            "psql -c \"UPDATE users SET name = 'x' WHERE id = 1\"",
            "echo 'drop table x'",
            "grep -r DROP src/",
            "rm -rf target/",
            "rm -rf /var/lib/app-data-other",
            "rm /var/lib/app-data/cache.tmp",
            "docker volume ls",
            "docker compose down",
            "kubectl delete pod web-1",
            "terraform plan",
            "aws s3 ls s3://backups",
            "git commit -m 'drop the old table'",
            "backstop prune app --dry-run",
            "mytool status",
            "psql -c \"SELECT 'DROP TABLE x'\"",
        ] {
            let got = rules_of(cmd);
            assert!(got.is_empty(), "{cmd:?} is harmless, got {got:?}");
        }
    }

    #[test]
    fn mcp_arguments() {
        let vols = vec![];
        let extra = Extra::default();
        let c = ctx(&vols, &extra);
        let v = serde_json::json!({"sql": "TRUNCATE orders"});
        assert!(!classify_json("mcp__postgres__query", &v, &c).is_empty());
        let v = serde_json::json!({"query": "SELECT 1"});
        assert!(classify_json("mcp__postgres__query", &v, &c).is_empty());
        let v = serde_json::json!("{\"query\": \"mutation { volumeDelete(id: 1) }\"}");
        assert!(!classify_json("graphql", &v, &c).is_empty());
        assert!(
            !classify_json("mcp__railway__volume_delete", &serde_json::json!({}), &c).is_empty()
        );
    }

    #[test]
    fn the_hook_fails_closed_on_what_it_cannot_read() {
        // An unterminated heredoc is read to the end of the text (it once panicked).
        assert!(rules_of("psql -d app <<SQL\nDROP TABLE users;").contains(&"SQL DROP".to_string()));
        assert!(rules_of("cat <<EOF").is_empty());
        // Nesting past the limit is a limit hit (the hook denies), never "harmless".
        let mut cmd = "psql -c 'SELECT 1'".to_string();
        for _ in 0..12 {
            cmd = format!("bash -c {}", serde_json::to_string(&cmd).unwrap());
        }
        assert!(
            rules_of(&cmd).iter().any(|r| r.starts_with(LIMIT)),
            "{:?}",
            rules_of(&cmd)
        );
        // Code that runs a command that runs code ...: the same depth limit.
        // (Each level escapes the one inside it: the text grows fourfold per level.)
        let mut cmd = "dropdb app".to_string();
        for _ in 0..9 {
            let code = format!(
                "import subprocess; subprocess.run({})",
                serde_json::to_string(&cmd).unwrap()
            );
            cmd = format!("python3 -c {}", serde_json::to_string(&code).unwrap());
        }
        assert!(
            rules_of(&cmd).iter().any(|r| r.starts_with(LIMIT)),
            "{:?}",
            rules_of(&cmd)
        );
        // A file the call runs that is larger than the hook reads: risky, not harmless.
        let dir = tempfile::tempdir().unwrap();
        let mut sql = "SELECT 1;\n".repeat(150_000);
        sql.push_str("DROP TABLE users;\n");
        std::fs::write(dir.path().join("big.sql"), sql).unwrap();
        assert_eq!(
            rules_in(dir.path(), "psql app -f big.sql"),
            ["a file the call runs is larger than 1 MiB"]
        );
        // Many dollar-quoted strings: each is skipped where it closes.
        let many: String = (0..20_000).map(|i| format!("$t{i}$ x $t{i}$ ")).collect();
        assert!(
            rules_of(&format!("psql -c \"SELECT {many}; DROP TABLE t\""))
                .contains(&"SQL DROP".to_string())
        );
    }

    /// Random command lines built from the pieces the parser treats specially (quotes,
    /// substitutions, heredocs, groups, redirections, variables, task runners,
    /// containers): the classifier must return, never panic, on any of them.
    #[test]
    fn random_command_lines_never_panic() {
        const PIECES: &[&str] = &[
            "'",
            "\"",
            "$(",
            ")",
            "(",
            "`",
            "<<",
            "<<-",
            "<<<",
            "EOF",
            "\n",
            "|",
            "||",
            "&",
            "&&",
            ";",
            "psql",
            "-c",
            "-Atc",
            "DROP TABLE t",
            "{",
            "}",
            "${",
            ":?",
            ":-",
            "\\",
            ">",
            ">>",
            "2>&1",
            "&>",
            " ",
            "rm",
            "-rf",
            "/",
            "*",
            "$'",
            "\\x4",
            "cd",
            "..",
            "make",
            "npm run",
            "docker run -v a:/b",
            "kubectl exec --",
            "sudo -iu",
            "env",
            "$X",
            "X=/var/lib/app-data",
            "for",
            "do",
            "done",
            "su -c",
            "python -c",
            "$$",
            "/*",
            "*/",
            "--",
            "\\c",
            "é",
            "\u{0}",
            "cat >",
            "x.sql",
            "-f",
            "#",
            "=",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let cmd: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let _ = rules_of(&cmd);
        }
    }

    fn rules_in(dir: &Path, cmd: &str) -> Vec<String> {
        let extra = Extra::default();
        let ctx = Context {
            cwd: Some(dir),
            volume_paths: &[],
            extra: &extra,
        };
        classify_shell(cmd, &ctx)
            .into_iter()
            .map(|h| h.rule)
            .collect()
    }

    #[test]
    fn files_scripts_and_one_liners_a_call_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("reset.sql"), "-- reset\nTRUNCATE bookings;\n").unwrap();
        std::fs::write(d.join("fine.sql"), "SELECT 1;\n").unwrap();
        std::fs::write(d.join("wipe.sh"), "#!/bin/sh\npsql -c 'DROP TABLE users'\n").unwrap();
        std::fs::write(
            d.join("task.py"),
            "import psycopg\nwith psycopg.connect() as c:\n    c.execute(\"DELETE FROM users\")\n",
        )
        .unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("evil.sql"), "DROP TABLE x;").unwrap();
        std::os::unix::fs::symlink(outside.path().join("evil.sql"), d.join("link.sql")).unwrap();
        let has = |cmd: &str, rule: &str| {
            let r = rules_in(d, cmd);
            assert!(r.iter().any(|x| x.starts_with(rule)), "{cmd}: {r:?}");
        };
        has("psql -d app -f reset.sql", "SQL TRUNCATE");
        has("psql -d app < reset.sql", "SQL TRUNCATE");
        has("cat reset.sql | psql -d app", "SQL TRUNCATE");
        has(
            "docker exec -i db psql -U postgres < reset.sql",
            "SQL TRUNCATE",
        );
        has("bash wipe.sh", "SQL DROP");
        has("./wipe.sh", "SQL DROP");
        has("python3 task.py", "SQL DELETE");
        has(
            "python3 -c 'import psycopg; psycopg.connect().execute(\"TRUNCATE users\")'",
            "SQL TRUNCATE",
        );
        has(
            "node -e \"require('pg'); c.query('DROP TABLE users')\"",
            "SQL DROP",
        );
        has("ruby -e 'User.delete_all'", "ORM mass delete");
        has("psql <<< \"TRUNCATE users\"", "SQL TRUNCATE");
        has("psql -c $'-- note\\nTRUNCATE users'", "SQL TRUNCATE");
        has("psql -c 'DROP/**/TABLE users'", "SQL DROP");
        // Harmless: a harmless file, a file outside the cwd (through a symlink), a file
        // that is not there.
        assert!(rules_in(d, "psql -f fine.sql").is_empty());
        assert!(rules_in(d, "psql -f link.sql").is_empty());
        assert!(rules_in(d, "psql -f missing.sql").is_empty());
        assert!(rules_in(d, "python3 -c 'print(1)'").is_empty());
    }

    #[test]
    fn parts_of_a_volume_count_and_help_does_not() {
        for (cmd, rule) in [
            (
                "rm -rf /var/lib/app-data/uploads",
                "rm -r of a volume job's path",
            ),
            (
                "shred -u /var/lib/app-data/key",
                "rm -r of a volume job's path",
            ),
            (
                "find /var/lib/app-data -name '*.tmp' -exec rm {} +",
                "find -delete in a volume job's path",
            ),
            (
                "rsync -a --delete ./empty/ /var/lib/app-data/",
                "rsync --delete into a volume job's path",
            ),
        ] {
            assert!(
                rules_of(cmd).contains(&rule.to_string()),
                "{cmd}: {:?}",
                rules_of(cmd)
            );
        }
        for harmless in [
            "rm -rf /tmp/build",
            "dropdb --help",
            "rsync -a --delete /var/lib/app-data/ /backup/app/",
            "find /var/lib/app-data -name x",
            "terraform destroy --help",
        ] {
            assert!(
                rules_of(harmless).is_empty(),
                "{harmless}: {:?}",
                rules_of(harmless)
            );
        }
    }
}
