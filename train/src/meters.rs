//! pytorch/examples' `AverageMeter`, `ProgressMeter` and `accuracy`, printing the same lines.

/// How a meter prints its value and running average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterFormat {
    /// Python `{:6.3f}` (times).
    Seconds,
    /// Python `{:.4e}` (losses).
    Exp4,
    /// Python `{:6.2f}` (accuracies).
    Percent,
}

impl MeterFormat {
    fn format(self, x: f64) -> String {
        match self {
            MeterFormat::Seconds => format!("{x:6.3}"),
            MeterFormat::Exp4 => python_exp(x, 4),
            MeterFormat::Percent => format!("{x:6.2}"),
        }
    }
}

/// Python's `'{:.Ne}'.format(x)`: mantissa with `precision` decimals, exponent with a sign and
/// at least two digits (`6.9000e+00`).
pub fn python_exp(x: f64, precision: usize) -> String {
    if !x.is_finite() {
        return format!("{x}").to_lowercase();
    }
    let rust = format!("{x:.precision$e}");
    let (mantissa, exp) = rust.split_once('e').expect("Rust's {:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// The current value and the running, count-weighted average of a figure.
#[derive(Debug, Clone)]
pub struct AverageMeter {
    name: &'static str,
    format: MeterFormat,
    val: f64,
    sum: f64,
    count: usize,
}

impl AverageMeter {
    /// An empty meter labelled `name`.
    pub fn new(name: &'static str, format: MeterFormat) -> Self {
        Self {
            name,
            format,
            val: 0.0,
            sum: 0.0,
            count: 0,
        }
    }

    /// Records `val` measured over `n` samples.
    pub fn update(&mut self, val: f64, n: usize) {
        self.val = val;
        self.sum += val * n as f64;
        self.count += n;
    }

    /// The latest value.
    pub fn val(&self) -> f64 {
        self.val
    }

    /// The sum and the sample count behind the average, for reducing across workers.
    pub fn totals(&self) -> [f64; 2] {
        [self.sum, self.count as f64]
    }

    /// Replaces the sum and count by totals over all workers (main.py's `all_reduce`).
    pub fn set_totals(&mut self, [sum, count]: [f64; 2]) {
        self.sum = sum;
        self.count = count.round() as usize;
    }

    /// The running average (0 before any update, as in the original).
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// `{name} {val} ({avg})` in the meter's format.
    pub fn display(&self) -> String {
        format!(
            "{} {} ({})",
            self.name,
            self.format.format(self.val),
            self.format.format(self.avg())
        )
    }

    /// `{name} {avg:.3f}`, the summary line's entry.
    pub fn summary(&self) -> String {
        format!("{} {:.3}", self.name, self.avg())
    }
}

/// `Epoch: [0][ 10/157]` followed by the meters, tab-separated.
pub fn progress_line(prefix: &str, batch: usize, num_batches: usize, meters: &[&AverageMeter]) -> String {
    let width = num_batches.to_string().len();
    let mut line = format!("{prefix}[{batch:width$}/{num_batches}]");
    for meter in meters {
        line.push('\t');
        line.push_str(&meter.display());
    }
    line
}

/// The validation summary: ` * Acc@1 75.340 Acc@5 92.110`.
pub fn summary_line(meters: &[&AverageMeter]) -> String {
    let mut line = String::from(" *");
    for meter in meters {
        line.push(' ');
        line.push_str(&meter.summary());
    }
    line
}

/// Top-k accuracy in percent for each `k` (capped at the class count), from row-major scores
/// `[n, classes]`: a sample counts when its target is among its `k` highest scores.
pub fn topk_accuracy(scores: &[f32], classes: usize, targets: &[i64], ks: &[usize]) -> Vec<f64> {
    let n = targets.len();
    let mut hits = vec![0usize; ks.len()];
    for (row, &target) in scores.chunks_exact(classes).zip(targets) {
        let target_score = row[target as usize];
        // Rank of the target: classes scoring strictly higher, plus equal ones listed before it
        // (a stable descending sort, like torch.topk on distinct scores).
        let rank = row
            .iter()
            .enumerate()
            .filter(|&(c, &s)| s > target_score || (s == target_score && c < target as usize))
            .count();
        for (hit, &k) in hits.iter_mut().zip(ks) {
            if rank < k.min(classes) {
                *hit += 1;
            }
        }
    }
    hits.iter().map(|&h| 100.0 * h as f64 / n as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_exponent_format() {
        assert_eq!(python_exp(6.9, 4), "6.9000e+00");
        assert_eq!(python_exp(0.000123456, 4), "1.2346e-04");
        assert_eq!(python_exp(12345.0, 4), "1.2345e+04");
        assert_eq!(python_exp(0.0, 4), "0.0000e+00");
        assert_eq!(python_exp(1e-120, 1), "1.0e-120");
        assert_eq!(python_exp(f64::NAN, 4), "nan");
    }

    #[test]
    fn progress_line_is_the_originals() {
        let mut time = AverageMeter::new("Time", MeterFormat::Seconds);
        let mut data = AverageMeter::new("Data", MeterFormat::Seconds);
        let mut loss = AverageMeter::new("Loss", MeterFormat::Exp4);
        let mut top1 = AverageMeter::new("Acc@1", MeterFormat::Percent);
        let mut top5 = AverageMeter::new("Acc@5", MeterFormat::Percent);
        time.update(0.548, 1);
        time.update(0.512, 1);
        data.update(0.030, 1);
        data.update(0.010, 1);
        loss.update(6.9, 32);
        top1.update(0.0, 32);
        top5.update(0.98, 32);
        assert_eq!(
            progress_line("Epoch: [0]", 10, 157, &[&time, &data, &loss, &top1, &top5]),
            "Epoch: [0][ 10/157]\tTime  0.512 ( 0.530)\tData  0.010 ( 0.020)\tLoss 6.9000e+00 (6.9000e+00)\t\
             Acc@1   0.00 (  0.00)\tAcc@5   0.98 (  0.98)"
        );
        assert_eq!(
            progress_line("Test: ", 0, 8, &[&time]),
            "Test: [0/8]\tTime  0.512 ( 0.530)"
        );
    }

    #[test]
    fn meters_weight_by_count() {
        let mut m = AverageMeter::new("Acc@1", MeterFormat::Percent);
        assert_eq!(m.avg(), 0.0);
        m.update(100.0, 3);
        m.update(0.0, 1);
        assert_eq!(m.avg(), 75.0);
        let mut top5 = AverageMeter::new("Acc@5", MeterFormat::Percent);
        top5.update(92.11, 1);
        assert_eq!(summary_line(&[&m, &top5]), " * Acc@1 75.000 Acc@5 92.110");
    }

    #[test]
    fn topk_counts_targets_among_the_k_best() {
        // 3 samples, 4 classes.
        let scores = [
            0.1, 0.7, 0.2, 0.0, // best 1, then 2: target 1 → top1 hit
            0.5, 0.1, 0.3, 0.4, // order 0, 3, 2, 1: target 2 is third → top3 hit only
            0.0, 0.0, 0.9, 0.8, // order 2, 3: target 3 second → top2
        ];
        let acc = topk_accuracy(&scores, 4, &[1, 2, 3], &[1, 2, 3, 5]);
        let want = [100.0 / 3.0, 200.0 / 3.0, 100.0, 100.0];
        for (a, w) in acc.iter().zip(want) {
            assert!((a - w).abs() < 1e-9, "{acc:?}");
        }
        // k above the class count is capped: 2 classes, Acc@5 = Acc@2 = 100.
        assert_eq!(topk_accuracy(&[0.9, 0.1], 2, &[1], &[1, 5]), vec![0.0, 100.0]);
    }
}
