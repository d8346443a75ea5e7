//! The command line every bindery app understands, tried on the quickstart
//! example as a new user would: bad configuration exits 2 listing every
//! problem, `--check` prints the wiring, and the quickstart runs to the end.

use std::io::Write;

use bindery_tests::process::run_example;

fn stderr_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bad_configuration_exits_2_with_every_problem_on_its_own_line() {
    let mut file = tempfile_in_target("bad.toml");
    writeln!(
        file.1,
        r#"
[bindery]
definition = "orders;prise;print"

[binders.rabbit]
type = "memory"

[binders.kafka]
type = "memory"

[bindery.poller]
fixed-delay = "1s"

[bindings.orders-out-0]
binder = "rabbit"

[bindings.print-in-0]
binder = "kafak"

[bindings.print-in-0.consumer]
max-attemps = 3
"#
    )
    .unwrap();
    let output = run_example(
        "quickstart",
        &["--config", file.0.to_str().unwrap(), "--check"],
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit status; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = stderr_lines(&output);
    let has = |fragments: &[&str]| {
        lines
            .iter()
            .any(|l| fragments.iter().all(|f| l.contains(f)))
    };
    assert!(
        has(&[
            "bindery.definition",
            "`prise`",
            "did you mean `price`?",
            "registered: orders, price, print"
        ]),
        "{lines:#?}"
    );
    assert!(
        has(&[
            "bindings.print-in-0.binder",
            "`kafak`",
            "did you mean `kafka`?",
            "declared: kafka, rabbit"
        ]),
        "{lines:#?}"
    );
    assert!(
        has(&[
            "bindings.print-in-0.consumer.max-attemps",
            "did you mean `max-attempts`?"
        ]),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("error: ") || l.starts_with("warning: ")),
        "one line per problem: {lines:#?}"
    );
    assert!(output.stdout.is_empty(), "nothing started");
}

#[test]
fn check_prints_the_wiring_without_connecting() {
    let output = run_example("quickstart", &["--check"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for fragment in [
        "memory type=memory (default)",
        "orders (source)",
        "out orders-out-0 -> binder memory (memory) destination=orders",
        "in  price-in-0 -> binder memory (memory) destination=orders group=pricing",
        "print (sink)",
    ] {
        assert!(
            stdout.contains(fragment),
            "`{fragment}` missing from:\n{stdout}"
        );
    }
}

#[test]
fn the_quickstart_runs_to_the_end_by_itself() {
    let output = run_example("quickstart", &[]);
    assert!(
        output.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("order ")).count(),
        5,
        "{stdout}"
    );
    assert!(stdout.contains("printed 5 orders"), "{stdout}");
}

#[test]
fn unknown_arguments_are_a_usage_error() {
    let output = run_example("quickstart", &["--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}

/// A file under the target directory (no temp-file crate needed).
fn tempfile_in_target(name: &str) -> (std::path::PathBuf, std::fs::File) {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}
