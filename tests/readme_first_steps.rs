//! The README's first steps as a newcomer follows them: install with
//! cargo before any clone-and-run command, and a first server that only
//! this machine can reach (exposure is a later, deliberate step).

use std::path::Path;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The README's command lines, in order: each line of a `sh` block and
/// each `` `cargo ...` `` or `` `echo-reactor ...` `` quoted in the text.
fn commands(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if in_sh {
            found.push(line.trim().to_string());
            continue;
        }
        for quoted in line.split('`').skip(1).step_by(2) {
            if quoted.starts_with("cargo ") || quoted.starts_with("echo-reactor ") {
                found.push(quoted.to_string());
            }
        }
    }
    found
}

/// Whether `command` starts a server.
fn serves(command: &str) -> bool {
    command.starts_with("echo-reactor serve") || command.starts_with("cargo run --release -- serve")
}

#[test]
fn cargo_install_comes_before_any_clone_and_run_command() {
    let commands = commands(&readme());
    let install = commands
        .iter()
        .position(|c| c.starts_with("cargo install --path ."))
        .expect("README says cargo install --path .");
    let first_run = commands
        .iter()
        .position(|c| c.starts_with("cargo run"))
        .expect("README has cargo run commands");
    assert!(
        install < first_run,
        "cargo install at {install}, cargo run at {first_run}"
    );
}

#[test]
fn the_first_server_a_newcomer_starts_listens_on_loopback_only() {
    let commands = commands(&readme());
    let first = commands
        .iter()
        .find(|c| serves(c))
        .expect("README starts a server");
    for everywhere in ["0.0.0.0", "[::]"] {
        assert!(!first.contains(everywhere), "first server: {first}");
    }
    // Exposure comes later, and is explained where it does.
    let text = readme();
    let exposed = text
        .find("--listen 0.0.0.0:8888")
        .expect("README shows exposure");
    assert!(text.find(first.as_str()).unwrap() < exposed);
}

#[test]
fn the_command_reader_finds_sh_blocks_and_quoted_commands() {
    let text = "Run `cargo install --path .` first.\n```sh\necho-reactor serve --listen 0.0.0.0:1\n```\n```\nnot sh\n```\n";
    assert_eq!(
        commands(text),
        [
            "cargo install --path .",
            "echo-reactor serve --listen 0.0.0.0:1"
        ]
    );
}
