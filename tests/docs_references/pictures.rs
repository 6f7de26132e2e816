//! Every code name in a Mermaid diagram of the docs exists: the diagrams
//! (the loop, a connection's states, the workers and their sockets) name
//! functions, constants, flag bits and types, and a renamed function must
//! not leave a picture of a path the code no longer takes.

use std::path::Path;

use super::*;

/// The Mermaid diagrams in `text`, each as its lines.
fn mermaid_blocks(text: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while lines.any(|l| l.trim() == "```mermaid") {
        blocks.push(lines.by_ref().take_while(|l| l.trim() != "```").collect());
    }
    blocks
}

/// Words in a diagram that look like code: `snake_case`, `ALL_CAPS` (or
/// one capitalised word of five letters or more, `LINGERING`), `CamelCase`
/// with two humps, or a `path::to::item`.
fn code_like_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in line.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        let w = word.trim_matches(':').to_string();
        word.clear();
        let humps = w.chars().filter(char::is_ascii_uppercase).count();
        let camel = w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && w.chars().any(|c| c.is_ascii_lowercase())
            && humps >= 2
            && !w.contains('_');
        let shouting = w.len() >= 5 && w.chars().all(|c| c.is_ascii_uppercase());
        let code = w.contains("::")
            || (w.contains('_') && w.chars().any(|c| c.is_ascii_alphabetic()))
            || camel
            || shouting;
        if code && !w.starts_with("--") {
            words.push(w);
        }
    }
    words
}

/// Whether `word` names something in `sources`: a function (`fn word`), a
/// module, a system call the comments name, a type, or a constant, flag
/// bit or enum variant that appears as a word; `a::b` needs both halves.
fn names_something(sources: &str, root: &Path, word: &str) -> bool {
    let is_word_in = |text: &str, w: &str| {
        text.match_indices(w).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + w.len()..].chars().next();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    };
    if let Some((head, tail)) = word.rsplit_once("::") {
        return names_something(sources, root, head) && names_something(sources, root, tail);
    }
    if word.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
        // A function, a module, or a call the code's comments name
        // (`epoll_wait`).
        return !definitions(sources, word).is_empty()
            || module_exists(root, word)
            || sources.contains(&format!("`{word}`"));
    }
    if word.chars().any(|c| c.is_ascii_lowercase()) {
        // A type or an enum variant.
        return ["struct", "enum", "trait", "type"]
            .iter()
            .any(|k| sources.contains(&format!("{k} {word}")))
            || is_word_in(sources, word);
    }
    is_word_in(sources, word) // a constant, a flag bit, an OS name the code uses
}

#[test]
fn every_name_in_a_diagram_exists_in_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = all_sources(root);
    let mut diagrams = 0;
    let mut checked = 0;
    let mut missing = Vec::new();
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.push(root.join("README.md"));
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for block in mermaid_blocks(&text) {
            diagrams += 1;
            // The first line says what kind of diagram it is.
            for line in &block[1..] {
                for word in code_like_words(line) {
                    checked += 1;
                    if !names_something(&sources, root, &word) {
                        missing.push(format!("{}: {word}", doc.display()));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "names in a diagram that the code does not have:\n{}",
        missing.join("\n")
    );
    assert!(diagrams >= 4, "only {diagrams} Mermaid diagrams found");
    assert!(
        checked >= 40,
        "only {checked} names checked in the diagrams"
    );
}

#[test]
fn the_diagram_reader_takes_code_names_and_leaves_prose() {
    assert_eq!(
        code_like_words(
            r#"t6["6 reap_closed: at most REAP_BUDGET, Reactor::run, WorkerSockets, LINGERING, EOF"] --> t7"#
        ),
        [
            "reap_closed",
            "REAP_BUDGET",
            "Reactor::run",
            "WorkerSockets",
            "LINGERING"
        ]
    );
    assert!(code_like_words("Open --> Paused: a writable edge, or --max-line").is_empty());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = all_sources(root);
    for real in [
        "reap_closed",
        "REAP_BUDGET",
        "Reactor::run",
        "supervisor::run",
        "worker_sockets",
        "SO_REUSEPORT",
    ] {
        assert!(names_something(&sources, root, real), "{real}");
    }
    for made_up in [
        "reap_all",
        "REAP_LIMIT",
        "Reactor::spin",
        "supervisor::spin",
    ] {
        assert!(!names_something(&sources, root, made_up), "{made_up}");
    }
    let doc = "x\n```mermaid\nflowchart TB\n  a --> b\n```\ny\n```mermaid\nstateDiagram-v2\n```\n";
    assert_eq!(mermaid_blocks(doc).len(), 2);
}
