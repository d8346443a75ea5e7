//! Running example programs as real processes.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of example `name` as `cargo test --workspace` builds it (next to
/// the test binaries, so `CARGO_TARGET_DIR` is honoured).
pub fn example_path(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "example `{name}` is not built at {}; run the tests with `cargo test --workspace` (which builds examples) or `cargo build --examples` first",
        path.display()
    );
    path
}

/// Runs example `name` with `args` in the repository root and waits.
pub fn run_example(name: &str, args: &[&str]) -> Output {
    Command::new(example_path(name))
        .args(args)
        .current_dir(repository_root())
        .env_remove("BINDERY_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the example runs")
}

/// The repository root.
pub fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the root")
        .to_owned()
}
