//! Reading the committed results files back: each file's chart, by its `bench` field, and the
//! Markdown of the current results that `kiln-bench report` puts into `benches/README.md`.
//! This is the one module that knows every bench; the benches know only [`Report`].

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::chart::BarChart;
use crate::documented::DocumentedReport;
use crate::gpu_ops::GpuOpsReport;
use crate::mnist::MnistReport;
use crate::ops::OpsReport;
use crate::report::Report;
use crate::scaling::ScalingReport;
use crate::serve::ServeReport;
use crate::step::StepReport;
use crate::swap::SwapReport;
use crate::swin::SwinReport;
use crate::yolox::YoloxReport;

/// The lines of `benches/README.md` between which `kiln-bench report` writes.
pub const BEGIN: &str = "<!-- results: written by `kiln-bench report`; do not edit by hand -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- end of results -->";

/// The chart of a results file, read by its `bench` field.
pub fn read_chart(path: &Path) -> Result<BarChart, String> {
    read(path).map(|r| r.chart)
}

/// What a results file says.
struct Read {
    chart: BarChart,
    notes: Vec<String>,
    /// The command that wrote it (recorded since `kiln-bench report` exists).
    command: Option<String>,
}

fn read(path: &Path) -> Result<Read, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let command = value.get("command").and_then(Value::as_str).map(String::from);
    let (chart, notes) = chart_of(value).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Read { chart, notes, command })
}

/// The chart and notes of a parsed results file.
fn chart_of(value: Value) -> Result<(BarChart, Vec<String>), String> {
    let bench = match value.get("bench") {
        Some(Value::String(b)) => b.clone(),
        Some(other) => return Err(format!("field `bench` is {other}, not a string")),
        None => return Err("no `bench` field: not a kiln-bench results file".into()),
    };
    match bench.as_str() {
        DocumentedReport::BENCH => parse::<DocumentedReport>(value),
        GpuOpsReport::BENCH => parse::<GpuOpsReport>(value),
        MnistReport::BENCH => parse::<MnistReport>(value),
        OpsReport::BENCH => parse::<OpsReport>(value),
        ScalingReport::BENCH => parse::<ScalingReport>(value),
        ServeReport::BENCH => parse::<ServeReport>(value),
        StepReport::BENCH => parse::<StepReport>(value),
        SwapReport::BENCH => parse::<SwapReport>(value),
        SwinReport::BENCH => parse::<SwinReport>(value),
        YoloxReport::BENCH => parse::<YoloxReport>(value),
        other => Err(format!("unknown bench {other:?}")),
    }
}

fn parse<R: Report>(value: Value) -> Result<(BarChart, Vec<String>), String> {
    serde_json::from_value::<R>(value)
        .map(|r| (r.chart(), r.notes()))
        .map_err(|e| format!("not a `{}` results file: {e}", R::BENCH))
}

/// The results files in `dir`, by name.
pub fn results_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// A number as a table shows it: three significant digits, more for large integers.
pub(crate) fn figure(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One chart as a Markdown table: a row per group, a column per series and, with two or more
/// series, the first over each other one.
pub fn chart_table(chart: &BarChart) -> String {
    let mut head = vec![String::new()];
    head.extend(chart.series.iter().cloned());
    for other in chart.series.iter().skip(1) {
        head.push(format!("{} / {}", chart.series[0], other));
    }
    let mut out = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for (label, values) in &chart.groups {
        let mut row = vec![label.clone()];
        row.extend(values.iter().map(|v| v.map_or("–".into(), figure)));
        for v in values.iter().skip(1) {
            row.push(match (values[0], v) {
                (Some(a), Some(b)) if *b != 0.0 => format!("{}×", figure(a / b)),
                _ => "–".into(),
            });
        }
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// The results section: for each file in `dir`, its title, unit, the command that wrote it
/// and its table.
pub fn render(dir: &Path) -> Result<String, String> {
    let mut out = String::new();
    for path in results_files(dir)? {
        let read = read(&path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push_str(&format!("\n### {}\n\n", read.chart.title));
        out.push_str(&format!("`results/{name}`; {}", read.chart.unit));
        match read.command {
            Some(c) => out.push_str(&format!("; written by `{c}`.\n\n")),
            None => out.push_str(".\n\n"),
        }
        out.push_str(&chart_table(&read.chart));
        if !read.notes.is_empty() {
            out.push('\n');
            for note in &read.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
    }
    Ok(out)
}

/// `readme` with the text between [`BEGIN`] and [`END`] replaced by `section`.
pub fn splice(readme: &str, section: &str) -> Result<String, String> {
    let start = readme.find(BEGIN).ok_or("no results marker in the README")? + BEGIN.len();
    let end = readme[start..]
        .find(END)
        .ok_or("no end-of-results marker in the README")?
        + start;
    Ok(format!(
        "{}\n{}\n{}",
        &readme[..start],
        section.trim_matches('\n'),
        &readme[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
    }

    /// Every results file committed under benches/results/ reads, and gives a chart with a
    /// value for each series somewhere.
    #[test]
    fn committed_results_give_charts() {
        let files = results_files(&results_dir()).unwrap();
        for path in &files {
            let chart = read_chart(path).unwrap();
            assert!(!chart.groups.is_empty(), "{}", path.display());
            for s in 0..chart.series.len() {
                assert!(
                    chart.groups.iter().any(|(_, v)| v[s].is_some()),
                    "{}: series {s}",
                    path.display()
                );
            }
        }
        assert!(files.len() >= 6, "{} results files", files.len());
    }

    /// benches/README.md shows what the committed results say: `kiln-bench report` was run
    /// after the last change to them.
    #[test]
    fn the_readme_shows_the_committed_results() {
        let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&readme_path).unwrap();
        let expected = splice(&readme, &render(&results_dir()).unwrap()).unwrap();
        assert!(
            readme == expected,
            "benches/README.md is stale: run `kiln-bench report` from the repository root"
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let err = |v: &str| chart_of(serde_json::from_str(v).unwrap()).unwrap_err();
        assert!(err(r#"{"x": 1}"#).contains("no `bench` field"));
        assert!(err(r#"{"bench": 3}"#).contains("`bench` is 3"));
        assert!(err(r#"{"bench": "nope"}"#).contains("unknown bench \"nope\""));
        let e = err(r#"{"bench": "mnist", "device": "cpu", "threads": 2}"#);
        assert!(e.contains("`mnist`") && e.contains("missing field `kiln`"), "{e}");
    }

    #[test]
    fn written_reports_read_back_with_their_bench_and_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let report = MnistReport {
            device: "cpu".into(),
            threads: 2,
            kiln: vec![crate::mnist::EpochFigures {
                epoch: 1,
                train_seconds: 233.5,
                test_seconds: Some(6.9),
                epoch_seconds: Some(240.4),
                images_per_second: 257.0,
                accuracy: 0.9856,
            }],
            pytorch: None,
        };
        crate::report::write(&path, &report).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"bench\": \"mnist\""));
        let read = read(&path).unwrap();
        assert_eq!(read.chart, report.chart());
        assert_eq!(read.notes, report.notes());
        assert!(read.command.is_some_and(|c| !c.is_empty()));
        let svg = crate::report::svg_path(&path);
        assert!(std::fs::read_to_string(svg).unwrap().starts_with("<svg"));
    }

    #[test]
    fn tables_give_each_series_and_the_ratio_to_the_first() {
        let chart = BarChart {
            title: "t".into(),
            unit: "images/s".into(),
            series: vec!["kiln".into(), "PyTorch".into()],
            groups: vec![
                ("train".into(), vec![Some(12.0), Some(8.0)]),
                ("eval".into(), vec![Some(0.5), None]),
            ],
        };
        assert_eq!(
            chart_table(&chart),
            "|  | kiln | PyTorch | kiln / PyTorch |\n|---|---|---|---|\n\
             | train | 12.0 | 8.00 | 1.50× |\n| eval | 0.500 | – | – |\n"
        );
    }

    #[test]
    fn splicing_replaces_only_the_results_section() {
        let readme = format!("head\n{BEGIN}\nold\n{END}\ntail\n");
        let out = splice(&readme, "\nnew\n").unwrap();
        assert_eq!(out, format!("head\n{BEGIN}\nnew\n{END}\ntail\n"));
        assert_eq!(splice(&out, "new").unwrap(), out);
        assert!(splice("no markers", "x").is_err());
    }
}
