//! Running `kiln-serve` as a child process on an ephemeral loopback port, for tests and
//! benchmarks that drive the real binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The line `kiln-serve` prints once it is bound, before the base URL.
pub const LISTENING_PREFIX: &str = "kiln-serve listening on ";

/// Starts the `kiln-serve` binary at `bin` serving `model_dir` on `127.0.0.1:0` (CPU, warnings
/// only) with `extra` flags, and returns the child and its base URL (`http://127.0.0.1:PORT`
/// or `https://…`) once it has bound. The model may still be loading: poll `/health`.
pub fn spawn_loopback(bin: &Path, model_dir: &Path, extra: &[&str]) -> Result<(Child, String), String> {
    spawn_loopback_from(bin, "--model-dir", model_dir, extra)
}

/// [`spawn_loopback`] serving the models of the repository at `root` (`--model-repository`).
pub fn spawn_loopback_repository(bin: &Path, root: &Path, extra: &[&str]) -> Result<(Child, String), String> {
    spawn_loopback_from(bin, "--model-repository", root, extra)
}

fn spawn_loopback_from(bin: &Path, flag: &str, models: &Path, extra: &[&str]) -> Result<(Child, String), String> {
    let mut child = Command::new(bin)
        .arg(flag)
        .arg(models)
        .args(["--host", "127.0.0.1", "--port", "0", "--device", "cpu"])
        .args(extra)
        .env("KILN_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("kiln-serve stdout not piped")?;
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    match line.trim().strip_prefix(LISTENING_PREFIX) {
        Some(base) => Ok((child, base.to_string())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("kiln-serve did not start (first line {line:?})"))
        }
    }
}
