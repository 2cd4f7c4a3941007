//! Swin-Transformer's log lines, as its `main.py` writes them (the message part; kiln leaves
//! out the logger's `[time name] (file line): INFO` prefix), printed on rank 0 and appended to
//! `<output>/log_rank0.txt` like its logger's file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::TrainError;
use crate::meters::AverageMeter;

/// Python's `str(datetime.timedelta(seconds=s))`: `H:MM:SS`, with `N day(s), ` in front past a
/// day.
pub fn timedelta(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let clock = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => clock,
        1 => format!("1 day, {clock}"),
        d => format!("{d} days, {clock}"),
    }
}

/// One training line's figures.
#[derive(Debug, Clone, Copy)]
pub struct TrainFigures<'a> {
    /// The epoch (from 0) and the configured number of epochs.
    pub epoch: [usize; 2],
    /// The batch index and the batches per epoch.
    pub step: [usize; 2],
    /// Estimated seconds left in the epoch.
    pub eta_seconds: f64,
    /// The learning rate and weight decay of the first parameter group.
    pub lr: f64,
    /// The weight decay.
    pub wd: f64,
    /// Batch time.
    pub time: &'a AverageMeter,
    /// Loss (divided by the accumulation steps, as the original logs it).
    pub loss: &'a AverageMeter,
    /// Gradient norm of the updates so far.
    pub grad_norm: &'a AverageMeter,
    /// Loss scale of mixed precision (1 without it).
    pub loss_scale: &'a AverageMeter,
    /// Peak memory in MB.
    pub mem_mb: f64,
}

/// `Train: [e/E][i/N]\teta … lr …\t wd …\ttime … (…)\tloss … (…)\tgrad_norm … (…)\tloss_scale … (…)\tmem …MB`.
pub fn train_line(f: &TrainFigures) -> String {
    format!(
        "Train: [{}/{}][{}/{}]\teta {} lr {:.6}\t wd {:.4}\ttime {:.4} ({:.4})\tloss {:.4} ({:.4})\t\
         grad_norm {:.4} ({:.4})\tloss_scale {:.4} ({:.4})\tmem {:.0}MB",
        f.epoch[0],
        f.epoch[1],
        f.step[0],
        f.step[1],
        timedelta(f.eta_seconds.max(0.0) as u64),
        f.lr,
        f.wd,
        f.time.val(),
        f.time.avg(),
        f.loss.val(),
        f.loss.avg(),
        f.grad_norm.val(),
        f.grad_norm.avg(),
        f.loss_scale.val(),
        f.loss_scale.avg(),
        f.mem_mb
    )
}

/// `Test: [i/N]\tTime … (…)\tLoss … (…)\tAcc@1 … (…)\tAcc@5 … (…)\tMem …MB`.
pub fn test_line(
    step: [usize; 2],
    time: &AverageMeter,
    loss: &AverageMeter,
    acc1: &AverageMeter,
    acc5: &AverageMeter,
    mem_mb: f64,
) -> String {
    format!(
        "Test: [{}/{}]\tTime {:.3} ({:.3})\tLoss {:.4} ({:.4})\tAcc@1 {:.3} ({:.3})\tAcc@5 {:.3} ({:.3})\tMem {:.0}MB",
        step[0],
        step[1],
        time.val(),
        time.avg(),
        loss.val(),
        loss.avg(),
        acc1.val(),
        acc1.avg(),
        acc5.val(),
        acc5.avg(),
        mem_mb
    )
}

/// The process's peak resident memory in MB (`VmHWM`), kiln's `mem` on the CPU, where the
/// original reports CUDA's peak allocation; 0 where the kernel does not say.
pub fn peak_memory_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Rank 0's log: stdout and `log_rank0.txt`; other ranks print nothing.
pub struct RunLog {
    file: Option<File>,
    root: bool,
}

impl RunLog {
    /// A log appending to `<dir>/log_rank0.txt` on rank 0.
    pub fn open(dir: &Path, root: bool) -> Result<Self, TrainError> {
        if !root {
            return Ok(Self { file: None, root });
        }
        let path = dir.join("log_rank0.txt");
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| TrainError::Io { path, source })?;
        Ok(Self { file: Some(file), root })
    }

    /// A log that only prints (rank 0) or stays silent.
    pub fn stdout(root: bool) -> Self {
        Self { file: None, root }
    }

    /// Prints `line` and appends it to the file (rank 0).
    pub fn line(&mut self, line: &str) {
        if !self.root {
            return;
        }
        println!("{line}");
        if let Some(file) = &mut self.file {
            // The console has the line; a full disk must not stop training.
            let _ = writeln!(file, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meters::MeterFormat;

    fn meter() -> AverageMeter {
        AverageMeter::new("x", MeterFormat::Exp4)
    }

    #[test]
    fn timedeltas_print_as_python_does() {
        assert_eq!(timedelta(0), "0:00:00");
        assert_eq!(timedelta(3725), "1:02:05");
        assert_eq!(timedelta(86_400 + 61), "1 day, 0:01:01");
        assert_eq!(timedelta(3 * 86_400 + 36_000), "3 days, 10:00:00");
    }

    #[test]
    fn lines_have_the_official_fields() {
        let mut m = meter();
        m.update(2.0, 1);
        m.update(4.0, 3);
        assert_eq!((m.val(), m.avg()), (4.0, 3.5));
        let one = {
            let mut m = meter();
            m.update(1.0, 1);
            m
        };
        let line = train_line(&TrainFigures {
            epoch: [3, 90],
            step: [10, 2502],
            eta_seconds: 3725.9,
            lr: 0.000_125,
            wd: 0.05,
            time: &m,
            loss: &m,
            grad_norm: &m,
            loss_scale: &one,
            mem_mb: 1234.4,
        });
        assert_eq!(
            line,
            "Train: [3/90][10/2502]\teta 1:02:05 lr 0.000125\t wd 0.0500\ttime 4.0000 (3.5000)\t\
             loss 4.0000 (3.5000)\tgrad_norm 4.0000 (3.5000)\tloss_scale 1.0000 (1.0000)\tmem 1234MB"
        );
        assert_eq!(
            test_line([0, 5], &m, &m, &one, &one, 7.0),
            "Test: [0/5]\tTime 4.000 (3.500)\tLoss 4.0000 (3.5000)\tAcc@1 1.000 (1.000)\tAcc@5 1.000 (1.000)\tMem 7MB"
        );
        assert!(peak_memory_mb() > 1.0);
    }
}
