//! The README's flag tables give clap's defaults, and the library's own
//! defaults (`Config::default()`) are the command line's: a default
//! changed in one place cannot leave the others saying the old one.

use std::path::Path;

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
