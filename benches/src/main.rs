//! `kiln-bench`: measures kiln and, in the same run, what it is compared with.

mod load;
mod raw;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kiln's benchmarks.
#[derive(Debug, Parser)]
#[command(name = "kiln-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// kiln-serve under load on loopback vs the model's raw batched forward pass.
    Serve(serve::ServeBench),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
