//! Peak resident memory while draining a backlog, measured in a child
//! process so each figure starts from a fresh heap.

use std::process::Command;

/// The peak resident set of this process so far, in MiB (`VmHWM`).
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Runs the benchmark binary `exe` as a child with `args` and reads the
/// peak RSS it prints on its last line.
pub fn in_child(args: &[String], exe: &std::path::Path) -> f64 {
    let output = Command::new(exe)
        .args(args)
        .output()
        .expect("the child runs");
    assert!(
        output.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("child {args:?} printed no RSS"))
}
