//! YOLOX's training log line, every `print_interval` iterations:
//! `epoch: 1/300, iter: 10/1849, mem: 1.2Gb, iter_time: 0.512s, data_time: 0.002s,
//! total_loss: 15.2, iou_loss: 4.1, l1_loss: 0.0, conf_loss: 8.2, cls_loss: 2.9, lr: 4.565e-08,
//! size: 640, ETA: 3 days, 2:12:22` (YOLOX prints the GPU's memory too; kiln the process's
//! resident memory).

use kiln_models::yolox::LossParts;

use crate::meters::python_exp;

/// Running figures of one epoch's iterations.
#[derive(Debug, Clone)]
pub struct IterLog {
    epoch: usize,
    max_epoch: usize,
    iters: usize,
    size: usize,
    count: usize,
    iter_time: f64,
    data_time: f64,
    latest: LossParts,
    sum: [f64; 5],
}

impl IterLog {
    /// The log of epoch `epoch` (from 0) of `max_epoch`, `iters` iterations at input `size`.
    pub fn new(epoch: usize, max_epoch: usize, iters: usize, size: usize) -> Self {
        Self {
            epoch,
            max_epoch,
            iters,
            size,
            count: 0,
            iter_time: 0.0,
            data_time: 0.0,
            latest: LossParts::default(),
            sum: [0.0; 5],
        }
    }

    /// Records one iteration's losses and times (seconds waiting for data, seconds in all).
    pub fn update(&mut self, parts: LossParts, data_time: f64, iter_time: f64) {
        self.count += 1;
        self.data_time += data_time;
        self.iter_time += iter_time;
        for (s, v) in self.sum.iter_mut().zip(values(&parts)) {
            *s += v;
        }
        self.latest = parts;
    }

    /// The epoch's mean losses so far, `[total, iou, conf, cls, l1]` (zeros before any
    /// iteration).
    pub fn mean(&self) -> [f64; 5] {
        let n = self.count.max(1) as f64;
        self.sum.map(|s| s / n)
    }

    /// The line after iteration `iter` (from 1) at learning rate `lr`: mean times, latest losses.
    pub fn line(&self, iter: usize, lr: f64) -> String {
        let n = self.count.max(1) as f64;
        let iter_time = self.iter_time / n;
        let remaining = (self.max_epoch * self.iters).saturating_sub(self.epoch * self.iters + iter);
        let [total, iou, obj, cls, l1] = values(&self.latest);
        format!(
            "epoch: {}/{}, iter: {}/{}, mem: {:.1}Gb, iter_time: {:.3}s, data_time: {:.3}s, total_loss: {total:.1}, iou_loss: {iou:.1}, l1_loss: {l1:.1}, conf_loss: {obj:.1}, cls_loss: {cls:.1}, lr: {}, size: {}, ETA: {}",
            self.epoch + 1,
            self.max_epoch,
            iter,
            self.iters,
            resident_gb(),
            iter_time,
            self.data_time / n,
            python_exp(lr, 3),
            self.size,
            timedelta(remaining as f64 * iter_time),
        )
    }
}

/// `[total, iou, obj, cls, l1]`.
fn values(p: &LossParts) -> [f64; 5] {
    [p.total(), p.iou, p.obj, p.cls, p.l1]
}

/// Python's `str(datetime.timedelta(seconds=int(s)))`: `H:MM:SS`, or `D day(s), H:MM:SS`.
fn timedelta(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (days, rest) = (s / 86_400, s % 86_400);
    let hms = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        d => format!("{d} days, {hms}"),
    }
}

/// This process's resident memory in GB (0 where `/proc` is missing).
fn resident_gb() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<f64>().ok()))
        .unwrap_or(0.0);
    pages * 4096.0 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(cls: f64) -> LossParts {
        LossParts {
            iou: 1.0,
            obj: 2.0,
            cls,
            ..Default::default()
        }
    }

    #[test]
    fn line_has_yolox_fields_and_eta() {
        let mut log = IterLog::new(0, 2, 10, 416);
        log.update(parts(7.0), 0.5, 2.0);
        log.update(parts(3.0), 0.1, 1.0);
        let line = log.line(2, 1.25e-4);
        assert!(line.starts_with("epoch: 1/2, iter: 2/10, mem: "), "{line}");
        // 18 iterations left at 1.5 s.
        assert!(
            line.ends_with(
                "iter_time: 1.500s, data_time: 0.300s, total_loss: 6.0, iou_loss: 1.0, l1_loss: 0.0, conf_loss: 2.0, cls_loss: 3.0, lr: 1.250e-04, size: 416, ETA: 0:00:27"
            ),
            "{line}"
        );
        assert_eq!(log.mean(), [8.0, 1.0, 2.0, 5.0, 0.0]);
    }

    #[test]
    fn timedelta_is_pythons() {
        assert_eq!(timedelta(59.9), "0:00:59");
        assert_eq!(timedelta(3_725.0), "1:02:05");
        assert_eq!(timedelta(86_400.0 + 61.0), "1 day, 0:01:01");
        assert_eq!(timedelta(3.0 * 86_400.0 + 7_942.0), "3 days, 2:12:22");
    }
}
