//! Where this process sits in a distributed run: nodes, this node's rank, workers per node
//! and the master's address, resolved from the guide's flags, torchrun's variables and the
//! platform's (`MA_NUM_GPUS`, `VC_WORKER_NUM`, `VC_TASK_INDEX`, `VC_WORKER_HOSTS`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use kiln_models::DeviceChoice;

use super::DistArgs;

/// main.py's `--dist-url` default: a placeholder no cluster listens on, treated as unset.
pub const PLACEHOLDER_DIST_URL: &str = "tcp://224.66.41.62:23456";
/// torch's default `MASTER_PORT`.
const TORCH_MASTER_PORT: u16 = 29500;
/// The port the guide's multi-node scripts put after the first `VC_WORKER_HOSTS` entry.
const PLATFORM_MASTER_PORT: u16 = 6666;

/// The `--device` flag of the training jobs: a [`DeviceChoice`], or `cpu:N` for N CPU workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The backend and first device.
    pub choice: DeviceChoice,
    /// `cpu:N`: the number of CPU workers asked for.
    pub cpu_workers: Option<usize>,
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(n) = s.trim().to_ascii_lowercase().strip_prefix("cpu:") {
            return match n.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!("invalid device {s:?}: cpu:N needs N ≥ 1 workers")),
                Ok(n) => Ok(Self {
                    choice: DeviceChoice::Cpu,
                    cpu_workers: Some(n),
                }),
            };
        }
        let choice = s
            .parse::<DeviceChoice>()
            .map_err(|e| format!("{e} (or cpu:N for N CPU workers)"))?;
        Ok(Self {
            choice,
            cpu_workers: None,
        })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cpu_workers {
            Some(n) => write!(f, "cpu:{n}"),
            None => self.choice.fmt(f),
        }
    }
}

/// The master node: it runs the orchestrator every node registers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    /// Host name or address.
    pub host: String,
    /// The orchestrator's port; node `r`'s tensor service listens on `port + 1 + r`.
    pub port: u16,
}

/// One process's place in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistPlan {
    /// Number of nodes (processes) in the run.
    pub nodes: usize,
    /// This node's rank, `0..nodes`.
    pub node_rank: usize,
    /// Workers on this node, one per device.
    pub local_workers: usize,
    /// The device kind; for CUDA, the index of this node's first GPU.
    pub device: DeviceChoice,
    /// The master's address; set when there is more than one node.
    pub master: Option<Master>,
    /// This node's host name from `VC_WORKER_HOSTS`, when the platform lists it.
    pub node_host: Option<String>,
    /// How long a collective operation may wait for the other workers.
    pub timeout: Duration,
}

impl DistPlan {
    /// A single worker on `device`.
    pub fn single(device: DeviceChoice) -> Self {
        Self {
            nodes: 1,
            node_rank: 0,
            local_workers: 1,
            device,
            master: None,
            node_host: None,
            timeout: Duration::from_secs(super::DEFAULT_TIMEOUT_SECS),
        }
    }

    /// Total workers: devices × nodes.
    pub fn world_size(&self) -> usize {
        self.nodes * self.local_workers
    }

    /// The global rank of local worker `local`: node_rank × devices + local.
    pub fn global_rank(&self, local: usize) -> usize {
        self.node_rank * self.local_workers + local
    }

    /// Whether more than one worker trains.
    pub fn is_distributed(&self) -> bool {
        self.world_size() > 1
    }
}

/// Resolves the run from the flags, then torchrun's variables (`WORLD_SIZE`, `RANK`,
/// `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`; used with `--dist-url env://` or when the
/// flags leave the world size unset), then the platform's, then single-node defaults.
/// `env` looks a variable up (`std::env::var` in the binary); `gpus` counts this machine's
/// GPUs (used for `--multiprocessing-distributed` on CUDA without `MA_NUM_GPUS`).
pub fn resolve(
    args: &DistArgs,
    device: DeviceSpec,
    env: &dyn Fn(&str) -> Option<String>,
    gpus: &dyn Fn() -> usize,
) -> Result<DistPlan, String> {
    check_backend(&args.dist_backend)?;
    let var = |name: &str| -> Result<Option<usize>, String> {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("environment variable {name}={v:?} is not a whole number"))
            })
            .transpose()
    };
    let flag = |name: &str, value: i64| -> Result<Option<usize>, String> {
        match value {
            -1 => Ok(None),
            v if v < 0 => Err(format!("{name} {v}: must be -1 (unset) or at least 0")),
            v => Ok(Some(v as usize)),
        }
    };
    let env_url = args.dist_url == "env://";
    let flag_world = args.num_machines.or(flag("--world-size", args.world_size)?);
    let flag_rank = args.machine_rank.or(flag("--rank", args.rank)?);
    // torchrun starts one process per device: each is a node of one worker here.
    let torchrun = (env_url || flag_world.is_none()) && env("WORLD_SIZE").is_some();
    let (mut nodes, mut node_rank) = (flag_world, flag_rank);
    if torchrun {
        nodes = nodes.or(var("WORLD_SIZE")?);
        node_rank = node_rank.or(var("RANK")?);
    }
    let nodes = nodes.or(var("VC_WORKER_NUM")?).unwrap_or(1);
    let node_rank = node_rank.or(var("VC_TASK_INDEX")?).unwrap_or(0);
    if nodes == 0 {
        return Err(
            "the number of nodes (--world-size / --num_machines / WORLD_SIZE / VC_WORKER_NUM) must be at least 1"
                .into(),
        );
    }
    if node_rank >= nodes {
        return Err(format!(
            "node rank {node_rank} (--rank / --machine_rank / RANK / VC_TASK_INDEX) is out of range for {nodes} node(s)"
        ));
    }

    let mut choice = device.choice;
    let local_workers = if let Some(n) = args.devices {
        if n == 0 {
            return Err("--devices must be at least 1".into());
        }
        n
    } else if let Some(n) = device.cpu_workers {
        n
    } else if torchrun {
        if let (DeviceChoice::Cuda(_), Some(local)) = (choice, var("LOCAL_RANK")?) {
            choice = DeviceChoice::Cuda(local);
        }
        1
    } else if args.multiprocessing_distributed && matches!(choice, DeviceChoice::Cuda(_)) {
        var("MA_NUM_GPUS")?.unwrap_or_else(gpus).max(1)
    } else {
        1
    };
    if device.cpu_workers.is_some() && args.devices.is_some_and(|d| Some(d) != device.cpu_workers) {
        return Err(format!(
            "--device {device} and --devices {} disagree",
            args.devices.unwrap_or(0)
        ));
    }

    let hosts: Vec<String> = env("VC_WORKER_HOSTS")
        .map(|h| {
            h.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let master = if nodes > 1 {
        Some(master(args, env_url, env, &hosts)?)
    } else {
        None
    };
    if args.dist_timeout == 0 {
        return Err("--dist-timeout must be at least 1 second".into());
    }
    Ok(DistPlan {
        nodes,
        node_rank,
        local_workers,
        device: choice,
        master,
        node_host: hosts.get(node_rank).filter(|_| hosts.len() == nodes).cloned(),
        timeout: Duration::from_secs(args.dist_timeout),
    })
}

/// The master of a multi-node run: `--dist-url tcp://HOST:PORT`; for `env://` (or the
/// placeholder default) `MASTER_ADDR`/`MASTER_PORT`, else the first `VC_WORKER_HOSTS` entry.
fn master(
    args: &DistArgs,
    env_url: bool,
    env: &dyn Fn(&str) -> Option<String>,
    hosts: &[String],
) -> Result<Master, String> {
    if !env_url && args.dist_url != PLACEHOLDER_DIST_URL {
        return parse_tcp_url(&args.dist_url);
    }
    let port = match env("MASTER_PORT") {
        Some(p) => p
            .trim()
            .parse::<u16>()
            .map_err(|_| format!("environment variable MASTER_PORT={p:?} is not a port number"))?,
        None if env("MASTER_ADDR").is_some() => TORCH_MASTER_PORT,
        None => PLATFORM_MASTER_PORT,
    };
    let host = env("MASTER_ADDR")
        .filter(|h| !h.trim().is_empty())
        .or_else(|| hosts.first().cloned())
        .ok_or_else(|| {
            "a multi-node run needs the master's address: pass --dist-url tcp://HOST:PORT, \
             or set MASTER_ADDR (and MASTER_PORT) or VC_WORKER_HOSTS"
                .to_string()
        })?;
    Ok(Master {
        host: host.trim().to_string(),
        port,
    })
}

/// Number of NVIDIA GPUs this machine exposes (`/dev/nvidia0`, `/dev/nvidia1`, …).
pub fn visible_gpus() -> usize {
    std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("nvidia")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

/// `tcp://HOST:PORT` → the master.
fn parse_tcp_url(url: &str) -> Result<Master, String> {
    let bad = |why: &str| format!("--dist-url {url:?}: {why} (expected tcp://HOST:PORT or env://)");
    let rest = url.strip_prefix("tcp://").ok_or_else(|| bad("unknown scheme"))?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port = port.parse::<u16>().map_err(|_| bad("the port is not a number"))?;
    if host.is_empty() || port == u16::MAX {
        return Err(bad("no host, or no room for the node ports above it"));
    }
    Ok(Master {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
    })
}

/// kiln reduces through burn-collective whatever the guide asks for; unknown names are errors.
fn check_backend(name: &str) -> Result<(), String> {
    match name {
        "nccl" | "gloo" | "collective" => Ok(()),
        other => Err(format!(
            "--dist-backend {other:?}: expected nccl, gloo or collective (all run on burn-collective)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(extra: &[&str]) -> DistArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            dist: DistArgs,
        }
        let mut argv = vec!["x"];
        argv.extend_from_slice(extra);
        Wrap::try_parse_from(argv).expect("flags parse").dist
    }

    fn plan(flags: &[&str], device: &str, vars: &[(&str, &str)]) -> Result<DistPlan, String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        resolve(&args(flags), device.parse()?, &|k| vars.get(k).cloned(), &|| 3)
    }

    #[test]
    fn nothing_set_is_one_worker() {
        let p = plan(&[], "cpu", &[]).unwrap();
        assert_eq!(p, DistPlan::single(DeviceChoice::Cpu));
        assert!(!p.is_distributed());
    }

    #[test]
    fn cpu_n_is_n_local_workers() {
        let p = plan(&[], "cpu:2", &[]).unwrap();
        assert_eq!((p.nodes, p.local_workers, p.world_size()), (1, 2, 2));
        assert_eq!((p.global_rank(0), p.global_rank(1)), (0, 1));
        assert!(p.master.is_none());
    }

    #[test]
    fn main_py_flags_give_nodes_rank_and_master() {
        let p = plan(
            &[
                "--world-size=2",
                "--rank=1",
                "--dist-url",
                "tcp://10.0.0.5:23456",
                "--multiprocessing-distributed",
            ],
            "cuda",
            &[],
        )
        .unwrap();
        // No MA_NUM_GPUS: the machine's GPU count (3 here).
        assert_eq!((p.nodes, p.node_rank, p.local_workers, p.world_size()), (2, 1, 3, 6));
        assert_eq!((p.global_rank(0), p.global_rank(2)), (3, 5));
        assert_eq!(
            p.master,
            Some(Master {
                host: "10.0.0.5".into(),
                port: 23456
            })
        );
    }

    #[test]
    fn yolox_flags_win_over_the_platform() {
        let vars = [("VC_WORKER_NUM", "4"), ("VC_TASK_INDEX", "3"), ("MA_NUM_GPUS", "8")];
        let p = plan(
            &[
                "--devices=2",
                "--num_machines=2",
                "--machine_rank=1",
                "--dist-url=tcp://m:6666",
            ],
            "cuda",
            &vars,
        )
        .unwrap();
        assert_eq!((p.nodes, p.node_rank, p.local_workers), (2, 1, 2));
    }

    #[test]
    fn platform_variables_alone_configure_a_cluster() {
        let vars = [
            ("VC_WORKER_NUM", "4"),
            ("VC_TASK_INDEX", "2"),
            ("MA_NUM_GPUS", "8"),
            ("VC_WORKER_HOSTS", "job-0.svc, job-1.svc,job-2.svc job-3.svc"),
        ];
        let p = plan(&["--multiprocessing-distributed"], "cuda", &vars).unwrap();
        assert_eq!((p.nodes, p.node_rank, p.local_workers, p.world_size()), (4, 2, 8, 32));
        assert_eq!(p.global_rank(0), 16);
        assert_eq!(
            p.master,
            Some(Master {
                host: "job-0.svc".into(),
                port: 6666
            })
        );
        assert_eq!(p.node_host.as_deref(), Some("job-2.svc"));
        // MASTER_PORT overrides the platform's port.
        let mut with_port = vars.to_vec();
        with_port.push(("MASTER_PORT", "6060"));
        let p = plan(&["--multiprocessing-distributed"], "cuda", &with_port).unwrap();
        assert_eq!(p.master.unwrap().port, 6060);
    }

    #[test]
    fn torchrun_variables_make_one_worker_per_process() {
        let vars = [
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
        ];
        let p = plan(&["--dist-url", "env://"], "cuda", &vars).unwrap();
        assert_eq!((p.nodes, p.node_rank, p.local_workers), (4, 3, 1));
        assert_eq!(p.device, DeviceChoice::Cuda(1));
        assert_eq!(
            p.master,
            Some(Master {
                host: "127.0.0.1".into(),
                port: 29500
            })
        );
        // Explicit flags win over the variables when the URL is not env://.
        let p = plan(&["--world-size=1"], "cpu", &vars).unwrap();
        assert_eq!(p.nodes, 1);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for (flags, device, vars, needle) in [
            (vec!["--rank=2", "--world-size=2"], "cpu", vec![], "out of range"),
            (vec!["--world-size=0"], "cpu", vec![], "at least 1"),
            (vec!["--world-size=-3"], "cpu", vec![], "--world-size -3"),
            (vec![], "cpu", vec![("VC_WORKER_NUM", "two")], "VC_WORKER_NUM=\"two\""),
            (vec!["--world-size=2"], "cpu", vec![], "master's address"),
            (
                vec!["--world-size=2", "--dist-url=udp://h:1"],
                "cpu",
                vec![],
                "unknown scheme",
            ),
            (vec!["--world-size=2", "--dist-url=tcp://h"], "cpu", vec![], "no port"),
            (vec!["--dist-backend=mpi"], "cpu", vec![], "--dist-backend \"mpi\""),
            (vec!["--devices=3"], "cpu:2", vec![], "disagree"),
            (vec!["--dist-timeout=0"], "cpu", vec![], "--dist-timeout"),
            (
                vec!["--world-size=2", "--dist-url=env://"],
                "cpu",
                vec![("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")],
                "MASTER_PORT",
            ),
        ] {
            let e = plan(&flags, device, &vars).unwrap_err();
            assert!(e.contains(needle), "{flags:?} {vars:?}: {e}");
        }
        assert!("cpu:0".parse::<DeviceSpec>().unwrap_err().contains("cpu:N"));
        assert!("tpu".parse::<DeviceSpec>().unwrap_err().contains("cpu:N"));
    }

    #[test]
    fn device_spec_round_trips() {
        for s in ["cpu:4", "cpu", "cuda:1", "auto"] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
    }
}
