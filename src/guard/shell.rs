//! A shell command line as agents write it, split into pipelines of simple commands:
//! quotes, `|`, `&&`/`||`/`;`, heredocs, and the command strings of `$(...)` and backticks
//! returned to be checked on their own.

/// A simple command: its words (quotes removed), any heredoc and here-string bodies fed
/// to it, the files it reads on stdin (`< FILE`) and the files it truncates (`> FILE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Simple {
    pub words: Vec<String>,
    pub heredocs: Vec<String>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// Marks, among a command's words while it is parsed, that the next word is a here-string
/// body (`<<< WORD`).
const HERE_STRING: &str = "\u{1}<<<";
/// Marks that the next word is a file the command truncates (`> FILE`, `>| FILE`).
const TRUNCATE: &str = "\u{1}>";
/// Marks that the next word is a file the command appends to (`>> FILE`).
const APPEND: &str = "\u{1}>>";

/// A pipeline: simple commands joined by `|`.
pub(crate) type Pipeline = Vec<Simple>;

/// Split a command line into pipelines of simple commands. Also returns the command
/// strings found in `$(...)` and backticks, to be checked on their own.
pub(crate) fn parse_shell(src: &str) -> (Vec<Pipeline>, Vec<String>) {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut pipelines = Vec::new();
    let mut pipeline: Pipeline = Vec::new();
    let mut cur = Simple::default();
    let mut word = String::new();
    let mut in_word = false;
    let mut nested = Vec::new();
    let mut pending_heredocs: Vec<(String, bool)> = Vec::new();
    // Where each open `( ... )` or `{ ... }` group started, among the pipelines.
    let mut groups: Vec<usize> = Vec::new();
    let mut closed: Option<usize>;
    let end_word = |cur: &mut Simple, word: &mut String, in_word: &mut bool| {
        if *in_word {
            cur.words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() => {
                if chars[i + 1] != '\n' {
                    word.push(chars[i + 1]);
                    in_word = true;
                }
                i += 2;
                continue;
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() && "\"\\$`".contains(chars[i + 1]) {
                        i += 1;
                    } else if chars[i] == '$' && chars.get(i + 1) == Some(&'(') {
                        let (inner, next) = balanced(&chars, i + 2);
                        nested.push(inner.clone());
                        word.push_str(&format!("$({inner})"));
                        i = next;
                        continue;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                let (inner, next) = balanced(&chars, i + 2);
                nested.push(inner.clone());
                word.push_str(&format!("$({inner})"));
                in_word = true;
                i = next;
                continue;
            }
            '`' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != '`' {
                    j += 1;
                }
                nested.push(chars[start..j.min(chars.len())].iter().collect());
                in_word = true;
                i = j + 1;
                continue;
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            ' ' | '\t' => end_word(&mut cur, &mut word, &mut in_word),
            '$' if chars.get(i + 1) == Some(&'\'') => {
                // ANSI-C quoting: $'...' with backslash escapes.
                in_word = true;
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                        match chars[i] {
                            'n' => word.push('\n'),
                            't' => word.push('\t'),
                            'r' => word.push('\r'),
                            'x' => {
                                let hex: String =
                                    chars[i + 1..(i + 3).min(chars.len())].iter().collect();
                                match u8::from_str_radix(&hex, 16) {
                                    Ok(b) => {
                                        word.push(b as char);
                                        i += hex.len();
                                    }
                                    Err(_) => word.push('x'),
                                }
                            }
                            other => word.push(other),
                        }
                    } else {
                        word.push(chars[i]);
                    }
                    i += 1;
                }
            }
            '<' if chars.get(i + 1) == Some(&'<') && chars.get(i + 2) == Some(&'<') => {
                end_word(&mut cur, &mut word, &mut in_word);
                cur.words.push(HERE_STRING.to_string());
                i += 3;
                continue;
            }
            '<' if chars.get(i + 1) == Some(&'<') && chars.get(i + 2) != Some(&'<') => {
                end_word(&mut cur, &mut word, &mut in_word);
                let mut j = i + 2;
                let strip = chars.get(j) == Some(&'-');
                if strip {
                    j += 1;
                }
                while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
                    j += 1;
                }
                let mut delim = String::new();
                while j < chars.len() && !" \t\n;|&<>".contains(chars[j]) {
                    if chars[j] != '\'' && chars[j] != '"' {
                        delim.push(chars[j]);
                    }
                    j += 1;
                }
                pending_heredocs.push((delim, strip));
                i = j;
                continue;
            }
            '>' | '&' if c == '>' || chars.get(i + 1) == Some(&'>') => {
                // Redirections: `N>`, `&>`, `>>`, `>|`, `>&N`; a file descriptor number
                // before `>` is not a word of the command.
                if in_word && word.chars().all(|d| d.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                }
                end_word(&mut cur, &mut word, &mut in_word);
                let mut j = i + 1;
                if c == '&' {
                    j += 1; // `&>`
                }
                let append = chars.get(j) == Some(&'>');
                if append || chars.get(j) == Some(&'|') {
                    j += 1;
                }
                if chars.get(j) == Some(&'&') {
                    // `>&2`, `2>&1`: a descriptor, not a file.
                    j += 1;
                    while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '-') {
                        j += 1;
                    }
                } else {
                    cur.words
                        .push(if append { APPEND } else { TRUNCATE }.to_string());
                }
                i = j;
                continue;
            }
            '\n' | ';' | '&' | '|' => {
                end_word(&mut cur, &mut word, &mut in_word);
                // Heredoc bodies start on the line after their operator.
                if c == '\n' && !pending_heredocs.is_empty() {
                    let mut j = i + 1;
                    for (delim, strip) in std::mem::take(&mut pending_heredocs) {
                        let mut body = String::new();
                        loop {
                            // An unterminated heredoc runs to the end of the text.
                            if j >= chars.len() {
                                break;
                            }
                            let start = j;
                            while j < chars.len() && chars[j] != '\n' {
                                j += 1;
                            }
                            let line: String = chars[start..j].iter().collect();
                            j = (j + 1).min(chars.len() + 1);
                            let cmp = if strip {
                                line.trim_start_matches('\t')
                            } else {
                                &line
                            };
                            if cmp == delim || start >= chars.len() {
                                break;
                            }
                            body.push_str(&line);
                            body.push('\n');
                        }
                        cur.heredocs.push(body);
                    }
                    i = j.min(chars.len());
                    // The command the heredoc belonged to ends here.
                    flush(&mut cur, &mut pipeline, &mut pipelines, false);
                    continue;
                }
                let pipe = c == '|' && chars.get(i + 1) != Some(&'|');
                flush(&mut cur, &mut pipeline, &mut pipelines, pipe);
                if (c == '|' || c == '&') && chars.get(i + 1) == Some(&c) {
                    i += 1;
                }
            }
            '(' | '{' if !in_word => {
                end_word(&mut cur, &mut word, &mut in_word);
                groups.push(pipelines.len());
            }
            ')' | '}' if !in_word || c == ')' => {
                // `(cd db && psql -f x.sql)`: a `)` ends the word before it.
                end_word(&mut cur, &mut word, &mut in_word);
                flush(&mut cur, &mut pipeline, &mut pipelines, false);
                closed = groups.pop();
                i += 1;
                // `{ echo ...; echo ...; } | psql`: the group's commands feed the pipe.
                let mut j = i;
                while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
                    j += 1;
                }
                if chars.get(j) == Some(&'|') && chars.get(j + 1) != Some(&'|') {
                    if let Some(start) = closed.filter(|s| *s < pipelines.len()) {
                        pipeline = pipelines.drain(start..).flatten().collect();
                    }
                    i = j + 1;
                }
                continue;
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    end_word(&mut cur, &mut word, &mut in_word);
    flush(&mut cur, &mut pipeline, &mut pipelines, false);
    (pipelines, nested)
}

fn flush(cur: &mut Simple, pipeline: &mut Pipeline, pipelines: &mut Vec<Pipeline>, pipe: bool) {
    // Here-strings and `< FILE` are input, not arguments.
    let mut words = Vec::new();
    let mut it = std::mem::take(&mut cur.words).into_iter();
    while let Some(w) = it.next() {
        if w == HERE_STRING {
            if let Some(body) = it.next() {
                cur.heredocs.push(body);
            }
        } else if w == TRUNCATE || w == APPEND {
            if let Some(f) = it.next()
                && w == TRUNCATE
            {
                cur.outputs.push(f);
            }
        } else if w == "<" {
            if let Some(f) = it.next() {
                cur.inputs.push(f);
            }
        } else if let Some(f) = w
            .strip_prefix('<')
            .filter(|f| !f.is_empty() && !f.starts_with('('))
        {
            cur.inputs.push(f.to_string());
        } else {
            words.push(w);
        }
    }
    cur.words = words;
    if !cur.words.is_empty()
        || !cur.heredocs.is_empty()
        || !cur.inputs.is_empty()
        || !cur.outputs.is_empty()
    {
        pipeline.push(std::mem::take(cur));
    }
    if !pipe && !pipeline.is_empty() {
        pipelines.push(std::mem::take(pipeline));
    }
}

/// The text up to the `)` that closes a `$(` opened before `start`.
fn balanced(chars: &[char], start: usize) -> (String, usize) {
    let mut depth = 1;
    let mut j = start;
    while j < chars.len() {
        match chars[j] {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    (chars[start..j.min(chars.len())].iter().collect(), j + 1)
}
