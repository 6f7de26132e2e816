//! The docs name code as `src/file.rs:function` (or `src/file.rs` alone).
//! Every such reference must exist, so the docs cannot quietly go stale.

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
