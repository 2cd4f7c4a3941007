//! Starts a run's workers: one thread per local device, registered with burn-collective; on
//! the master node, the global orchestrator the nodes meet at.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use burn_collective::{finish_collective, register, start_global_orchestrator, CollectiveConfig, PeerId};
use burn_communication::Address;

use super::collective::Collective;
use super::plan::{DistPlan, Master};
use super::watchdog::Watchdog;
use crate::error::TrainError;

/// The stack of each worker thread. A spawned thread gets 2 MiB by default, where the main
/// thread, which runs single-worker jobs, has the system's 8 MiB; building and running
/// YOLOX's autodiff graph needs more than 2 MiB (a 2-node yolox-nano run overflowed it).
const WORKER_STACK_BYTES: usize = 64 << 20;

/// Runs `job` once per local worker of `plan` (on this thread when the run has a single
/// worker) with its [`Collective`] and device (`device_of(local index)`). Returns global rank
/// 0's result on the node that holds it, `None` on the others; the first worker error ends the
/// run.
pub fn launch<B, T, F>(plan: &DistPlan, device_of: impl Fn(usize) -> B::Device, job: F) -> Result<Option<T>, TrainError>
where
    B: AutodiffBackend,
    T: Send + 'static,
    F: Fn(Collective<B::InnerBackend>, B::Device) -> Result<T, TrainError> + Send + Sync + 'static,
{
    if !plan.is_distributed() {
        return job(Collective::single(), device_of(0)).map(Some);
    }
    let config = collective_config(plan)?;
    if let (Some(master), 0) = (&plan.master, plan.node_rank) {
        start_orchestrator(master)?;
    }
    tracing::info!(
        nodes = plan.nodes,
        node_rank = plan.node_rank,
        workers = plan.local_workers,
        world = plan.world_size(),
        "distributed run"
    );
    let watchdog = Watchdog::start(plan.timeout);
    let job = Arc::new(job);
    // Nodes leave without unregistering: burn-collective 0.21's global `finish` waits on
    // connections the first node to exit has closed. Every node has completed the last
    // all-reduce when it returns (each ends with a sync of all nodes), so exiting is safe.
    let leave = plan.nodes == 1;
    let (results, finished) = mpsc::channel();
    for local in 0..plan.local_workers {
        let rank = plan.global_rank(local);
        let collective = Collective::member(rank, plan.world_size(), plan.local_workers, watchdog.clone());
        let (device, config, job, results) = (device_of(local), config.clone(), job.clone(), results.clone());
        let watchdog = watchdog.clone();
        std::thread::Builder::new()
            .name(format!("kiln-worker-{rank}"))
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || {
                let outcome = run_worker::<B, T, F>(&collective, &watchdog, device, config, leave, &*job);
                let _ = results.send((local, outcome));
            })
            .map_err(|e| TrainError::Flag(format!("cannot start worker thread {rank}: {e}")))?;
    }
    drop(results);
    let mut root = None;
    for (local, outcome) in finished {
        let value = outcome?;
        if plan.global_rank(local) == 0 {
            root = Some(value);
        }
    }
    Ok(root)
}

/// Registers, runs the job, and unregisters when `leave`.
fn run_worker<B, T, F>(
    collective: &Collective<B::InnerBackend>,
    watchdog: &Watchdog,
    device: B::Device,
    config: CollectiveConfig,
    leave: bool,
    job: &F,
) -> Result<T, TrainError>
where
    B: AutodiffBackend,
    F: Fn(Collective<B::InnerBackend>, B::Device) -> Result<T, TrainError>,
{
    let peer = PeerId::from(collective.rank());
    {
        let _armed = watchdog.arm(collective.rank(), "joining the run (register)");
        register::<B::InnerBackend>(peer, device.clone(), config)
            .map_err(|e| collective.error("joining the run (register)", e))?;
    }
    let value = job(collective.clone(), device)?;
    if leave {
        let _armed = watchdog.arm(collective.rank(), "leaving the run");
        finish_collective::<B::InnerBackend>(peer).map_err(|e| collective.error("leaving the run", e))?;
    }
    Ok(value)
}

/// Local peers reduce through a tree; nodes through a ring, over WebSocket: the master's
/// orchestrator at its port, node r's tensor service at port + 1 + r.
fn collective_config(plan: &DistPlan) -> Result<CollectiveConfig, TrainError> {
    let config = CollectiveConfig::default().with_num_devices(plan.local_workers);
    let Some(master) = &plan.master else {
        return Ok(config);
    };
    let data_port = master
        .port
        .checked_add(1 + plan.node_rank as u16)
        .ok_or_else(|| TrainError::Flag(format!("master port {} leaves no room for node ports", master.port)))?;
    let host = match &plan.node_host {
        Some(h) => h.clone(),
        None => local_address_towards(master)?,
    };
    let address =
        |host: &str, port: u16| Address::from_str(&format!("ws://{host}:{port}")).expect("any string is an address");
    Ok(config
        .with_num_nodes(plan.nodes as u32)
        .with_global_address(address(&master.host, master.port))
        .with_node_address(address(&host, data_port))
        .with_data_service_port(data_port))
}

/// This machine's address on the route to the master (no packet is sent).
fn local_address_towards(master: &Master) -> Result<String, TrainError> {
    let failed = |e: std::io::Error| {
        TrainError::Flag(format!(
            "cannot find this node's address towards the master {}:{}: {e}",
            master.host, master.port
        ))
    };
    let socket = UdpSocket::bind(("0.0.0.0", 0)).map_err(failed)?;
    socket.connect((master.host.as_str(), master.port)).map_err(failed)?;
    Ok(socket.local_addr().map_err(failed)?.ip().to_string())
}

/// Starts burn-collective's global orchestrator on the master's port, in the background.
fn start_orchestrator(master: &Master) -> Result<(), TrainError> {
    // Fail now, clearly, if the port is taken (the orchestrator itself would only log it).
    drop(TcpListener::bind(("0.0.0.0", master.port)).map_err(|e| {
        TrainError::Flag(format!(
            "--dist-url: cannot listen on port {} for the orchestrator: {e}",
            master.port
        ))
    })?);
    let port = master.port;
    std::thread::Builder::new()
        .name("kiln-orchestrator".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(start_global_orchestrator(port)),
                Err(e) => eprintln!("kiln-train: error: cannot start the orchestrator's runtime: {e}"),
            }
            // The orchestrator returns on SIGINT/SIGTERM, whose handlers it installed in place
            // of the default action: stop the whole job, as the signal asked.
            let _ = writeln!(
                std::io::stderr(),
                "kiln-train: error: the orchestrator stopped (interrupted, or it failed); stopping"
            );
            std::process::exit(1);
        })
        .map_err(|e| TrainError::Flag(format!("cannot start the orchestrator thread: {e}")))?;
    Ok(())
}
