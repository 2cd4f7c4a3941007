//! The results files kiln-bench writes: pretty JSON naming its bench in a `bench` field, the
//! command that measured it in `command` and the machine in `machine` ([`crate::machine`]),
//! and the comparison chart as SVG beside it (same name, `.svg`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::chart::{self, BarChart};

/// What one benchmark writes to its results file.
pub trait Report: Serialize + DeserializeOwned {
    /// The file's `bench` field.
    const BENCH: &'static str;
    /// kiln beside what it was compared with, as bars.
    fn chart(&self) -> BarChart;
    /// What the chart cannot show (times, errors, memory), one Markdown line each.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The chart's path for a results file: the same name with extension `.svg`.
pub fn svg_path(json: &Path) -> PathBuf {
    json.with_extension("svg")
}

/// This process's command line, as `kiln-bench ARGS` (the binary's folder left out).
fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .and_then(|p| Path::new(&p).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "kiln-bench".into());
    std::iter::once(program).chain(args).collect::<Vec<_>>().join(" ")
}

/// Writes `report` to `path` as JSON with its `bench` field, and its chart beside it.
pub fn write<R: Report>(path: &Path, report: &R) -> Result<(), String> {
    let mut value = serde_json::to_value(report).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Value::Object(fields) = &mut value {
        fields.insert("bench".into(), R::BENCH.into());
        fields.insert("command".into(), command_line().into());
        fields.insert("machine".into(), crate::machine::describe());
    }
    let text = serde_json::to_string_pretty(&value).expect("a JSON value prints") + "\n";
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    let svg = svg_path(path);
    chart::write(&svg, &chart::bars_svg(&report.chart())?)?;
    println!("\nJSON written to {}, chart to {}", path.display(), svg.display());
    Ok(())
}
