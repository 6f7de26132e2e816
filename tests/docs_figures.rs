//! Every measured figure the docs quote comes from docs/BENCHMARKS.md: a
//! copy elsewhere (README, the other docs) must link to it and say what it
//! says, so a figure cannot drift when BENCHMARKS is updated and the copy is
//! not (docs/PYTHON.md once quoted 85 bytes per idle connection after
//! BENCHMARKS had measured 84).

use std::path::Path;

/// The docs that may quote figures: README and docs/*.md but BENCHMARKS.
fn quoting_docs(root: &Path) -> Vec<(String, String)> {
    let mut docs = vec![("README.md".to_string(), read(root, "README.md"))];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".md") && name != "BENCHMARKS.md" {
            docs.push((
                format!("docs/{name}"),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    docs
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file)).unwrap()
}

/// Prose paragraphs (code blocks left out: they show commands and output).
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if line.trim().is_empty() {
            out.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
            current.push(' ');
        }
    }
    out.push(current);
    out.retain(|p| !p.trim().is_empty());
    out
}

/// Figures in `paragraph`: a number (or range `a–b`) followed by one of the
/// measured units this project quotes — instructions per message, bytes of
/// server memory per idle connection, a ratio (`×`).
fn figures(paragraph: &str) -> Vec<String> {
    let words: Vec<&str> = paragraph.split_whitespace().collect();
    let is_number = |w: &str| {
        let w = w
            .trim_start_matches(['(', '*', '`'])
            .trim_end_matches([',', ';', ':', '*', ')', '.']);
        !w.is_empty()
            && w.chars().next().unwrap().is_ascii_digit()
            && w.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '–' | '×'))
    };
    let clean = |w: &str| {
        w.trim_start_matches(['(', '*', '`'])
            .trim_end_matches([',', ';', ':', '*', ')', '.'])
            .to_string()
    };
    let mut found = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if !is_number(word) {
            continue;
        }
        let next = words.get(i + 1).copied().unwrap_or("");
        let next2 = words.get(i + 2).copied().unwrap_or("");
        let ratio = clean(word).ends_with('×') && clean(word).len() > 1;
        let instructions = next.starts_with("instructions")
            || (next == "user-space" && next2.starts_with("instructions"));
        let idle_bytes = next == "bytes" && paragraph.contains("per idle connection");
        if ratio {
            found.push(clean(word));
        } else if instructions {
            found.push(format!("{} instructions", clean(word)));
        } else if idle_bytes {
            // "under 100 bytes": a bound the measured figure must keep.
            let bound = i > 0 && words[i - 1].trim_start_matches('(') == "under";
            let under = if bound { "under " } else { "" };
            found.push(format!("{under}{} B per idle connection", clean(word)));
        }
    }
    found
}

/// echo-reactor's idle bytes per connection: its row of the table under
/// `idle B/conn` in BENCHMARKS.md ("Memory per connection").
fn idle_bytes_per_connection(bench: &str) -> String {
    let table = &bench[bench.find("idle B/conn").expect("the memory table")..];
    let row = table
        .lines()
        .find(|l| l.starts_with("echo-reactor"))
        .expect("echo-reactor's row");
    row.split_whitespace().nth(1).unwrap().to_string()
}

/// Whether BENCHMARKS.md says `figure`: instructions as `N instructions` or
/// `N user-space instructions`; idle bytes as its memory table's figure; a
/// ratio verbatim (a range `a–b×` may be two quotes, `a×` and `b×`).
fn benchmarks_say(bench: &str, figure: &str) -> bool {
    if let Some(n) = figure.strip_suffix(" instructions") {
        return [
            format!("{n} instructions"),
            format!("{n} user-space instructions"),
        ]
        .iter()
        .any(|f| bench.contains(f.as_str()));
    }
    if let Some(n) = figure.strip_suffix(" B per idle connection") {
        let measured = idle_bytes_per_connection(bench);
        return match n.strip_prefix("under ") {
            Some(bound) => measured.parse::<u64>().unwrap() < bound.parse::<u64>().unwrap(),
            None => n == measured,
        };
    }
    let said = |f: &str| {
        bench.match_indices(f).any(|(at, _)| {
            let before = bench[..at].chars().next_back();
            let after = bench[at + f.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
                && !after.is_some_and(|c| c.is_ascii_digit())
        })
    };
    if said(figure) {
        return true;
    }
    match figure.trim_end_matches('×').split_once('–') {
        Some((a, b)) if figure.ends_with('×') => said(&format!("{a}×")) && said(&format!("{b}×")),
        _ => false,
    }
}

#[test]
fn every_figure_quoted_outside_benchmarks_links_to_it_and_matches_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bench = read(root, "docs/BENCHMARKS.md");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (doc, text) in quoting_docs(root) {
        for paragraph in paragraphs(&text) {
            let quoted = figures(&paragraph);
            if quoted.is_empty() {
                continue;
            }
            if !paragraph.contains("BENCHMARKS.md") {
                wrong.push(format!(
                    "{doc}: {quoted:?} without a link to docs/BENCHMARKS.md: {}",
                    &paragraph[..paragraph.len().min(100)]
                ));
            }
            for figure in quoted {
                checked += 1;
                if !benchmarks_say(&bench, &figure) {
                    wrong.push(format!(
                        "{doc}: {figure} is not what docs/BENCHMARKS.md says"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "figures out of step with docs/BENCHMARKS.md:\n{}",
        wrong.join("\n")
    );
    assert!(
        checked >= 5,
        "only {checked} figures found: is the pattern still matching?"
    );
}

#[test]
fn the_figure_check_catches_a_stale_copy() {
    let bench = "server idle B/conn\necho-reactor 84 84 errors 0\n(85–98 B in earlier runs)\n\
                 137 user-space instructions; 1.37× and 1.04×";
    let stale = "about 85 bytes of server memory per idle connection (docs/BENCHMARKS.md)";
    let quoted = figures(stale);
    assert_eq!(quoted, ["85 B per idle connection"]);
    assert!(
        !benchmarks_say(bench, &quoted[0]),
        "85 only appears as an earlier range"
    );
    assert!(benchmarks_say(bench, "84 B per idle connection"));
    assert!(benchmarks_say(bench, "1.04–1.37×"));
    let quoted = figures("took it from 163 to 137 instructions per message");
    assert_eq!(quoted, ["137 instructions"]);
    assert!(benchmarks_say(bench, &quoted[0]));
    assert!(!benchmarks_say(bench, "138 instructions"));
}
