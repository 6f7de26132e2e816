//! The docs name code as `src/file.rs:function` (or `src/file.rs` alone).
//! Every such reference must exist, so the docs cannot quietly go stale;
//! every function the tour and the architecture name has a doc comment, so
//! rustdoc alone answers what they answer; and where the docs write a path
//! as `` `a` → `b` ``, `a`'s body calls `b` — the path described is the path
//! the code takes (a name that exists but is off the path is caught too).
//! The module map is true as well: the layers in `src/lib.rs` and in the
//! Mermaid picture of `docs/ARCHITECTURE.md` name the same modules, every
//! one exists, and no `crate::` path in `src/` points to a layer above.

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

// ---- the module map: src/lib.rs and the picture in docs/ARCHITECTURE.md ----

/// The layers of the map in `src/lib.rs`, top first: a `**Title.**` line
/// opens a layer, and each table row's first cell names its modules
/// (``[`name`]`` or ``[`name`](mod@name)``).
fn lib_map_layers(lib: &str) -> Vec<Vec<String>> {
    let mut layers: Vec<Vec<String>> = Vec::new();
    let map = lib
        .lines()
        .skip_while(|line| !line.starts_with("//! ## Map of the modules"))
        .skip(1)
        .map_while(|line| line.strip_prefix("//!"))
        .take_while(|line| !line.trim_start().starts_with("## "));
    for line in map {
        let line = line.trim();
        if line.starts_with("**") {
            layers.push(Vec::new());
        } else if let (Some(cell), Some(layer)) = (line.split('|').nth(1), layers.last_mut()) {
            layer.extend(
                cell.split("[`")
                    .skip(1)
                    .filter_map(|named| named.split_once("`]"))
                    .map(|(name, _)| name.to_string()),
            );
        }
    }
    layers
}

/// The layers of the first Mermaid picture in `doc`, top first: each
/// `subgraph` is a layer, and the names on its lines (between `-->`, `~~~`
/// and `&`) are its modules.
fn mermaid_layers(doc: &str) -> Vec<Vec<String>> {
    let mut layers = Vec::new();
    let mut layer: Option<Vec<String>> = None;
    let picture = doc
        .lines()
        .skip_while(|line| line.trim() != "```mermaid")
        .skip(1)
        .take_while(|line| line.trim() != "```");
    for line in picture {
        let line = line.trim();
        if line.starts_with("subgraph ") {
            layer = Some(Vec::new());
        } else if line == "end" {
            layers.extend(layer.take());
        } else if let Some(layer) = layer.as_mut() {
            if !line.starts_with("direction ") {
                let names = line
                    .replace("-->", " ")
                    .replace("~~~", " ")
                    .replace('&', " ");
                layer.extend(names.split_whitespace().map(str::to_string));
            }
        }
    }
    layers
}

/// The top-level modules a source file's non-test code names: `crate::a`
/// paths, and the heads of `use crate::{a, b::c}` groups (`prefix` is
/// `crate` in the library, `echo_reactor` in `main.rs`).
fn used_modules(source: &str, prefix: &str) -> Vec<String> {
    // Test modules sit at the end of a file; code after them is test code.
    let code = source
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or("");
    let code: String = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut used = Vec::new();
    for (at, _) in code.match_indices(&format!("{prefix}::")) {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::` is not `crate::`
        }
        let rest = &code[at + prefix.len() + 2..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => used.push(std::mem::take(&mut item)),
                    _ => {}
                }
                if c != ',' || depth > 0 {
                    item.push(c);
                }
            }
            used.push(item);
        } else {
            used.push(rest.to_string());
        }
    }
    used.iter()
        .map(|path| {
            path.trim()
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
                .to_string()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

fn module_exists(root: &Path, name: &str) -> bool {
    let src = root.join("src");
    if name == "main" {
        return src.join("main.rs").is_file();
    }
    src.join(format!("{name}.rs")).is_file() || src.join(name).join("mod.rs").is_file()
}

#[test]
fn every_module_in_the_map_and_the_picture_exists_and_both_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let map = lib_map_layers(&lib);
    let picture = mermaid_layers(&doc);
    assert!(
        map.len() >= 5,
        "the map in src/lib.rs has {} layers",
        map.len()
    );

    let mut missing: Vec<String> = (map.iter().flatten())
        .map(|name| format!("src/lib.rs map: {name}"))
        .chain(
            picture
                .iter()
                .flatten()
                .map(|name| format!("docs/ARCHITECTURE.md picture: {name}")),
        )
        .filter(|named| !module_exists(root, named.rsplit(": ").next().unwrap()))
        .collect();
    // And the other way: every public module is on the map.
    for line in lib.lines() {
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            if !map.iter().flatten().any(|named| named == name) {
                missing.push(format!("pub mod {name} is not on the src/lib.rs map"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules that do not exist or are not mapped:\n{}",
        missing.join("\n")
    );
    // The picture has the binary (`main`) on top of the library's layers;
    // within a layer, the order is the picture's layout, not a rule.
    let sorted = |layers: &[Vec<String>]| -> Vec<Vec<String>> {
        let mut layers = layers.to_vec();
        layers.iter_mut().for_each(|layer| layer.sort());
        layers
    };
    assert_eq!(
        picture.first().map(Vec::as_slice),
        Some(&["main".to_string()][..])
    );
    assert_eq!(
        sorted(&picture[1..]),
        sorted(&map),
        "docs/ARCHITECTURE.md's picture and src/lib.rs's map disagree on the layers"
    );
}

#[test]
fn no_module_uses_one_in_a_layer_above() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let layers = mermaid_layers(&doc);
    let layer_of = |name: &str| layers.iter().position(|l| l.iter().any(|n| n == name));
    let mut upward = Vec::new();
    let mut checked = 0;
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path.strip_prefix(root.join("src")).unwrap();
            let top = relative.iter().next().unwrap().to_string_lossy();
            let module = top.trim_end_matches(".rs");
            let prefix = if module == "main" {
                "echo_reactor"
            } else {
                "crate"
            };
            let Some(from) = layer_of(module) else {
                continue; // lib.rs itself, and test-only modules
            };
            let source = std::fs::read_to_string(&path).unwrap();
            for used in used_modules(&source, prefix) {
                // Names that are not layered modules are re-exports (`crate::Config`).
                if let Some(to) = layer_of(&used) {
                    checked += 1;
                    if to < from {
                        upward.push(format!("src/{}: {module} uses {used}", relative.display()));
                    }
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "uses that point up a layer:\n{}",
        upward.join("\n")
    );
    assert!(
        checked >= 100,
        "only {checked} crate:: paths found: is the pattern still matching?"
    );
}

#[test]
fn the_map_readers_find_layers_modules_and_uses() {
    let lib = "//! ## Map of the modules\n//!\n//! **Top.** x\n//!\n//! | module | owns |\n\
               //! |---|---|\n//! | [`cli`] | parsing |\n//! **Below.**\n\
               //! | [`bench`](mod@bench), [`units`] | load |\n//!\n//! ## Next\n//! **Not.**\n";
    assert_eq!(lib_map_layers(lib), [vec!["cli"], vec!["bench", "units"]]);
    let doc = "```mermaid\nflowchart TB\n    subgraph L0 [top]\n        main\n    end\n\
               subgraph L1 [x]\n        direction LR\n        a --> b ~~~ c & d\n    end\n\
               L0 --> L1\n```\n";
    assert_eq!(
        mermaid_layers(doc),
        [vec!["main"], vec!["a", "b", "c", "d"]]
    );
    let source = "use crate::{a::b, c::{d, e}, f};\nlet x = crate::g::h(); // crate::z\n\
                  my_crate::y();\n#[cfg(test)]\nmod tests {\n    use crate::t;\n}\n";
    assert_eq!(used_modules(source, "crate"), ["a", "c", "f", "g"]);
}

// ---- the repository stands alone ----

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
            if textual && !path.ends_with("tests/docs_references.rs") {
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

// ---- figures the docs quote from the code ----

/// A constant's value in `src/`: `const NAME: T = EXPR;` where EXPR is a
/// product of integer literals and other such constants, or a
/// `Duration::from_secs`/`from_millis` of one (in ms).
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
        let factor = factor.trim();
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
                    "{doc}: `{name}` quoted as {quoted} {unit}, but it is {value}"
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
                   pub const D: Duration = Duration::from_secs(60);";
    assert_eq!(constant_value(sources, "A_MS"), Some(5_000));
    assert_eq!(constant_value(sources, "B"), Some(32));
    assert_eq!(constant_value(sources, "D"), Some(60_000));
    assert_eq!(constant_value(sources, "NONE"), None);
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

#[test]
fn figures_the_docs_state_in_words_are_the_code_s() {
    use echo_reactor::budget::Marks;
    use echo_reactor::connection::{LINGER_MS, REFUSAL_LINGER_MS};
    use echo_reactor::http::MAX_REQUEST_HEAD_BYTES;
    use echo_reactor::reactor::{
        ACCEPT_PAUSE_MS, MAX_METRICS_CONNECTIONS, METRICS_DEADLINE_MS, METRICS_LINGER_MS,
        METRICS_SLOTS,
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
            format!("the server waits up to {METRICS_LINGER_MS} ms"),
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

/// The rows of the flag table in the README section headed `heading`:
/// (the flags named in the first cell, the default cell).
fn flag_rows(readme: &str, heading: &str) -> Vec<(Vec<String>, String)> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("README has no section {heading}"));
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `--")) {
        let line = line.replace("\\|", "¦"); // `echo\|upper` is one cell
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let flags = cells[1]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|span| span.split_whitespace().next())
            .filter(|flag| flag.starts_with("--"))
            .map(str::to_string)
            .collect();
        rows.push((flags, cells[2].to_string()));
    }
    rows
}

/// What a default cell says first: its first backticked value, or its
/// first word (`none`, `off`, `50`).
fn documented_default(cell: &str) -> String {
    let cell = cell.trim();
    if let Some(rest) = cell.strip_prefix('`') {
        return rest.split('`').next().unwrap_or("").to_string();
    }
    cell.split(|c: char| c.is_whitespace() || c == ';' || c == ',')
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn every_default_in_the_readme_flag_tables_is_clap_s() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let command = echo_reactor::cli::command();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (heading, subcommand) in [("Using `serve`", "serve"), ("Benchmarking", "bench")] {
        let sub = command.find_subcommand(subcommand).unwrap();
        let rows = flag_rows(&readme, heading);
        assert!(rows.len() >= 10, "{subcommand}: only {} rows", rows.len());
        for (flags, cell) in rows {
            let cells: Vec<&str> = if flags.len() > 1 {
                cell.split(" / ").collect()
            } else {
                vec![&cell]
            };
            for (flag, cell) in flags.iter().zip(cells) {
                let long = flag.trim_start_matches("--");
                let Some(arg) = sub.get_arguments().find(|a| a.get_long() == Some(long)) else {
                    wrong.push(format!("{subcommand} {flag}: no such flag"));
                    continue;
                };
                let documented = documented_default(cell);
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let expected = if !arg.get_action().takes_values() {
                    Some("off".to_string()) // a switch
                } else if let [value] = arg.get_default_values() {
                    Some(value.to_string_lossy().into_owned())
                } else {
                    // Defaults decided in code say so in the help, when they are one value.
                    help.split("[default: ")
                        .nth(1)
                        .and_then(|d| d.split(']').next())
                        .filter(|d| !d.contains(' '))
                        .map(str::to_string)
                };
                let Some(expected) = expected else { continue };
                checked += 1;
                if documented != expected {
                    wrong.push(format!(
                        "{subcommand} {flag}: the README says {documented:?}, clap {expected:?}"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "flag defaults the README gets wrong:\n{}",
        wrong.join("\n")
    );
    assert!(checked >= 20, "only {checked} defaults checked");
}

#[test]
fn the_library_s_defaults_are_the_command_line_s() {
    use echo_reactor::units::{parse_bytes, parse_bytes_or_zero, parse_secs, parse_secs_or_zero};
    let command = echo_reactor::cli::command();
    let serve = command.find_subcommand("serve").unwrap();
    let default_of = |long: &str| -> String {
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .unwrap();
        arg.get_default_values()[0].to_string_lossy().into_owned()
    };
    let config = echo_reactor::Config::default();
    assert_eq!(
        parse_bytes(&default_of("max-buffered")),
        Ok(config.max_buffered)
    );
    assert_eq!(parse_bytes(&default_of("max-line")), Ok(config.max_line));
    assert_eq!(
        parse_bytes_or_zero(&default_of("max-memory")),
        Ok(config.max_memory)
    );
    assert_eq!(
        parse_bytes_or_zero(&default_of("udp-reply-budget")),
        Ok(config.udp_reply_budget)
    );
    assert_eq!(default_of("backlog"), config.backlog.to_string());
    assert_eq!(
        parse_secs(&default_of("stall-timeout")).ok(),
        config.stall_timeout
    );
    assert_eq!(
        parse_secs_or_zero(&default_of("shutdown-grace")),
        Ok(config.shutdown_grace)
    );
}

#[test]
fn the_flag_table_reader_finds_flags_and_defaults() {
    let readme = "# T\n\n## Using `x`\n\n| flag | default | meaning |\n|---|---|---|\n\
                  | `--a N\\|auto` | `1` | one |\n| `--b SECS` / `--c SECS` | 10 / 1 | two |\n\
                  | `--d` | off | three |\n\n## Next\n| `--e` | 5 | not this one |\n";
    let rows = flag_rows(readme, "Using `x`");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], (vec!["--a".to_string()], "`1`".to_string()));
    assert_eq!(rows[1].0, ["--b", "--c"]);
    assert_eq!(documented_default("`0` (off)"), "0");
    assert_eq!(documented_default("none (closed loop)"), "none");
    assert_eq!(documented_default("10"), "10");
}

// ---- the registration's interest set ----

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

// ---- the pictures ----

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
