//! The results files kiln-bench writes: pretty JSON naming its bench in a `bench` field, and
//! the comparison chart as SVG beside it (same name, `.svg`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::chart::{self, BarChart};
use crate::documented::DocumentedReport;
use crate::mnist::MnistReport;
use crate::ops::OpsReport;
use crate::scaling::ScalingReport;
use crate::serve::ServeReport;
use crate::step::StepReport;
use crate::yolox::YoloxReport;

/// What one benchmark writes to its results file.
pub trait Report: Serialize + DeserializeOwned {
    /// The file's `bench` field.
    const BENCH: &'static str;
    /// kiln beside what it was compared with, as bars.
    fn chart(&self) -> BarChart;
}

/// The chart's path for a results file: the same name with extension `.svg`.
pub fn svg_path(json: &Path) -> PathBuf {
    json.with_extension("svg")
}

/// Writes `report` to `path` as JSON with its `bench` field, and its chart beside it.
pub fn write<R: Report>(path: &Path, report: &R) -> Result<(), String> {
    let mut value = serde_json::to_value(report).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Value::Object(fields) = &mut value {
        fields.insert("bench".into(), R::BENCH.into());
    }
    let text = serde_json::to_string_pretty(&value).expect("a JSON value prints") + "\n";
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    let svg = svg_path(path);
    chart::write(&svg, &chart::bars_svg(&report.chart())?)?;
    println!("\nJSON written to {}, chart to {}", path.display(), svg.display());
    Ok(())
}

/// The chart of a results file, read by its `bench` field.
pub fn read_chart(path: &Path) -> Result<BarChart, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    chart_of(value).map_err(|e| format!("{}: {e}", path.display()))
}

/// The chart of a parsed results file.
fn chart_of(value: Value) -> Result<BarChart, String> {
    let bench = match value.get("bench") {
        Some(Value::String(b)) => b.clone(),
        Some(other) => return Err(format!("field `bench` is {other}, not a string")),
        // Serve results written before they carried `bench`.
        None if value.get("raw_forward_images_per_second").is_some() => ServeReport::BENCH.into(),
        None => return Err("no `bench` field: not a kiln-bench results file".into()),
    };
    match bench.as_str() {
        DocumentedReport::BENCH => parse::<DocumentedReport>(value),
        MnistReport::BENCH => parse::<MnistReport>(value),
        OpsReport::BENCH => parse::<OpsReport>(value),
        ScalingReport::BENCH => parse::<ScalingReport>(value),
        ServeReport::BENCH => parse::<ServeReport>(value),
        StepReport::BENCH => parse::<StepReport>(value),
        YoloxReport::BENCH => parse::<YoloxReport>(value),
        other => Err(format!("unknown bench {other:?}")),
    }
}

fn parse<R: Report>(value: Value) -> Result<BarChart, String> {
    serde_json::from_value::<R>(value)
        .map(|r| r.chart())
        .map_err(|e| format!("not a `{}` results file: {e}", R::BENCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every results file committed under benches/results/ reads, and gives a chart with a
    /// value for each series somewhere.
    #[test]
    fn committed_results_give_charts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let chart = read_chart(&path).unwrap();
                assert!(!chart.groups.is_empty(), "{}", path.display());
                for s in 0..chart.series.len() {
                    assert!(
                        chart.groups.iter().any(|(_, v)| v[s].is_some()),
                        "{}: series {s}",
                        path.display()
                    );
                }
                seen += 1;
            }
        }
        assert!(seen >= 6, "{seen} results files");
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
    fn written_reports_read_back_with_their_bench() {
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
        write(&path, &report).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"bench\": \"mnist\""));
        assert_eq!(read_chart(&path).unwrap(), report.chart());
        assert!(std::fs::read_to_string(svg_path(&path)).unwrap().starts_with("<svg"));
    }
}
