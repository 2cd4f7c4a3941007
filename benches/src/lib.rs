//! kiln-benches: kiln measured against what it replaces, in the same run on the same machine
//! (the `kiln-bench` binary's subcommands), the SVG charts of the results, and the pieces the
//! micro-benchmarks under `benches/` share.
#![warn(missing_docs)]

pub mod chart;
pub mod chart_cmd;
pub mod cpu;
pub mod curves;
pub mod documented;
pub mod gpu_ops;
pub mod hostile;
pub mod load;
pub mod machine;
pub mod mnist;
pub mod ops;
pub mod raw;
pub mod reference;
pub mod report;
pub mod report_cmd;
pub mod results;
pub mod scaling;
pub mod serve;
pub mod step;
pub mod swap;
pub mod swin;
pub mod yolox;
