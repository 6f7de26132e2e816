//! `echo-reactor completions SHELL`: the scripts complete what the parser
//! accepts. Bash itself sources the bash script and is asked to complete,
//! as it would be on a Tab.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::CommandFactory;
use echo_reactor::cli::Cli;
use support::required_tool;

const BIN: &str = env!("CARGO_BIN_EXE_echo-reactor");

/// `echo-reactor completions SHELL`'s stdout, checked to have succeeded.
fn script(shell: &str) -> String {
    let out = Command::new(BIN)
        .args(["completions", shell])
        .output()
        .expect("run echo-reactor completions");
    assert!(
        out.status.success(),
        "completions {shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a completion script is text")
}

/// What bash offers for the command line `words` (the last one being the
/// word under the cursor), using the function the script registered with
/// `complete -F` for `echo-reactor`, the way readline calls it on a Tab.
fn bash_completes(words: &[&str]) -> Option<Vec<String>> {
    let bash = required_tool("bash", "bash")?;
    // One directory per call: the tests run in parallel in one process.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "echo-reactor-completions-{}-{call}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo-reactor.bash");
    std::fs::write(&path, script("bash")).unwrap();
    let driver = r#"
        set -u
        source "$1"; shift
        # The function `complete -p` says is registered, not a guessed name.
        fn=$(complete -p echo-reactor | sed -n 's/.* -F \([^ ]*\).*/\1/p')
        [ -n "$fn" ] || { echo "no complete -F for echo-reactor" >&2; exit 3; }
        COMP_WORDS=("$@")
        COMP_CWORD=$(( $# - 1 ))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        COMPREPLY=()
        "$fn" echo-reactor "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new(bash)
        .args(["--norc", "--noprofile", "-c", driver, "driver"])
        .arg(&path)
        .args(words)
        .output()
        .expect("run bash");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offered = String::from_utf8(out.stdout).unwrap();
    Some(
        offered
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    )
}

#[test]
fn bash_completes_a_subcommand_from_its_first_letters() {
    let Some(offered) = bash_completes(&["echo-reactor", "ser"]) else {
        return;
    };
    assert_eq!(offered, ["serve"]);
}

#[test]
fn bash_completes_the_flags_of_a_subcommand() {
    let Some(offered) = bash_completes(&["echo-reactor", "serve", "--max-"]) else {
        return;
    };
    // Every --max-* flag `serve` has, read from the parser itself.
    let serve = Cli::command();
    let serve = serve.find_subcommand("serve").expect("serve");
    let mut expected: Vec<String> = serve
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| long.starts_with("max-"))
        .map(|long| format!("--{long}"))
        .collect();
    assert!(expected.len() >= 4, "serve has --max-* flags: {expected:?}");
    let mut offered = offered;
    offered.sort();
    expected.sort();
    assert_eq!(offered, expected);
}

#[test]
fn bash_completes_the_values_of_an_enumerated_flag() {
    let Some(offered) = bash_completes(&["echo-reactor", "serve", "--protocol", "g"]) else {
        return;
    };
    assert_eq!(offered, ["greet"]);
}

#[test]
fn every_shell_gets_a_script_naming_the_subcommands_and_their_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let text = script(shell);
        for word in ["serve", "client", "bench", "max-memory", "slo-p99-us"] {
            assert!(text.contains(word), "{shell} script lacks {word}");
        }
    }
}

#[test]
fn an_unknown_shell_is_refused_naming_the_ones_there_are() {
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(err.contains("bash") && err.contains("zsh"), "{err}");
}
