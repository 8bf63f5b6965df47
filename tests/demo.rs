//! Runs `examples/hybrid_demo.rs` the way a newcomer does — through
//! `cargo run --example hybrid_demo` — for a few seconds, and checks what it
//! prints, its exit status and the SVG chart it writes.
//!
//! Cargo gives tests no path to an example's binary (`CARGO_BIN_EXE_*` is
//! for `[[bin]]` targets only), so the test asks the same `cargo` that runs
//! it (`env!("CARGO")`) to build and run the example, with the same profile
//! as the test itself. `cargo test` has already built the examples, so that
//! is usually only the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `cargo run --example hybrid_demo -- ARGS` from the crate's root.
fn run_demo(args: &[&str], svg: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "run",
        "--quiet",
        "--example",
        "hybrid_demo",
    ]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    command.arg("--").args(args);
    if let Some(svg) = svg {
        command.arg("--svg").arg(svg);
    }
    match command.output() {
        Ok(output) => output,
        Err(e) => panic!("cannot start `{}`: {e}", env!("CARGO")),
    }
}

/// Stdout and stderr, for assertion messages.
fn transcript(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Occurrences of `needle` in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// A minimal well-formedness check of the chart: one root `<svg>` element,
/// closed at the very end, with every element opened also closed.
fn check_svg(svg: &str) {
    let body = svg.trim();
    assert!(
        body.starts_with("<svg") || body.starts_with("<?xml"),
        "the chart does not start with <svg or <?xml: {:?}",
        &body[..body.len().min(80)]
    );
    assert!(
        body.ends_with("</svg>"),
        "the chart does not end with </svg>"
    );
    assert_eq!(count(body, "<svg"), 1, "one <svg> element");
    assert_eq!(count(body, "</svg>"), 1, "one </svg>");
    // Every tag is either self-closing or closed: `<` of an opening tag
    // without `/>` must be matched by a `</`.
    let opened = body.matches('<').count() - count(body, "</") - count(body, "<?");
    let self_closed = count(body, "/>");
    let closed = count(body, "</");
    assert_eq!(
        opened,
        self_closed + closed,
        "unbalanced tags: {opened} opened, {self_closed} self-closing, {closed} closing"
    );
    assert!(
        body.contains("<polyline") || body.contains("<path"),
        "the chart has no line for the series"
    );
    // The legend names the threshold line.
    assert!(
        body.contains("threshold"),
        "the chart has no threshold line"
    );
}

#[test]
fn a_short_run_switches_delivers_every_item_and_writes_a_chart() {
    let svg = TempFile(
        std::env::temp_dir().join(format!("ringweave-hybrid-demo-{}.svg", std::process::id())),
    );
    let _ = std::fs::remove_file(&svg.0);
    // 4 s: 1.2 s at 12.5k/s, 1.6 s at 200k/s, 1.2 s at 12.5k/s. A threshold
    // half the default keeps the high phase within reach of a busy debug build.
    // A worker is killed in the high phase (or once the run is distributed).
    let output = run_demo(
        &[
            "--duration",
            "4",
            "--threshold",
            "50000",
            "--kill-worker-at",
            "1.8",
        ],
        Some(&svg.0),
    );
    let text = transcript(&output);
    assert!(output.status.success(), "the demo failed\n{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Switch history ("),
        "no switch history\n{text}"
    );
    assert!(
        stdout.contains("PASS: exactly the expected items, in order"),
        "no PASS\n{text}"
    );
    assert!(!stdout.contains("FAIL"), "FAIL printed\n{text}");
    // The rate rises 16-fold in the middle phase: a switch out must happen.
    assert!(
        stdout.contains("in-process → distributed") && stdout.contains("outcome  completed"),
        "no completed switch to distributed mode\n{text}"
    );
    assert!(
        stdout.contains("Latency, source → sink"),
        "no latency\n{text}"
    );
    // The kill is replaced and shows in the status notices and the history.
    assert!(stdout.contains("SIGKILL to worker"), "no kill\n{text}");
    assert!(stdout.contains("Recoveries (1)"), "no recovery\n{text}");
    assert!(
        stdout.contains("replaced from the last checkpoint"),
        "no recovery notice\n{text}"
    );
    assert!(
        stdout.contains(&format!("Chart: {}", svg.0.display())),
        "the chart's path is not printed\n{text}"
    );
    let chart = match std::fs::read_to_string(&svg.0) {
        Ok(chart) => chart,
        Err(e) => panic!("cannot read the chart {}: {e}\n{text}", svg.0.display()),
    };
    check_svg(&chart);
    assert!(
        chart.contains("→ distributed"),
        "the chart does not mark the switch"
    );
    assert!(
        chart.contains("replaced"),
        "the chart does not mark the recovery"
    );
}

#[test]
fn help_and_bad_arguments() {
    let help = run_demo(&["--help"], None);
    assert!(help.status.success(), "{}", transcript(&help));
    let stdout = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--duration",
        "--threshold",
        "--stage-cost",
        "--kill-worker-at",
        "--svg",
        "--help",
    ] {
        assert!(stdout.contains(flag), "--help does not mention {flag}");
    }

    let bad = run_demo(&["--duration", "soon"], None);
    assert_eq!(bad.status.code(), Some(2), "{}", transcript(&bad));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("`--duration` takes seconds") && stderr.contains("soon"),
        "{}",
        transcript(&bad)
    );

    let unknown = run_demo(&["--fast"], None);
    assert_eq!(unknown.status.code(), Some(2), "{}", transcript(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown argument `--fast`"));
}
