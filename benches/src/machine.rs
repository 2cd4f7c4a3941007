//! What measured: the `machine` field every results file carries (CPU model and cores, and on
//! a machine with an NVIDIA GPU its name, driver and the local PyTorch's version and CUDA).

use std::process::Command;

use serde_json::{json, Value};

/// The machine this process runs on, as JSON.
pub fn describe() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| cpu_model(&info))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut machine = json!({ "cpu": cpu, "cores": cores });
    if let Some((gpu, driver)) = first_line(
        "nvidia-smi",
        &["--query-gpu=name,driver_version", "--format=csv,noheader"],
    )
    .and_then(|line| gpu_fields(&line))
    {
        machine["gpu"] = gpu.into();
        machine["driver"] = driver.into();
        let torch = first_line(
            "python3",
            &["-c", "import torch; print(torch.__version__, torch.version.cuda)"],
        );
        if let Some((torch, cuda)) = torch.as_deref().and_then(|l| l.split_once(' ')) {
            machine["torch"] = torch.into();
            machine["torch_cuda"] = cuda.into();
        }
    }
    machine
}

/// `/proc/cpuinfo`'s first `model name`.
fn cpu_model(info: &str) -> Option<String> {
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
}

/// `nvidia-smi`'s `name, driver_version` line as its two fields.
fn gpu_fields(line: &str) -> Option<(String, String)> {
    let (gpu, driver) = line.split_once(", ")?;
    Some((gpu.trim().to_string(), driver.trim().to_string()))
}

/// The first line a command printed, when it ran and succeeded.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output.status.success().then_some(())?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_the_tools_output() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n";
        assert_eq!(cpu_model(info).as_deref(), Some("Intel(R) Xeon(R) Platinum 8481C"));
        assert_eq!(cpu_model("processor: 0\n"), None);
        assert_eq!(
            gpu_fields("NVIDIA H100 80GB HBM3, 580.82.07"),
            Some(("NVIDIA H100 80GB HBM3".into(), "580.82.07".into()))
        );
        assert_eq!(gpu_fields("No devices were found"), None);
    }

    #[test]
    fn every_description_has_the_cpu() {
        let machine = describe();
        assert!(machine["cores"].as_u64().unwrap() >= 1);
        assert!(machine["cpu"].is_string());
    }
}
