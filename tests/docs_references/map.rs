//! The module map is true: the layers in `src/lib.rs` and in the first
//! Mermaid picture of `docs/ARCHITECTURE.md` name the same modules, every
//! one exists, and no `crate::` path in `src/` points to a layer above.

use std::path::Path;

use super::*;

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
