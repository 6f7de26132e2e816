//! The published package: what `cargo package --list` holds, and its size.

use std::path::Path;
use std::process::Command;

/// The files `cargo package` would put in the .crate (the working tree as
/// it is, committed or not), relative to the manifest's directory.
fn packaged_files() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["package", "--list", "--allow-dirty", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo package --list");
    assert!(
        out.status.success(),
        "cargo package --list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn the_package_holds_what_a_user_needs() {
    let files = packaged_files();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "CHANGELOG.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "src/main.rs",
        "src/lib.rs",
        // The benches' own peers: `cargo bench` compares against them.
        "benches/echo/main.rs",
        "benches/echo/servers.rs",
        "benches/c_epoll_echo.c",
        "contrib/install.sh",
        "contrib/systemd/echo-reactor.service",
    ] {
        assert!(
            files.iter().any(|f| f == needed),
            "{needed} is not packaged"
        );
    }
}

#[test]
fn the_package_leaves_out_what_a_user_does_not_need() {
    let files = packaged_files();
    let unwanted: Vec<&String> = files
        .iter()
        .filter(|f| {
            [
                "fuzz/",
                "proptest-regressions/",
                "docs/charts/",
                "scripts/",
                ".ci/",
                "target/",
            ]
            .iter()
            .any(|dir| f.starts_with(dir))
        })
        .collect();
    assert!(unwanted.is_empty(), "packaged: {unwanted:?}");
}

#[test]
fn the_package_stays_under_3_mib() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Uncompressed; the .crate is gzipped, so smaller still (crates.io
    // takes up to 10 MiB compressed). The bound catches a stray large file
    // (a chart, a recording, a core dump), not the sources and docs
    // growing: they passed 2 MiB with the upgrade and its docs. Files cargo
    // writes itself (Cargo.toml.orig, .cargo_vcs_info.json) are counted
    // through their sources or are a few bytes.
    let total: u64 = packaged_files()
        .iter()
        .filter_map(|f| std::fs::metadata(root.join(f)).ok())
        .map(|m| m.len())
        .sum();
    assert!(total < 3 << 20, "the package holds {total} bytes");
}
