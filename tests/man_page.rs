//! `echo-reactor man`: a roff page that groff renders without a warning
//! and that names every subcommand and every flag the parser accepts.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use clap::CommandFactory;
use echo_reactor::cli::Cli;
use support::required_tool;

/// `echo-reactor man`'s stdout, checked to have succeeded.
fn man_page() -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .arg("man")
        .output()
        .expect("run echo-reactor man");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The page as `man` would show it, and groff's warnings (`-ww`: all of
/// them). No hyphenation (`-rHY=0`) and wide lines, so a flag is never
/// split across lines in the text searched below.
fn render(page: &[u8]) -> Option<(String, String)> {
    let groff = required_tool("groff", "groff-base")?;
    let mut child = Command::new(groff)
        .args(["-man", "-ww", "-Tutf8", "-rHY=0", "-rLL=250n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run groff");
    child.stdin.take().unwrap().write_all(page).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "groff failed");
    // -Tutf8 marks bold and underline with backspaces: keep only the letters.
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    while let Some(at) = text.find('\u{8}') {
        let before = text[..at].chars().last().map_or(0, char::len_utf8);
        text.replace_range(at - before..at + 1, "");
    }
    // Justified lines stretch the spaces between words: one space each.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Some((text, String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn the_man_page_renders_without_warnings() {
    let Some((text, warnings)) = render(&man_page()) else {
        return;
    };
    assert_eq!(warnings, "", "groff -ww warned");
    assert!(text.contains("NAME"), "{text}");
}

#[test]
fn groff_warns_about_a_broken_page() {
    // The check above can fail: a macro groff does not know is a warning.
    let Some((_, warnings)) = render(b".TH X 1\n.SH NAME\n.NOSUCHMACRO x\n") else {
        return;
    };
    assert!(warnings.contains("NOSUCHMACRO"), "{warnings}");
}

#[test]
fn the_man_page_names_every_subcommand_and_every_flag() {
    let Some((text, _)) = render(&man_page()) else {
        return;
    };
    let mut missing = Vec::new();
    let top = Cli::command();
    let mut commands = vec![(String::from("echo-reactor"), &top)];
    while let Some((name, command)) = commands.pop() {
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                if !text.contains(&format!("--{long}")) {
                    missing.push(format!("{name} --{long}"));
                }
            }
        }
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let full = format!("{name} {}", sub.get_name());
            if !text.contains(&full) {
                missing.push(full.clone());
            }
            commands.push((full, sub));
        }
    }
    assert!(missing.is_empty(), "the man page lacks {missing:?}");
}
