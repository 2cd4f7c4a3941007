//! Where the CPU goes during a load level, from Linux's `/proc`: the server's model workers,
//! the rest of the server, this process (the load generator) and the machine's idle time.
//! Elsewhere every figure reads as zero.

use kiln_infer::workers::MODEL_THREAD_PREFIX;
use serde::{Deserialize, Serialize};

/// `/proc` counts CPU time in ticks of `USER_HZ`, which Linux fixes at 100 per second on
/// every architecture it reports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far, by whom.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuClock {
    /// The server's model workers.
    model: f64,
    /// Every other thread of the server: HTTP, multipart, decoding, responses.
    http: f64,
    /// This process: the load generator.
    client: f64,
    /// All cores idle (idle + iowait of `/proc/stat`).
    idle: f64,
}

/// CPU per request over one load level, in microseconds: the four add up to the cores' time
/// divided by the requests served.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CpuPerRequest {
    /// The server's model workers.
    pub model_us: f64,
    /// The rest of the server.
    pub http_us: f64,
    /// The load generator.
    pub client_us: f64,
    /// No thread running.
    pub idle_us: f64,
}

impl CpuClock {
    /// Reads the clocks now, with `server` the kiln-serve process id.
    pub fn now(server: u32) -> Self {
        let (model, http) = threads(&server.to_string())
            .into_iter()
            .fold((0.0, 0.0), |(m, h), (name, s)| {
                if name.starts_with(MODEL_THREAD_PREFIX) {
                    (m + s, h)
                } else {
                    (m, h + s)
                }
            });
        Self {
            model,
            http,
            client: threads("self").into_iter().map(|(_, s)| s).sum(),
            idle: machine_idle(),
        }
    }

    /// What was used from `self` to `later`, per request of `requests`.
    pub fn per_request(&self, later: &Self, requests: f64) -> CpuPerRequest {
        let us = |a: f64, b: f64| (b - a) / requests.max(1.0) * 1e6;
        CpuPerRequest {
            model_us: us(self.model, later.model),
            http_us: us(self.http, later.http),
            client_us: us(self.client, later.client),
            idle_us: us(self.idle, later.idle),
        }
    }
}

/// CPU seconds (user + system) of each thread of process `pid` (a number or `self`), by name.
fn threads(pid: &str) -> Vec<(String, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter_map(|stat| thread_seconds(&stat))
        .collect()
}

/// The name and user + system CPU seconds in one `/proc/…/stat` line. The name sits in
/// parentheses and may itself hold spaces or parentheses, so fields count from the last `)`.
fn thread_seconds(stat: &str) -> Option<(String, f64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state (field 3 of proc(5)) … utime (14) and stime (15).
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((name, ticks / TICKS_PER_SECOND))
}

/// Seconds all cores have spent idle or waiting for I/O since boot.
fn machine_idle() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (fields.get(3).unwrap_or(&0.0) + fields.get(4).unwrap_or(&0.0)) / TICKS_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_user_plus_system_seconds() {
        // proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let line = "4242 (kiln-inference-) S 1 2 3 0 -1 4194560 10 0 0 0 250 31 0 0 20 0 1 0 9 0 0";
        assert_eq!(thread_seconds(line), Some(("kiln-inference-".to_string(), 2.81)));
        let odd = "7 (a) b (c) R 1 2 3 0 -1 0 0 0 0 0 100 100 0 0";
        assert_eq!(thread_seconds(odd), Some(("a) b (c".to_string(), 2.0)));
        assert_eq!(thread_seconds("garbage"), None);
    }

    #[test]
    fn per_request_figures_split_the_elapsed_cpu() {
        let before = CpuClock::default();
        let after = CpuClock {
            model: 3.0,
            http: 0.5,
            client: 0.25,
            idle: 0.25,
        };
        let p = before.per_request(&after, 10_000.0);
        assert_eq!(
            [p.model_us, p.http_us, p.client_us, p.idle_us],
            [300.0, 50.0, 25.0, 25.0]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_clocks_count_this_process_spinning() {
        let me = std::process::id();
        let before = CpuClock::now(me);
        let started = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until /proc has counted 0.2 s more of this process (10 ms ticks); a clock
        // that reads nothing never gets there.
        let spent = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let p = before.per_request(&CpuClock::now(me), 1.0);
            if p.client_us >= 200_000.0 || started.elapsed().as_secs() >= 10 {
                break p;
            }
        };
        std::hint::black_box(x);
        assert!(spent.client_us >= 200_000.0, "{spent:?}");
        // Here the "server" is this process too: its threads count as the HTTP side (read a
        // moment apart, so within a tick or two).
        assert!((spent.http_us - spent.client_us).abs() <= 20_000.0, "{spent:?}");
        assert_eq!(spent.model_us, 0.0);
    }
}
