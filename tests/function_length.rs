//! No function in `src/` is over 80 lines, counted as a reader would: from the line of `fn` to the line
//! of its closing brace (test functions in `#[cfg(test)]` modules included). A longer one is split into
//! named helpers; this test names any that grows back.

use std::{fs, path::Path};

const MAX_LINES: usize = 80;

/// `text` with comments, strings and character literals blanked (newlines kept), so braces and `fn`
/// are only those of the code.
fn code_only(text: &str) -> Vec<char> {
    let s: Vec<char> = text.chars().collect();
    let mut out = s.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(s.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < s.len() {
        let prev_ident = i > 0 && ident(s[i - 1]);
        if s[i] == '/' && s.get(i + 1) == Some(&'/') {
            let end = s[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(s.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if s[i] == '/' && s.get(i + 1) == Some(&'*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < s.len() && depth > 0 {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 1;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 1;
                }
                j += 1;
            }
            blank(&mut out, i, j);
            i = j;
        } else if !prev_ident && (s[i] == 'r' || (s[i] == 'b' && s.get(i + 1) == Some(&'r'))) {
            // A raw string: r"…", r#"…"#, br"…".
            let start = i;
            let mut j = i + if s[i] == 'b' { 2 } else { 1 };
            let hashes = s[j..].iter().take_while(|&&c| c == '#').count();
            j += hashes;
            if s.get(j) == Some(&'"') {
                let close: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut k = j + 1;
                while k < s.len() && !s[k..].starts_with(&close) {
                    k += 1;
                }
                let end = k + close.len();
                blank(&mut out, start, end);
                i = end;
            } else {
                i += 1;
            }
        } else if s[i] == '"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if s[i] == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), or else a lifetime, left as it is.
            let end = if s.get(i + 1) == Some(&'\\') {
                s[i + 2..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map(|p| i + 2 + p)
            } else if s.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end + 1);
                    i = end + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every function with a body in `text`: its name, first line (1-based) and length in lines.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let code = code_only(text);
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let line_of = |at: usize| code[..at].iter().filter(|&&c| c == '\n').count() + 1;
    let mut found = Vec::new();
    for at in 0..code.len() {
        let is_fn = code[at..].starts_with(&['f', 'n'])
            && (at == 0 || !ident(code[at - 1]))
            && code.get(at + 2).is_some_and(|c| c.is_whitespace());
        if !is_fn {
            continue;
        }
        let name_at = at
            + 2
            + code[at + 2..]
                .iter()
                .take_while(|c| c.is_whitespace())
                .count();
        let name: String = code[name_at..].iter().take_while(|&&c| ident(c)).collect();
        if name.is_empty() {
            continue;
        }
        // The body is the first `{` after the signature; a `;` first means there is none.
        let Some(open) = code[name_at..]
            .iter()
            .position(|&c| c == '{' || c == ';')
            .map(|p| name_at + p)
            .filter(|&p| code[p] == '{')
        else {
            continue;
        };
        let mut depth = 0;
        for (close, &c) in code.iter().enumerate().skip(open) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        found.push((name.clone(), line_of(at), line_of(close) - line_of(at) + 1));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_counter_reads_bodies_not_strings_or_comments() {
    let text = "fn a() {\n    let s = \"}\"; // }\n    let r = r#\"{\"#;\n    let c = '{';\n}\nfn b<'x>(v: &'x str) -> &'x str {\n    v\n}\nfn c();\n";
    assert_eq!(
        functions(text),
        vec![("a".to_string(), 1, 5), ("b".to_string(), 6, 3)]
    );
}

#[test]
fn no_function_in_src_is_over_80_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut long = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        for (name, line, lines) in functions(&text) {
            if lines > MAX_LINES {
                let file = file.strip_prefix(root).unwrap().display();
                long.push(format!("{file}:{line} {name}: {lines} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}
