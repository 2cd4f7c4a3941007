//! Running a PyTorch reference script with the local Python (`python3`, or a bench's `--python`).

use std::process::Command;

/// The JSON lines (lines starting with `{`) the reference printed, or `None`, said on stderr,
/// when it did not run (no torch for that Python, or it failed).
pub fn json_lines(mut cmd: Command) -> Result<Option<Vec<String>>, String> {
    let output = cmd
        .output()
        .map_err(|e| format!("{}: {e}", cmd.get_program().to_string_lossy()))?;
    if !output.status.success() {
        eprintln!(
            "pytorch reference did not run (is torch installed?): {}",
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
        );
        return Ok(None);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(Some(
        stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(str::to_string)
            .collect(),
    ))
}
