//! YOLOX's experiment settings (`yolox/exp/yolox_base.py` and `exps/default/yolox_*.py`):
//! the defaults of each variant, changed from the command line the way YOLOX's trailing `opts`
//! do (`kiln-train yolox -n yolox-nano max_epoch 30 eval_interval 5`).

use kiln_models::YoloxVariant;

/// The settings of one training run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Exp {
    /// The model variant (`-n`).
    #[serde(serialize_with = "crate::run::display")]
    pub variant: YoloxVariant,
    /// Number of classes (80 for COCO; taken from the annotations).
    pub num_classes: usize,
    /// Training input `(height, width)`, multiples of 32.
    pub input_size: (usize, usize),
    /// Evaluation input `(height, width)`.
    pub test_size: (usize, usize),
    /// Epochs in all.
    pub max_epoch: usize,
    /// Epochs of quadratic learning-rate warm-up.
    pub warmup_epochs: usize,
    /// Final epochs without mosaic and mixup, with the L1 box loss on.
    pub no_aug_epochs: usize,
    /// Learning rate per image: the peak rate is this × the total batch size.
    pub basic_lr_per_img: f64,
    /// The cosine's floor as a fraction of the peak rate.
    pub min_lr_ratio: f64,
    /// SGD momentum (Nesterov).
    pub momentum: f64,
    /// Weight decay of convolution weights (not BatchNorm, not biases).
    pub weight_decay: f64,
    /// Whether evaluation and saved weights use the EMA of the weights.
    pub ema: bool,
    /// Whether every epoch's checkpoint is kept as `epoch_<n>_ckpt.pth`.
    pub save_history_ckpt: bool,
    /// Iterations between log lines.
    pub print_interval: usize,
    /// Epochs between COCO evaluations (and the last epoch always).
    pub eval_interval: usize,
    /// Confidence threshold at evaluation.
    pub test_conf: f32,
    /// NMS IoU threshold at evaluation.
    pub nmsthre: f32,
    /// Data-loading threads per device.
    pub data_num_workers: usize,
    /// Probability of building a mosaic.
    pub mosaic_prob: f64,
    /// Probability of mixing up a mosaic with another image.
    pub mixup_prob: f64,
    /// Probability of HSV jitter.
    pub hsv_prob: f64,
    /// Probability of a horizontal flip.
    pub flip_prob: f64,
    /// Whether MixUp is used at all.
    pub enable_mixup: bool,
    /// Rotation range of the mosaic's affine, degrees.
    pub degrees: f64,
    /// Translation range of the mosaic's affine, fraction of the size.
    pub translate: f64,
    /// Scale range of the mosaic's affine.
    pub mosaic_scale: (f64, f64),
    /// Scale range of the mixed-in image.
    pub mixup_scale: (f64, f64),
    /// Shear range of the mosaic's affine, degrees.
    pub shear: f64,
    /// The COCO split trained on (kiln: the folder and `instances_<split>.json`).
    pub train_split: String,
    /// The COCO split evaluated on.
    pub val_split: String,
}

impl Exp {
    /// YOLOX's defaults for `variant`: `yolox_base.py`; nano and tiny test at 416 with a
    /// lighter mosaic scale and no mixup, nano also trains at 416 with mosaic half the time
    /// (`yolox_tiny.py` sets a misspelt `input_scale`, so tiny trains at 640).
    pub fn new(variant: YoloxVariant) -> Self {
        let small = matches!(variant, YoloxVariant::Nano | YoloxVariant::Tiny);
        let nano = variant == YoloxVariant::Nano;
        Self {
            variant,
            num_classes: 80,
            input_size: if nano { (416, 416) } else { (640, 640) },
            test_size: if small { (416, 416) } else { (640, 640) },
            max_epoch: 300,
            warmup_epochs: 5,
            no_aug_epochs: 15,
            basic_lr_per_img: 0.01 / 64.0,
            min_lr_ratio: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            ema: true,
            save_history_ckpt: true,
            print_interval: 10,
            eval_interval: 10,
            test_conf: 0.01,
            nmsthre: 0.65,
            data_num_workers: 4,
            mosaic_prob: if nano { 0.5 } else { 1.0 },
            mixup_prob: 1.0,
            hsv_prob: 1.0,
            flip_prob: 0.5,
            enable_mixup: !small,
            degrees: 10.0,
            translate: 0.1,
            mosaic_scale: if small { (0.5, 1.5) } else { (0.1, 2.0) },
            mixup_scale: (0.5, 1.5),
            shear: 2.0,
            train_split: "train2017".into(),
            val_split: "val2017".into(),
        }
    }

    /// Applies YOLOX-style `opts`: pairs of `key value` (`max_epoch 10 input_size 320,320`).
    /// Tuples are written `a,b` or `(a, b)`; booleans `true`/`false`.
    pub fn apply_opts(&mut self, opts: &[String]) -> Result<(), String> {
        if opts.len() % 2 != 0 {
            return Err(format!(
                "opts must be `key value` pairs; {:?} has no value",
                opts[opts.len() - 1]
            ));
        }
        for pair in opts.chunks(2) {
            self.set(&pair[0], &pair[1])
                .map_err(|e| format!("opts {} {}: {e}", pair[0], pair[1]))?;
        }
        self.check()
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "max_epoch" => self.max_epoch = parse(value)?,
            "warmup_epochs" => self.warmup_epochs = parse(value)?,
            "no_aug_epochs" => self.no_aug_epochs = parse(value)?,
            "basic_lr_per_img" => self.basic_lr_per_img = parse(value)?,
            "min_lr_ratio" => self.min_lr_ratio = parse(value)?,
            "momentum" => self.momentum = parse(value)?,
            "weight_decay" => self.weight_decay = parse(value)?,
            "ema" => self.ema = parse_bool(value)?,
            "save_history_ckpt" => self.save_history_ckpt = parse_bool(value)?,
            "print_interval" => self.print_interval = parse(value)?,
            "eval_interval" => self.eval_interval = parse(value)?,
            "test_conf" => self.test_conf = parse(value)?,
            "nmsthre" => self.nmsthre = parse(value)?,
            "data_num_workers" => self.data_num_workers = parse(value)?,
            "mosaic_prob" => self.mosaic_prob = parse(value)?,
            "mixup_prob" => self.mixup_prob = parse(value)?,
            "hsv_prob" => self.hsv_prob = parse(value)?,
            "flip_prob" => self.flip_prob = parse(value)?,
            "enable_mixup" => self.enable_mixup = parse_bool(value)?,
            "degrees" => self.degrees = parse(value)?,
            "translate" => self.translate = parse(value)?,
            "shear" => self.shear = parse(value)?,
            "mosaic_scale" => self.mosaic_scale = parse_pair(value)?,
            "mixup_scale" => self.mixup_scale = parse_pair(value)?,
            "input_size" => self.input_size = parse_pair(value)?,
            "test_size" => self.test_size = parse_pair(value)?,
            "train_split" => self.train_split = value.to_string(),
            "val_split" => self.val_split = value.to_string(),
            _ => return Err(format!("unknown key {key:?}")),
        }
        Ok(())
    }

    /// Rejects settings no run can use.
    fn check(&self) -> Result<(), String> {
        for (name, (h, w)) in [("input_size", self.input_size), ("test_size", self.test_size)] {
            if h == 0 || w == 0 || h % 32 != 0 || w % 32 != 0 {
                return Err(format!("{name} {h},{w}: both sides must be positive multiples of 32"));
            }
            if h != w {
                return Err(format!("{name} {h},{w}: kiln trains and evaluates on square inputs"));
            }
        }
        if self.max_epoch == 0 || self.print_interval == 0 || self.eval_interval == 0 {
            return Err("max_epoch, print_interval and eval_interval must be at least 1".into());
        }
        if self.warmup_epochs + self.no_aug_epochs > self.max_epoch {
            return Err(format!(
                "warmup_epochs {} + no_aug_epochs {} exceed max_epoch {}",
                self.warmup_epochs, self.no_aug_epochs, self.max_epoch
            ));
        }
        Ok(())
    }

    /// The first epoch (from 0) without mosaic and mixup.
    pub fn no_aug_start(&self) -> usize {
        self.max_epoch - self.no_aug_epochs
    }
}

fn parse<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e| format!("{value:?}: {e}"))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

fn parse_pair<T: std::str::FromStr>(value: &str) -> Result<(T, T), String>
where
    T::Err: std::fmt::Display,
{
    let inner = value.trim().trim_start_matches('(').trim_end_matches(')');
    match inner.split(',').collect::<Vec<_>>().as_slice() {
        [a, b] => Ok((parse(a)?, parse(b)?)),
        _ => Err(format!("{value:?} is not a pair `a,b`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn variants_take_yolox_defaults() {
        let s = Exp::new(YoloxVariant::S);
        assert_eq!(
            (s.input_size, s.mosaic_scale, s.enable_mixup),
            ((640, 640), (0.1, 2.0), true)
        );
        assert_eq!((s.max_epoch, s.warmup_epochs, s.no_aug_epochs), (300, 5, 15));
        let nano = Exp::new(YoloxVariant::Nano);
        assert_eq!(
            (nano.input_size, nano.mosaic_scale, nano.enable_mixup, nano.mosaic_prob),
            ((416, 416), (0.5, 1.5), false, 0.5)
        );
        let tiny = Exp::new(YoloxVariant::Tiny);
        assert_eq!(
            (tiny.input_size, tiny.test_size, tiny.mosaic_prob),
            ((640, 640), (416, 416), 1.0)
        );
    }

    #[test]
    fn opts_override_and_bad_ones_are_named() {
        let mut e = Exp::new(YoloxVariant::Nano);
        e.apply_opts(&opts(&[
            "max_epoch",
            "30",
            "no_aug_epochs",
            "5",
            "input_size",
            "(320, 320)",
            "ema",
            "false",
            "val_split",
            "train2017",
        ]))
        .unwrap();
        assert_eq!(
            (e.max_epoch, e.no_aug_epochs, e.input_size, e.ema, e.val_split.as_str()),
            (30, 5, (320, 320), false, "train2017")
        );
        assert_eq!(e.no_aug_start(), 25);
        let err = |words: &[&str]| Exp::new(YoloxVariant::S).apply_opts(&opts(words)).unwrap_err();
        assert!(err(&["max_epoch"]).contains("\"max_epoch\" has no value"));
        assert!(err(&["lr", "1"]).contains("unknown key \"lr\""));
        assert!(err(&["input_size", "300,320"]).contains("multiples of 32"));
        assert!(err(&["input_size", "320,640"]).contains("square inputs"));
        assert!(err(&["max_epoch", "ten"]).contains("opts max_epoch ten"));
        assert!(err(&["max_epoch", "10"]).contains("exceed max_epoch 10"));
    }
}
