//! contrib/install.sh: installed into a temporary DESTDIR, everything lands
//! under PREFIX, and the installed binary serves.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{ServeProcess, DEADLINE};

/// Run contrib/install.sh with `PREFIX=prefix` into a fresh DESTDIR, with
/// the binary cargo built for these tests (no release build inside a test).
fn install(prefix: &str) -> PathBuf {
    let destdir = std::env::temp_dir().join(format!(
        "echo-reactor-install-{}-{}",
        std::process::id(),
        prefix.replace('/', "_")
    ));
    let _ = std::fs::remove_dir_all(&destdir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/install.sh");
    let out = Command::new("sh")
        .arg(script)
        .env("PREFIX", prefix)
        .env("DESTDIR", &destdir)
        .env("ECHO_REACTOR_BIN", env!("CARGO_BIN_EXE_echo-reactor"))
        .output()
        .expect("run contrib/install.sh");
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    destdir
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_installed_binary_serves_and_everything_lands_under_prefix() {
    let destdir = install("/usr");
    let files = files_under(&destdir);
    for expected in [
        "usr/bin/echo-reactor",
        "usr/share/man/man1/echo-reactor.1",
        "usr/share/bash-completion/completions/echo-reactor",
        "usr/share/zsh/site-functions/_echo-reactor",
        "usr/share/fish/vendor_completions.d/echo-reactor.fish",
        "usr/lib/systemd/system/echo-reactor.service",
        "usr/lib/systemd/system/echo-reactor.socket",
        "usr/share/doc/echo-reactor/README.md",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} not in {files:?}"
        );
    }
    assert!(
        files.iter().all(|f| f.starts_with("usr/")),
        "a file outside PREFIX: {files:?}"
    );

    // The unit starts the binary where it was installed, and DESTDIR (a
    // staging directory) appears in no installed file.
    let unit = std::fs::read_to_string(destdir.join("usr/lib/systemd/system/echo-reactor.service"))
        .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/echo-reactor serve"),
        "{unit}"
    );
    let page = std::fs::read_to_string(destdir.join("usr/share/man/man1/echo-reactor.1")).unwrap();
    assert!(
        page.contains("\n.TH echo-reactor 1"),
        "not a man page: {page:.80}"
    );
    let staged = destdir.display().to_string();
    for file in &files {
        let bytes = std::fs::read(destdir.join(file)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&staged), "{file} names the DESTDIR");
    }

    // The installed binary itself: its version, then a real echo.
    let installed = destdir.join("usr/bin/echo-reactor");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("echo-reactor {}", env!("CARGO_PKG_VERSION"))
    );
    let mut serve = Command::new(&installed);
    serve
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::piped());
    let server = ServeProcess::spawn_command(serve, 1);
    let mut stream = TcpStream::connect(server.addr(0)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"installed\n").unwrap();
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"installed\n");
    drop(server);
    std::fs::remove_dir_all(&destdir).unwrap();
}

#[test]
fn a_relative_prefix_is_refused_before_anything_is_installed() {
    let destdir =
        std::env::temp_dir().join(format!("echo-reactor-install-rel-{}", std::process::id()));
    let out = Command::new("sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/install.sh"))
        .env("PREFIX", "usr/local")
        .env("DESTDIR", &destdir)
        .env("ECHO_REACTOR_BIN", env!("CARGO_BIN_EXE_echo-reactor"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PREFIX must be an absolute path"));
    assert!(!destdir.exists());
}
