//! What the benches share: where criterion writes, the report lines they
//! leave for `scripts/bench.sh`, and the statistics of paired runs.
// Each bench is its own crate and uses part of this.
#![allow(dead_code)]

use std::path::PathBuf;

/// Where criterion writes (the same rule as `scripts/bench.sh`).
pub(crate) fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    PathBuf::from(target).join("criterion")
}

/// Writes report lines for `scripts/bench.sh` to
/// `<criterion>/<group>/extra.json`; `bench` names the writer in a failure
/// message.
pub(crate) fn write_extra(bench: &str, group: &str, lines: &[String]) {
    let dir = criterion_dir().join(group);
    let _ = std::fs::create_dir_all(&dir);
    let escaped: Vec<String> = lines
        .iter()
        .map(|l| format!("\"{}\"", l.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    let json = format!("{{\"lines\": [\n  {}\n]}}\n", escaped.join(",\n  "));
    if let Err(e) = std::fs::write(dir.join("extra.json"), json) {
        eprintln!("{bench} bench: cannot write extra.json: {e}");
    }
}

/// `v`, sorted.
pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The `q` quantile of `sorted` (linear between neighbours); NaN if empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The verdict on a minimum `target` from the quartiles of paired ratios:
/// met only if the lower quartile reaches it, missed only if the upper one
/// does not.
pub(crate) fn verdict(q1: f64, q3: f64, target: f64) -> &'static str {
    if q1 >= target {
        "met"
    } else if q3 < target {
        "**missed**"
    } else {
        "not resolved: the quartiles straddle it"
    }
}

/// The tail of a paired-runs line: "**median ×** (median; quartiles …,
/// min …, max …); target ≥ T ×: verdict." for the sorted ratios `r`
/// (not empty), with `digits` decimals.
pub(crate) fn summary(r: &[f64], digits: usize, target: f64) -> String {
    let (q1, median, q3) = (quantile(r, 0.25), quantile(r, 0.5), quantile(r, 0.75));
    format!(
        "**{median:.digits$} ×** (median; quartiles {q1:.digits$}–{q3:.digits$}, \
         min {:.digits$}, max {:.digits$}); target ≥ {target} ×: {}.",
        r[0],
        r[r.len() - 1],
        verdict(q1, q3, target)
    )
}
