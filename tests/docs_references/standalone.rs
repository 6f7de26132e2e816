//! The repository stands alone: no doc, comment or script cites a
//! document a clone does not contain (a specification or an issue of the
//! project's own). Whoever reads a clone must find what such a reference
//! said written out where it stands.

use std::path::Path;

/// Every text a reader of a clone meets: the docs, and the comments and
/// strings of the code, tests, examples, benches and scripts.
fn repository_texts(root: &Path) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    let mut dirs: Vec<_> = [
        "src", "tests", "examples", "benches", "scripts", "docs", "contrib",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    for file in ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", "Cargo.toml"] {
        texts.push((
            file.to_string(),
            std::fs::read_to_string(root.join(file)).unwrap(),
        ));
    }
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let textual = path.extension().is_some_and(|e| {
                ["rs", "md", "py", "sh", "toml", "yml", "cfg", "c"].contains(&e.to_str().unwrap())
            });
            // This file spells out what it looks for.
            if textual && !path.ends_with("tests/docs_references/standalone.rs") {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                texts.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    texts
}

/// Where `text` points at a document a clone of the repository does not
/// contain: a specification or an issue tracker entry of the project's own
/// ("the spec", "SPEC §9", "issue 12", "the issue's target").
fn outside_references(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    let followed_by_word_end = |at: usize, len: usize| {
        lower[at + len..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric())
    };
    let starts_a_word = |at: usize| {
        lower[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric())
    };
    for needle in ["the spec", "spec §", "spec.md", "the issue", "issue's"] {
        for (at, _) in lower.match_indices(needle) {
            if starts_a_word(at)
                && (needle.ends_with('§') || followed_by_word_end(at, needle.len()))
            {
                found.push(needle.to_string());
            }
        }
    }
    for (at, _) in lower.match_indices("issue ") {
        let numbered = lower[at + 6..].starts_with(|c: char| c.is_ascii_digit());
        if starts_a_word(at) && numbered {
            found.push(lower[at..].chars().take(8).collect());
        }
    }
    found
}

#[test]
fn nothing_points_at_a_document_the_repository_does_not_contain() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let texts = repository_texts(root);
    assert!(texts.len() > 100, "only {} files read", texts.len());
    let mut outside = Vec::new();
    for (name, text) in &texts {
        for found in outside_references(text) {
            outside.push(format!("{name}: \"{found}\""));
        }
    }
    assert!(
        outside.is_empty(),
        "references to documents a clone does not have (say what they said instead):\n{}",
        outside.join("\n")
    );
}

#[test]
fn the_outside_reference_check_finds_specs_and_issues_but_not_their_neighbours() {
    for outside in [
        "as the spec says",
        "(SPEC §5.3)",
        "see SPEC.md",
        "after issue 12 made it",
        "The issue's target flood",
        "the issue.",
    ] {
        assert!(!outside_references(outside).is_empty(), "{outside}");
    }
    for inside in [
        "the specification of the PROXY protocol",
        "the percentile spectrum",
        "an unspecified address",
        "the issues a client can cause",
        "no tissue 3 here",
    ] {
        assert!(outside_references(inside).is_empty(), "{inside}");
    }
}
