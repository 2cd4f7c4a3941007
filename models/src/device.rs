//! The `--device` flag: which backend and device a job runs on.

use std::fmt;
use std::str::FromStr;

/// A device requested on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA GPU 0 when this build has CUDA and the machine has a GPU, the CPU otherwise
    /// (the guide's `use_cuda = not args.no_cuda and torch.cuda.is_available()`).
    Auto,
    /// The CPU (burn-flex, all cores).
    Cpu,
    /// A CUDA GPU by index.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid device {s:?}: expected auto, cpu, cuda or cuda:N");
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => {
                let index = other
                    .strip_prefix("cuda:")
                    .or_else(|| other.strip_prefix("gpu:"))
                    .ok_or_else(bad)?;
                index.parse().map(Self::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceChoice {
    /// The concrete device: `no_cuda` forces the CPU; `auto` picks CUDA only when the binary
    /// was built with it (`cuda_built`, the caller's `cfg!(feature = "cuda")`) and an NVIDIA
    /// device node exists.
    pub fn resolve(self, no_cuda: bool, cuda_built: bool) -> Result<Self, String> {
        match self {
            _ if no_cuda => Ok(Self::Cpu),
            Self::Auto if cuda_built && gpu_present() => Ok(Self::Cuda(0)),
            Self::Auto => Ok(Self::Cpu),
            Self::Cuda(_) if !cuda_built => Err(format!(
                "--device {self}: this binary was built without CUDA (rebuild with --features cuda)"
            )),
            other => Ok(other),
        }
    }
}

fn gpu_present() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_spellings() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("CUDA".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        let e = "cuda:x".parse::<DeviceChoice>().unwrap_err();
        assert!(e.contains("cuda:x"), "{e}");
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn no_cuda_forces_the_cpu() {
        assert_eq!(DeviceChoice::Cuda(1).resolve(true, true), Ok(DeviceChoice::Cpu));
        assert_eq!(DeviceChoice::Auto.resolve(true, true), Ok(DeviceChoice::Cpu));
        assert_eq!(DeviceChoice::Cpu.resolve(false, true), Ok(DeviceChoice::Cpu));
        assert_eq!(DeviceChoice::Cuda(2).resolve(false, true), Ok(DeviceChoice::Cuda(2)));
    }

    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let e = DeviceChoice::Cuda(0).resolve(false, false).unwrap_err();
        assert!(e.contains("--features cuda"), "{e}");
        assert_eq!(DeviceChoice::Auto.resolve(false, false), Ok(DeviceChoice::Cpu));
    }
}
