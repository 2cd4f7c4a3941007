//! `kiln-bench report`: writes the current results into `benches/README.md`, from the results
//! files in `benches/results/` (see [`crate::results`]).

use std::path::PathBuf;

use clap::Args;

use crate::results::{render, splice};

/// Flags of `kiln-bench report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The folder of results files.
    #[arg(long, default_value = "benches/results")]
    results: PathBuf,
    /// The README whose results section is rewritten.
    #[arg(long, default_value = "benches/README.md")]
    readme: PathBuf,
    /// Only check that the README is up to date (exit status 1 if not).
    #[arg(long)]
    check: bool,
}

/// Rewrites (or checks) the README's results section.
pub fn run(args: ReportArgs) -> Result<(), String> {
    let readme = std::fs::read_to_string(&args.readme).map_err(|e| format!("{}: {e}", args.readme.display()))?;
    let updated = splice(&readme, &render(&args.results)?).map_err(|e| format!("{}: {e}", args.readme.display()))?;
    if args.check {
        return if updated == readme {
            println!("{} is up to date", args.readme.display());
            Ok(())
        } else {
            Err(format!("{} is stale: run `kiln-bench report`", args.readme.display()))
        };
    }
    std::fs::write(&args.readme, updated).map_err(|e| format!("{}: {e}", args.readme.display()))?;
    println!("{} rewritten from {}", args.readme.display(), args.results.display());
    Ok(())
}
