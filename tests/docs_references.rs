//! The docs name code as `src/file.rs:function` (or `src/file.rs` alone).
//! Every such reference must exist, so the docs cannot quietly go stale;
//! every function the tour and the architecture name has a doc comment, so
//! rustdoc alone answers what they answer; and where the docs write a path
//! as `` `a` → `b` ``, `a`'s body calls `b` — the path described is the path
//! the code takes (a name that exists but is off the path is caught too).
//!
//! The other checks, a file each under `tests/docs_references/`: the
//! module map is true (`map.rs`); nothing cites a document the repository
//! does not contain (`standalone.rs`); figures the docs quote — constants,
//! flag defaults, the interest set a connection is registered for — are
//! the code's (`figures.rs`, `flags.rs`); every code name in a Mermaid
//! diagram exists (`pictures.rs`).

use std::path::Path;

/// Backticked references in `text`: (file, Some(function) or None).
fn references(text: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for span in text.split('`').skip(1).step_by(2) {
        let span = span.trim();
        let Some(rust_file_end) = span.find(".rs") else {
            continue;
        };
        let file = &span[..rust_file_end + 3];
        if !(file.starts_with("src/")
            || file.starts_with("examples/")
            || file.starts_with("tests/"))
        {
            continue;
        }
        if file.contains(char::is_whitespace) {
            continue;
        }
        let rest = &span[rust_file_end + 3..];
        let function = rest
            .strip_prefix(':')
            .map(|f| f.rsplit("::").next().unwrap_or(f).trim().to_string());
        found.push((file.to_string(), function));
    }
    found
}

#[test]
fn every_file_and_function_named_in_the_docs_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.push(root.join("README.md"));
    let mut checked = 0;
    let mut stale = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (file, function) in references(&text) {
            checked += 1;
            let Ok(source) = std::fs::read_to_string(root.join(&file)) else {
                stale.push(format!("{}: {file} does not exist", doc.display()));
                continue;
            };
            if let Some(function) = function {
                if !source.contains(&format!("fn {function}")) {
                    stale.push(format!("{}: {file} has no fn {function}", doc.display()));
                }
            }
        }
    }
    assert!(stale.is_empty(), "stale references:\n{}", stale.join("\n"));
    assert!(
        checked >= 50,
        "only {checked} references found: is the pattern still matching?"
    );
}

/// Backticked `Type::method` (or `Type::field`) references, e.g. `Reactor::run_once`.
fn method_references(text: &str) -> Vec<(String, String)> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| {
            let (ty, method) = span.trim().split_once("::")?;
            let is_type = ty.chars().next()?.is_ascii_uppercase()
                && ty.chars().all(|c| c.is_ascii_alphanumeric());
            let is_fn =
                !method.is_empty() && method.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            (is_type && is_fn).then(|| (ty.to_string(), method.to_string()))
        })
        .collect()
}

#[test]
fn every_type_and_method_named_in_the_docs_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = String::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut checked = 0;
    let mut stale = Vec::new();
    for doc in [
        "docs/ARCHITECTURE.md",
        "docs/TOUR.md",
        "docs/PYTHON.md",
        "README.md",
    ] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (ty, method) in method_references(&text) {
            // Enum variants (`ReadOutcome::WouldBlock`) are not checked here.
            checked += 1;
            let has_type = ["struct", "enum", "trait"]
                .iter()
                .any(|k| sources.contains(&format!("{k} {ty}")));
            let has_member = sources.contains(&format!("fn {method}"))
                || sources.contains(&format!("pub {method}:"));
            if !has_type || !has_member {
                stale.push(format!("{doc}: {ty}::{method}"));
            }
        }
    }
    assert!(stale.is_empty(), "stale references:\n{}", stale.join("\n"));
    assert!(
        checked >= 20,
        "only {checked} Type::method references found"
    );
}

#[test]
fn the_reference_pattern_finds_files_and_functions() {
    let found = references(
        "see `src/connection.rs:Connection::drive` and `src/timers.rs`, not `cargo run`",
    );
    assert_eq!(
        found,
        [
            ("src/connection.rs".to_string(), Some("drive".to_string())),
            ("src/timers.rs".to_string(), None)
        ]
    );
}

/// Where `fn name` is defined in `source`: the byte offsets of each definition.
fn definitions(source: &str, name: &str) -> Vec<usize> {
    let needle = format!("fn {name}");
    source
        .match_indices(&needle)
        .filter(|(at, _)| {
            let before_ok = source[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_');
            let after = source[at + needle.len()..].chars().next();
            before_ok && matches!(after, Some('(') | Some('<'))
        })
        .map(|(at, _)| at)
        .collect()
}

/// Whether the definition at `at` has a `///` doc comment above it
/// (attributes and plain `//` comments may sit in between).
fn is_documented(source: &str, at: usize) -> bool {
    // The lines above the one `at` is on (a definition at column 0 has no
    // indentation to stand for its own line).
    let above = &source[..source[..at].rfind('\n').unwrap_or(0)];
    for line in above.lines().rev() {
        let line = line.trim();
        if line.starts_with("///") {
            return true;
        }
        if line.starts_with("#[") || line.starts_with("//") {
            continue;
        }
        return false;
    }
    false
}

/// The body of the function defined at `at`: from its first `{` to the
/// matching `}` (braces in strings are rare enough in this code base).
fn body_at(source: &str, at: usize) -> &str {
    let open = at + source[at..].find('{').expect("a function body");
    let mut depth = 0;
    for (i, c) in source[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &source[open..open + i + 1];
                }
            }
            _ => {}
        }
    }
    &source[open..]
}

/// Whether `body` calls `name` (`name(`, `.name(`, `name::<`).
fn calls(body: &str, name: &str) -> bool {
    body.match_indices(name).any(|(at, _)| {
        let before_ok = body[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let rest = &body[at + name.len()..];
        before_ok && (rest.starts_with('(') || rest.starts_with("::<"))
    })
}

/// `` `a` → `b` `` pairs of file:function references written in `text`.
fn arrows(text: &str) -> Vec<((String, String), (String, String))> {
    let spans: Vec<&str> = text.split('`').collect();
    let mut found = Vec::new();
    // spans[odd] are backticked; the even span between two of them is the gap.
    let mut i = 1;
    while i + 2 < spans.len() {
        let gap = spans[i + 1].trim();
        if gap == "→" {
            let one = references(&format!("`{}`", spans[i]));
            let two = references(&format!("`{}`", spans[i + 2]));
            if let ([(fa, Some(a))], [(fb, Some(b))]) = (&one[..], &two[..]) {
                found.push(((fa.clone(), a.clone()), (fb.clone(), b.clone())));
            }
        }
        i += 2;
    }
    found
}

#[test]
fn every_arrow_between_two_functions_in_the_docs_is_a_call() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut wrong = Vec::new();
    for doc in [
        "docs/TOUR.md",
        "docs/ARCHITECTURE.md",
        "docs/PYTHON.md",
        "README.md",
    ] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for ((file, caller), (_, callee)) in arrows(&text) {
            checked += 1;
            let source = std::fs::read_to_string(root.join(&file)).unwrap_or_default();
            let bodies: Vec<&str> = definitions(&source, &caller)
                .into_iter()
                .map(|at| body_at(&source, at))
                .collect();
            if !bodies.iter().any(|body| calls(body, &callee)) {
                wrong.push(format!(
                    "{doc}: `{file}:{caller}` → `{callee}`, but {caller} does not call {callee}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "paths the code does not take:\n{}",
        wrong.join("\n")
    );
    assert!(
        checked >= 6,
        "only {checked} arrows found: is the pattern still matching?"
    );
}

#[test]
fn the_arrow_check_catches_a_function_off_the_path() {
    // The mistake this check was written for: the tour said a spent budget
    // goes through `after`, which the per-message path no longer calls.
    let found = arrows(
        "and `src/reactor/clients.rs:on_connection_event` → `src/reactor/clients.rs:after` puts",
    );
    assert_eq!(found.len(), 1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("src/reactor/clients.rs")).unwrap();
    let at = definitions(&source, "on_connection_event")[0];
    assert!(!calls(body_at(&source, at), "after"));
    assert!(calls(body_at(&source, at), "act_on"));
}

/// `impl ... Type` / `trait Type` blocks in `source`: (type, fn name, documented).
fn methods(source: &str) -> Vec<(String, String, bool)> {
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for (offset, line) in source.lines().scan(0, |pos, line| {
        let at = *pos;
        *pos += line.len() + 1;
        Some((at, line))
    }) {
        if line.starts_with("impl") || line.starts_with("pub trait ") || line.starts_with("trait ")
        {
            current = block_type(line);
        } else if line.starts_with('}') {
            current = None;
        } else if let Some(ty) = &current {
            let trimmed = line.trim_start();
            if line.len() - trimmed.len() == 4 {
                if let Some(at) = trimmed.find("fn ") {
                    let name: String = trimmed[at + 3..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    let def = offset + (line.len() - trimmed.len()) + at;
                    found.push((ty.clone(), name, is_documented(source, def)));
                }
            }
        }
    }
    found
}

/// The type an `impl` or `trait` line is about: `impl<P: Protocol> Clients<P> {` -> Clients.
fn block_type(line: &str) -> Option<String> {
    let mut rest = line
        .trim_start_matches("pub ")
        .trim_start_matches("impl")
        .trim_start_matches("trait ");
    if rest.starts_with('<') {
        let mut depth = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        rest = &rest[i + 1..];
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    if let Some((_, after)) = rest.split_once(" for ") {
        rest = after;
    }
    let name: String = rest
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[test]
fn every_function_the_tour_and_the_architecture_name_has_a_doc_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all_methods = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                all_methods.extend(methods(&std::fs::read_to_string(path).unwrap()));
            }
        }
    }
    let mut checked = 0;
    let mut bare = Vec::new();
    for doc in ["docs/TOUR.md", "docs/ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (file, function) in references(&text) {
            let Some(function) = function else { continue };
            let source = std::fs::read_to_string(root.join(&file)).unwrap_or_default();
            let defs = definitions(&source, &function);
            checked += 1;
            if !defs.is_empty() && !defs.iter().any(|&at| is_documented(&source, at)) {
                bare.push(format!("{doc}: {file}:{function}"));
            }
        }
        for (ty, method) in method_references(&text) {
            let defs: Vec<_> = all_methods
                .iter()
                .filter(|(t, m, _)| *t == ty && *m == method)
                .collect();
            checked += 1;
            if !defs.is_empty() && !defs.iter().any(|(_, _, documented)| *documented) {
                bare.push(format!("{doc}: {ty}::{method}"));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "named in the docs, no doc comment:\n{}",
        bare.join("\n")
    );
    assert!(checked >= 60, "only {checked} functions checked");
}

// ---- helpers the other checks share ----

fn module_exists(root: &Path, name: &str) -> bool {
    let src = root.join("src");
    if name == "main" {
        return src.join("main.rs").is_file();
    }
    src.join(format!("{name}.rs")).is_file() || src.join(name).join("mod.rs").is_file()
}

/// Every `.rs` file under `src/`, concatenated.
fn all_sources(root: &Path) -> String {
    let mut sources = String::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
                sources.push('\n');
            }
        }
    }
    sources
}

/// Whitespace (line breaks, indentation, comment markers) collapsed to one
/// space, so a claim may wrap anywhere.
fn flattened(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.trim();
            line.strip_prefix("//!")
                .or_else(|| line.strip_prefix("///"))
                .unwrap_or(line)
        })
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- the other checks, a file each ----

#[path = "docs_references/figures.rs"]
mod figures;
#[path = "docs_references/flags.rs"]
mod flags;
#[path = "docs_references/map.rs"]
mod map;
#[path = "docs_references/pictures.rs"]
mod pictures;
#[path = "docs_references/standalone.rs"]
mod standalone;
