//! `kiln-bench chart`: SVG charts of results files kiln-bench wrote and of training curves from
//! the `metrics.jsonl` files kiln-train's jobs write.

use std::path::PathBuf;

use clap::Args;

use crate::{chart, curves, report, results};

/// Flags of `kiln-bench chart`.
#[derive(Debug, Clone, Args)]
pub struct ChartBench {
    /// Results files (`.json`: each charted beside itself, same name `.svg`) and metrics files
    /// (`.jsonl`: drawn together as training curves into `--curves`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Where the training curves of the `.jsonl` files go.
    #[arg(long, default_value = "training-curves.svg")]
    curves: PathBuf,
}

/// Draws every chart the files give.
pub fn run(args: ChartBench) -> Result<(), String> {
    let (metrics, results): (Vec<_>, Vec<_>) = args
        .files
        .iter()
        .partition(|p| p.extension().is_some_and(|e| e == "jsonl"));
    for path in results {
        let svg = report::svg_path(path);
        chart::write(&svg, &chart::bars_svg(&results::read_chart(path)?)?)?;
        println!("{} -> {}", path.display(), svg.display());
    }
    if !metrics.is_empty() {
        let runs = metrics
            .iter()
            .map(|p| curves::read_run(p))
            .collect::<Result<Vec<_>, _>>()?;
        chart::write(&args.curves, &chart::lines_svg(&curves::panels(&runs))?)?;
        println!("{} metrics file(s) -> {}", runs.len(), args.curves.display());
    }
    Ok(())
}
