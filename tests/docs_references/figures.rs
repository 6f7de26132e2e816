//! Figures the docs quote from the code are the code's: a constant named
//! with its value, a figure stated in words (the budget's marks, restarts a
//! minute, linger times, the metrics endpoint's limits), the interest set a
//! connection is registered for, and every close reason in the metrics
//! table. (Flag defaults: `flags.rs`.)

use std::path::Path;

use super::*;

/// A constant's value in `src/`: `const NAME: T = EXPR;` where EXPR is a
/// product of integer literals and other such constants (each maybe cast
/// with `as`), or a `Duration::from_secs`/`from_millis` of one (in ms).
fn constant_value(sources: &str, name: &str) -> Option<u64> {
    let needle = format!("const {name}: ");
    let at = sources
        .match_indices(&needle)
        .map(|(at, _)| at)
        .find(|&at| {
            sources[..at]
                .chars()
                .next_back()
                .is_none_or(|c| c.is_whitespace())
        })?;
    let rest = &sources[at + needle.len()..];
    let expr = rest[rest.find('=')? + 1..rest.find(';')?].trim();
    let (expr, scale) = if let Some(inner) = expr
        .strip_prefix("Duration::from_secs(")
        .and_then(|e| e.strip_suffix(')'))
    {
        (inner, 1000)
    } else if let Some(inner) = expr
        .strip_prefix("Duration::from_millis(")
        .and_then(|e| e.strip_suffix(')'))
    {
        (inner, 1)
    } else {
        (expr, 1)
    };
    let mut value: u64 = scale;
    for factor in expr.split('*') {
        // `OTHER as isize`: the cast keeps the value.
        let factor = factor.split(" as ").next().unwrap_or(factor).trim();
        let factor_value = match factor.replace('_', "").parse::<u64>() {
            Ok(n) => n,
            Err(_) if factor.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
                constant_value(sources, factor)?
            }
            Err(_) => return None,
        };
        value = value.checked_mul(factor_value)?;
    }
    Some(value)
}

/// A figure as the docs write it: `128`, `100 ms`, `5 s`, `256 KiB`,
/// `10 000` — in the constant's own unit (ms for a `_MS` name or a
/// `Duration`, bytes for sizes). `None` when `text` does not start with one.
fn quoted_figure(text: &str) -> Option<(u64, String)> {
    let text = text.trim_start();
    let mut digits = String::new();
    let mut chars = text.char_indices().peekable();
    let mut end = 0;
    while let Some(&(i, c)) = chars.peek() {
        if c.is_ascii_digit() {
            digits.push(c);
            end = i + 1;
        } else if (c == ' ' || c == '\u{202f}' || c == '_')
            && !digits.is_empty()
            && text[i + c.len_utf8()..]
                .chars()
                .take(3)
                .filter(char::is_ascii_digit)
                .count()
                == 3
            && !text[i + c.len_utf8()..]
                .chars()
                .nth(3)
                .is_some_and(|c| c.is_ascii_digit())
        {
            // a thousands separator
        } else {
            break;
        }
        chars.next();
    }
    let number: u64 = digits.parse().ok()?;
    let unit: String = text[end..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let (value, unit) = match unit.as_str() {
        "ms" => (number, "ms"),
        "s" => (number * 1000, "ms"),
        "KiB" => (number << 10, "bytes"),
        "MiB" => (number << 20, "bytes"),
        _ => (number, ""),
    };
    Some((value, unit.to_string()))
}

/// `` `NAME` (FIGURE ``, `` (`NAME`, FIGURE `` and `` FIGURE (`NAME`) ``:
/// a constant named and its value quoted beside it.
fn quoted_constants(text: &str) -> Vec<(String, u64, String)> {
    let spans: Vec<&str> = text.split('`').collect();
    let mut found = Vec::new();
    let is_constant = |s: &str| {
        s.len() > 3
            && s.contains('_')
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    for i in (1..spans.len()).step_by(2) {
        let name = spans[i];
        if !is_constant(name) || i + 1 >= spans.len() {
            continue;
        }
        let (before, after) = (spans[i - 1], spans[i + 1]);
        let figure = if let Some(rest) = after.strip_prefix(" (") {
            quoted_figure(rest)
        } else if let Some(rest) = after.strip_prefix(',').or(after.strip_prefix(':')) {
            quoted_figure(rest)
        } else if before.ends_with('(') && after.starts_with(')') {
            // FIGURE (`NAME`): the figure ends the text before.
            let before = before[..before.len() - 1].trim_end();
            let start = before
                .char_indices()
                .rev()
                .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == ' ' || c == '\u{202f}'))
                .map_or(0, |(i, c)| i + c.len_utf8());
            // Only the last few words: a figure and its unit.
            let tail: Vec<&str> = before[start..].split_whitespace().collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" ");
            (0..tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .find_map(|i| {
                    let (value, unit) = quoted_figure(&tail[i..])?;
                    let rest = tail[i..].trim_start_matches(|c: char| {
                        c.is_ascii_digit() || c == ' ' || c == '\u{202f}'
                    });
                    (rest.is_empty() || rest == "ms" || rest == "s" || rest.ends_with("iB"))
                        .then_some((value, unit))
                })
        } else {
            None
        };
        if let Some((value, unit)) = figure {
            found.push((name.to_string(), value, unit));
        }
    }
    found
}

/// The prose docs (BENCHMARKS is a record of past runs, some of them
/// with the constants of their day).
const PROSE_DOCS: [&str; 6] = [
    "README.md",
    "docs/ARCHITECTURE.md",
    "docs/TOUR.md",
    "docs/OPERATIONS.md",
    "docs/SCALING.md",
    "docs/PYTHON.md",
];

#[test]
fn every_constant_quoted_with_its_value_has_that_value() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = all_sources(root);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for doc in PROSE_DOCS {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (name, quoted, unit) in quoted_constants(&text) {
            checked += 1;
            match constant_value(&sources, &name) {
                None => wrong.push(format!("{doc}: `{name}` is no constant in src/")),
                Some(value) if value != quoted => wrong.push(format!(
                    "{doc}: `{name}` quoted as {quoted}{}, but it is {value}",
                    if unit.is_empty() {
                        String::new()
                    } else {
                        format!(" {unit}")
                    }
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "constants quoted wrong:\n{}",
        wrong.join("\n")
    );
    assert!(checked >= 10, "only {checked} quoted constants found");
}

#[test]
fn the_quoted_constant_reader_finds_the_three_ways_of_quoting() {
    let text = "at most `REAP_BUDGET` (128) a turn, for `ACCEPT_PAUSE_MS` (100 ms); \
                (`READ_BUDGET_BYTES`, 256 KiB), or 5 s (`LINGER_MS`) pass, \
                10 000 (`SOME_CAP`) and `LONG_MS` (1 500 ms), `BUDGET_BYTES`: 64 KiB per turn, \
                but `NOT_QUOTED` alone";
    assert_eq!(
        quoted_constants(text),
        [
            ("REAP_BUDGET".to_string(), 128, String::new()),
            ("ACCEPT_PAUSE_MS".to_string(), 100, "ms".to_string()),
            (
                "READ_BUDGET_BYTES".to_string(),
                256 * 1024,
                "bytes".to_string()
            ),
            ("LINGER_MS".to_string(), 5000, "ms".to_string()),
            ("SOME_CAP".to_string(), 10_000, String::new()),
            ("LONG_MS".to_string(), 1_500, "ms".to_string()),
            ("BUDGET_BYTES".to_string(), 64 * 1024, "bytes".to_string()),
        ]
    );
    let sources =
        "pub const A_MS: u64 = 5_000;\nconst B: usize = 2 * C_C;\nconst C_C: usize = 16;\n\
                   const E: isize = C_C as isize;\n\
                   pub const D: Duration = Duration::from_secs(60);";
    assert_eq!(constant_value(sources, "A_MS"), Some(5_000));
    assert_eq!(constant_value(sources, "B"), Some(32));
    assert_eq!(constant_value(sources, "D"), Some(60_000));
    assert_eq!(constant_value(sources, "E"), Some(16));
    assert_eq!(constant_value(sources, "NONE"), None);
}

#[test]
fn figures_the_docs_state_in_words_are_the_code_s() {
    use echo_reactor::budget::Marks;
    use echo_reactor::connection::{LINGER_MS, REFUSAL_LINGER_MS};
    use echo_reactor::http::MAX_REQUEST_HEAD_BYTES;
    use echo_reactor::reactor::{
        ACCEPT_PAUSE_MS, MAX_METRICS_CONNECTIONS, METRICS_DEADLINE_MS, METRICS_LINGER_CAP_MS,
        METRICS_LINGER_MS, METRICS_SLOTS,
    };
    use echo_reactor::supervisor::{MAX_RESTARTS, RESTART_WINDOW, RETRY_DELAY};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = all_sources(root);
    // The budget's marks as fractions of it, as the docs write them.
    let budget = 1 << 20;
    let marks = Marks::for_budget(budget).unwrap();
    let fraction = |mark: usize| match (mark * 4 / budget, mark * 4 % budget) {
        (1, 0) => "¼",
        (2, 0) => "½",
        (3, 0) => "¾",
        _ => "?",
    };
    let (low, high) = (fraction(marks.low), fraction(marks.high));
    let minute = |window: std::time::Duration| {
        assert_eq!(window.as_secs(), 60, "the docs say \"a minute\"");
        "a minute"
    };
    let memory_warn_s = constant_value(&sources, "MEMORY_WARN_INTERVAL_MS").unwrap() / 1000;
    let claims: Vec<(&str, String)> = vec![
        // --max-memory's marks
        ("README.md", format!("past {high} of it")),
        ("README.md", format!("until under {low}")),
        (
            "docs/ARCHITECTURE.md",
            format!("High-water mark, {high} of the budget"),
        ),
        ("docs/ARCHITECTURE.md", format!("Low-water mark, {low}.")),
        (
            "docs/TOUR.md",
            format!("high-water mark ({high} of `--max-memory`"),
        ),
        ("docs/TOUR.md", format!("low-water mark ({low})")),
        ("docs/TOUR.md", format!("starts the pressure at {high}")),
        ("docs/TOUR.md", format!("down to {low}.")),
        ("src/budget.rs", format!("low ({low})")),
        ("src/budget.rs", format!("high ({high})")),
        (
            "README.md",
            format!("(at most one line per {memory_warn_s} s)"),
        ),
        // restarts of workers
        (
            "README.md",
            format!(
                "(at most {MAX_RESTARTS} restarts {})",
                minute(RESTART_WINDOW)
            ),
        ),
        (
            "docs/OPERATIONS.md",
            format!(
                "after {MAX_RESTARTS} restarts in {}",
                minute(RESTART_WINDOW)
            ),
        ),
        (
            "docs/OPERATIONS.md",
            format!("trying again in {}s", RETRY_DELAY.as_secs()),
        ),
        (
            "docs/ARCHITECTURE.md",
            format!(
                "throttled after {MAX_RESTARTS} restarts {}",
                minute(RESTART_WINDOW)
            ),
        ),
        // lingering closes
        (
            "README.md",
            format!("for at most {} s (nginx's", LINGER_MS / 1000),
        ),
        (
            "docs/OPERATIONS.md",
            format!(
                "it waits {} s, {REFUSAL_LINGER_MS} ms after refusing",
                LINGER_MS / 1000
            ),
        ),
        (
            "docs/OPERATIONS.md",
            format!("dropped for at most {REFUSAL_LINGER_MS} ms"),
        ),
        (
            "docs/ARCHITECTURE.md",
            format!("dropped until it closes, at most {} s", LINGER_MS / 1000),
        ),
        // the metrics endpoint
        (
            "docs/OPERATIONS.md",
            format!("a request head over {} KiB", MAX_REQUEST_HEAD_BYTES / 1024),
        ),
        (
            "docs/OPERATIONS.md",
            format!("within {} s of the accept", METRICS_DEADLINE_MS / 1000),
        ),
        (
            "docs/OPERATIONS.md",
            format!("at most {MAX_METRICS_CONNECTIONS} metrics requests served at once"),
        ),
        (
            "docs/OPERATIONS.md",
            format!(
                "{METRICS_LINGER_MS} ms after its last bytes, {} s at most",
                METRICS_LINGER_CAP_MS / 1000
            ),
        ),
        (
            "docs/ARCHITECTURE.md",
            format!("stops at {} KiB", MAX_REQUEST_HEAD_BYTES / 1024),
        ),
        (
            "docs/ARCHITECTURE.md",
            format!("{MAX_METRICS_CONNECTIONS} requests served at once"),
        ),
        (
            "docs/ARCHITECTURE.md",
            format!("hold one of {METRICS_SLOTS} slots"),
        ),
        (
            "README.md",
            format!(
                "heads over {} KiB and requests slower than {} s",
                MAX_REQUEST_HEAD_BYTES / 1024,
                METRICS_DEADLINE_MS / 1000
            ),
        ),
        // out of descriptors
        (
            "README.md",
            format!("rests that listener for {ACCEPT_PAUSE_MS} ms"),
        ),
    ];
    let mut wrong = Vec::new();
    for (file, claim) in &claims {
        let text = flattened(&std::fs::read_to_string(root.join(file)).unwrap());
        if !text.contains(claim.as_str()) {
            wrong.push(format!("{file}: no \"{claim}\""));
        }
    }
    assert!(
        wrong.is_empty(),
        "the docs no longer say what the code does (or the claim moved: update it here):\n{}",
        wrong.join("\n")
    );
}

// ---- flag defaults: the README's tables, clap and the library ----

/// The interests `src/reactor/accept.rs` registers a new connection for:
/// the names after `Interest::` on its `let interest =` line, a local
/// constant (`URGENT`) read through its first definition (the Linux one).
fn registered_interests(accept: &str) -> Vec<String> {
    let line = accept
        .lines()
        .find(|l| l.trim_start().starts_with("let interest ="))
        .expect("accept.rs registers with `let interest = ...`");
    let expr = line.split('=').nth(1).unwrap().trim().trim_end_matches(';');
    let mut names: Vec<String> = expr
        .split('|')
        .map(str::trim)
        .map(|term| match term.strip_prefix("Interest::") {
            Some(name) => name.to_string(),
            None => {
                let needle = format!("const {term}: Interest = Interest::");
                let at = accept.find(&needle).expect("a local Interest constant") + needle.len();
                accept[at..]
                    .split(|c: char| !c.is_ascii_uppercase())
                    .next()
                    .unwrap()
                    .to_string()
            }
        })
        .collect();
    names.sort();
    names
}

/// Backticked interest sets written in `text`: `READABLE | WRITABLE ...`.
fn documented_interest_sets(text: &str) -> Vec<Vec<String>> {
    const INTERESTS: [&str; 5] = ["READABLE", "WRITABLE", "PRIORITY", "AIO", "LIO"];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.contains('|'))
        .filter_map(|span| {
            let mut names: Vec<String> = span
                .split('|')
                .map(|n| n.trim().trim_start_matches("Interest::").to_string())
                .collect();
            names
                .iter()
                .all(|n| INTERESTS.contains(&n.as_str()))
                .then(|| {
                    names.sort();
                    names
                })
        })
        .collect()
}

#[test]
fn every_interest_set_the_docs_give_a_connection_is_the_one_registered() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let accept = std::fs::read_to_string(root.join("src/reactor/accept.rs")).unwrap();
    let registered = registered_interests(&accept);
    assert!(registered.len() >= 2, "{registered:?}");
    let mut checked = 0;
    let mut wrong = Vec::new();
    // PYTHON.md's table maps selectors' flags to mio's, not to our registration.
    for file in [
        "README.md",
        "docs/ARCHITECTURE.md",
        "docs/TOUR.md",
        "src/reactor/mod.rs",
        "src/reactor/accept.rs",
        "src/connection/mod.rs",
    ] {
        let text = flattened(&std::fs::read_to_string(root.join(file)).unwrap());
        for set in documented_interest_sets(&text) {
            checked += 1;
            if set != registered {
                wrong.push(format!("{file}: {set:?}, registered {registered:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "interest sets that are not the registration's:\n{}",
        wrong.join("\n")
    );
    assert!(checked >= 3, "only {checked} interest sets found");
}

#[test]
fn the_interest_readers_see_through_the_local_constant() {
    let accept = "const URGENT: Interest = Interest::PRIORITY;\n\
                  const URGENT: Interest = Interest::READABLE;\n\
                  let interest = Interest::READABLE | Interest::WRITABLE | URGENT;\n";
    assert_eq!(
        registered_interests(accept),
        ["PRIORITY", "READABLE", "WRITABLE"]
    );
    assert_eq!(
        documented_interest_sets("for `READABLE | WRITABLE`, not `a | b` or `READABLE`"),
        [vec!["READABLE".to_string(), "WRITABLE".to_string()]]
    );
}

// ---- the metrics table names every close reason ----

#[test]
fn every_close_reason_is_in_the_operations_metrics_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let operations = std::fs::read_to_string(root.join("docs/OPERATIONS.md")).unwrap();
    let row = operations
        .lines()
        .find(|l| l.starts_with("| `echo_reactor_connections_closed_total{reason}`"))
        .expect("the closed_total row");
    let missing: Vec<&str> = echo_reactor::CloseReason::ALL
        .iter()
        .map(|r| r.name())
        .filter(|name| !row.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "close reasons the metrics table does not name: {missing:?}"
    );
}
