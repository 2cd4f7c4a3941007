//! The distributed-training flags shared by every job, in the guide's spellings (main.py's
//! and YOLOX's).

use clap::Args;

use super::plan::PLACEHOLDER_DIST_URL;

/// Default `--dist-timeout` in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// How this process joins a distributed run. Unset flags fall back to torchrun's and the
/// platform's environment variables, then to a single node.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct DistArgs {
    /// Number of nodes (main.py: processes; each runs one worker per device with
    /// --multiprocessing-distributed); -1: from the environment, else 1.
    #[arg(long = "world-size", visible_alias = "world_size", default_value_t = -1, allow_negative_numbers = true)]
    pub world_size: i64,
    /// This node's rank; -1: from the environment, else 0.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub rank: i64,
    /// The master: tcp://HOST:PORT (its orchestrator's port; node r also listens on PORT+1+r),
    /// or env:// for MASTER_ADDR/MASTER_PORT.
    #[arg(long = "dist-url", visible_alias = "dist_url", default_value = PLACEHOLDER_DIST_URL)]
    pub dist_url: String,
    /// Accepted for compatibility (nccl, gloo); kiln reduces through burn-collective.
    #[arg(long = "dist-backend", visible_alias = "dist_backend", default_value = "nccl")]
    pub dist_backend: String,
    /// One worker per GPU of this node (MA_NUM_GPUS, else every GPU found).
    #[arg(long = "multiprocessing-distributed", visible_alias = "multiprocessing_distributed")]
    pub multiprocessing_distributed: bool,
    /// Devices (workers) per node, as YOLOX's `--devices`.
    #[arg(short = 'd', long)]
    pub devices: Option<usize>,
    /// Number of nodes, as YOLOX's `--num_machines`.
    #[arg(long = "num_machines", visible_alias = "num-machines")]
    pub num_machines: Option<usize>,
    /// This node's rank, as YOLOX's `--machine_rank`.
    #[arg(long = "machine_rank", visible_alias = "machine-rank")]
    pub machine_rank: Option<usize>,
    /// Seconds a collective operation may wait for the other workers before the job stops
    /// with an error (a lost worker or node).
    #[arg(long = "dist-timeout", default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub dist_timeout: u64,
}
