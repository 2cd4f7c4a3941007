//! timm 0.4.12's RandAugment (`timm/data/auto_augment.py`): the configuration string
//! (`rand-m9-mstd0.5-inc1`, `rand_augment_transform`) and the per-image sampling
//! (`RandAugment.__call__`, `AugmentOp.__call__`) over the operations of `rand_ops`.

use image::RgbImage;
use rand::rngs::StdRng;
use rand::Rng;

use super::rand_ops::{
    imagenet_fill, RandOp, CHOICE_WEIGHTS_0, MAX_LEVEL, RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS,
};
use super::{standard_normal, Interpolation, Resample, TimmConfigError};
use crate::transforms::uniform;

/// Probability that a chosen operation runs (timm's `AugmentOp` `prob` for RandAugment).
const OP_PROB: f64 = 0.5;

/// timm 0.4.12's RandAugment: per image, `n` operations drawn from the 15 of
/// [`RAND_TRANSFORMS`] (or [`RAND_INCREASING_TRANSFORMS`] with `inc`), uniformly with
/// replacement (or, with `w0`, by timm's weights without replacement); each runs with
/// probability 0.5 at a magnitude drawn from `N(m, mstd²)` (fixed at `m` when `mstd` is 0,
/// uniform on `[0, m]` when it is infinite), clipped to `[0, 10]`.
///
/// The geometric operations fill with timm's `img_mean` for ImageNet, (124, 116, 104), and
/// translate by up to 45 % of the side (`translate_pct`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandAugment {
    magnitude: f64,
    num_layers: usize,
    magnitude_std: f64,
    increasing: bool,
    weighted: bool,
    interpolation: Interpolation,
    fill: [u8; 3],
}

/// Every field is finite or, for `magnitude_std`, +∞ (the constructor admits nothing else), so
/// equality is reflexive.
impl Eq for RandAugment {}

impl RandAugment {
    /// Parses timm's RandAugment string, `rand` then `-`-separated sections `<key><value>`
    /// (the value starts at the first digit), as timm 0.4.12's `rand_augment_transform` does:
    ///
    /// - `m<int>`: magnitude (default 10);
    /// - `n<int>`: operations per image (default 2);
    /// - `mstd<float>`: standard deviation of the magnitude noise (default 0; the first `mstd`
    ///   counts, as timm sets it with `setdefault`);
    /// - `inc<value>`: the increasing operation set. timm tests `bool(value)` on the string, so
    ///   any value, `inc0` included, turns it on; so does this;
    /// - `w<int>`: choice weights; timm has only set 0.
    ///
    /// `interpolation` is the resampling of the geometric operations (timm passes the
    /// transform's interpolation; `random` picks per operation).
    ///
    /// Refused, each with an error naming the string: anything but `rand` first (AutoAugment
    /// policies and AugMix are not implemented), an unknown key, a value that does not parse,
    /// weights other than `w0`, `w0` with more than 13 operations (numpy cannot draw them
    /// without replacement), and a section without a value, which timm silently skips.
    pub fn parse(config: &str, interpolation: Interpolation) -> Result<Self, TimmConfigError> {
        let fail = |problem: String| Err(TimmConfigError::new("auto_augment", config, problem));
        let mut sections = config.split('-');
        match sections.next() {
            Some("rand") => {}
            Some(first) if first.starts_with("augmix") => {
                return fail("AugMix is not implemented, only RandAugment (`rand-...`)".into())
            }
            Some("v0" | "v0r" | "original" | "originalr") => {
                return fail("AutoAugment policies are not implemented, only RandAugment (`rand-...`)".into())
            }
            Some(first) => return fail(format!("expected `rand` as the first section, not {first:?}")),
            None => unreachable!("split yields at least one piece"),
        }
        let mut parsed = Self {
            magnitude: MAX_LEVEL,
            num_layers: 2,
            magnitude_std: 0.0,
            increasing: false,
            weighted: false,
            interpolation,
            fill: imagenet_fill(),
        };
        let mut std_set = false;
        for section in sections {
            let Some(at) = section.find(|c: char| c.is_ascii_digit()) else {
                return fail(format!(
                    "section {section:?} has no value (expected a key m, n, w, mstd or inc followed by a number)"
                ));
            };
            let (key, value) = section.split_at(at);
            let bad = |what: &str| fail(format!("section {section:?}: {value:?} is not {what}"));
            match key {
                "m" => match value.parse::<u32>() {
                    Ok(m) => parsed.magnitude = f64::from(m),
                    Err(_) => return bad("an integer magnitude"),
                },
                "n" => match value.parse::<usize>() {
                    Ok(n) => parsed.num_layers = n,
                    Err(_) => return bad("an integer number of operations"),
                },
                "mstd" => match value.parse::<f64>() {
                    Ok(s) if s >= 0.0 => {
                        if !std_set {
                            parsed.magnitude_std = s;
                            std_set = true;
                        }
                    }
                    _ => return bad("a non-negative number"),
                },
                "inc" => parsed.increasing = true,
                "w" => match value.parse::<u32>() {
                    Ok(0) => parsed.weighted = true,
                    Ok(_) => return fail(format!("section {section:?}: timm 0.4.12 has only weight set 0")),
                    Err(_) => return bad("an integer weight set"),
                },
                _ => {
                    return fail(format!(
                        "section {section:?}: unknown key {key:?} (timm knows m, n, w, mstd and inc)"
                    ))
                }
            }
        }
        let drawable = CHOICE_WEIGHTS_0.iter().filter(|&&w| w > 0.0).count();
        if parsed.weighted && parsed.num_layers > drawable {
            return fail(format!(
                "w0 draws without replacement, and only {drawable} operations have a weight: n{} is too many",
                parsed.num_layers
            ));
        }
        Ok(parsed)
    }

    /// The magnitude `m`.
    pub fn magnitude(&self) -> f64 {
        self.magnitude
    }

    /// The number of operations per image, `n`.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// The standard deviation of the magnitude noise, `mstd`.
    pub fn magnitude_std(&self) -> f64 {
        self.magnitude_std
    }

    /// Whether the choice is weighted (`w0`).
    pub fn weighted(&self) -> bool {
        self.weighted
    }

    /// The operations drawn from.
    pub fn ops(&self) -> &'static [RandOp; 15] {
        if self.increasing {
            &RAND_INCREASING_TRANSFORMS
        } else {
            &RAND_TRANSFORMS
        }
    }

    /// The fill colour of the geometric operations.
    pub fn fill(&self) -> [u8; 3] {
        self.fill
    }

    /// One operation's magnitude: `m`, or `N(m, mstd²)` (uniform on `[0, m]` for an infinite
    /// `mstd`), clipped to `[0, 10]`.
    pub fn sample_magnitude(&self, rng: &mut StdRng) -> f64 {
        let m = if self.magnitude_std == f64::INFINITY {
            uniform(rng, 0.0, self.magnitude)
        } else if self.magnitude_std > 0.0 {
            self.magnitude + self.magnitude_std * standard_normal(rng)
        } else {
            self.magnitude
        };
        m.clamp(0.0, MAX_LEVEL)
    }

    /// The `n` operations for one image: uniform with replacement, or with `w0` weighted
    /// without replacement (numpy's `choice(replace=False, p=...)`).
    pub fn choose_ops(&self, rng: &mut StdRng) -> Vec<RandOp> {
        let ops = self.ops();
        if !self.weighted {
            return (0..self.num_layers)
                .map(|_| ops[rng.random_range(0..ops.len())])
                .collect();
        }
        let mut weights = CHOICE_WEIGHTS_0;
        let mut chosen = Vec::with_capacity(self.num_layers);
        for _ in 0..self.num_layers {
            let total: f64 = weights.iter().sum();
            let mut u = rng.random::<f64>() * total;
            // The last positive weight catches a draw that rounding leaves past the end.
            let mut pick = weights.iter().rposition(|&w| w > 0.0).expect("checked at parse");
            for (i, &w) in weights.iter().enumerate() {
                if w > 0.0 && u < w {
                    pick = i;
                    break;
                }
                u -= w;
            }
            weights[pick] = 0.0;
            chosen.push(ops[pick]);
        }
        chosen
    }

    /// timm's `AugmentOp.__call__`: with probability 0.5 nothing; else a magnitude
    /// ([`RandAugment::sample_magnitude`]), a random sign for signed operations, a filter for
    /// geometric ones, and the operation.
    pub fn apply_op(&self, op: RandOp, img: RgbImage, rng: &mut StdRng) -> RgbImage {
        if rng.random::<f64>() > OP_PROB {
            return img;
        }
        let level = self.sample_magnitude(rng);
        let negate = op.is_signed() && rng.random::<f64>() > 0.5;
        let arg = op.argument(level, negate);
        let resample = if op.is_geometric() {
            self.interpolation.pick(rng)
        } else {
            Resample::Bilinear
        };
        op.apply(img, arg, resample, self.fill)
    }

    /// Augments one image: [`RandAugment::choose_ops`], then each through
    /// [`RandAugment::apply_op`].
    pub fn apply(&self, img: RgbImage, rng: &mut StdRng) -> RgbImage {
        self.choose_ops(rng)
            .into_iter()
            .fold(img, |img, op| self.apply_op(op, img, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use std::collections::HashMap;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    fn swin() -> RandAugment {
        RandAugment::parse("rand-m9-mstd0.5-inc1", Interpolation::Bicubic).unwrap()
    }

    #[test]
    fn parses_swins_string_and_timms_keys() {
        let ra = swin();
        assert_eq!(ra.magnitude(), 9.0);
        assert_eq!(ra.num_layers(), 2);
        assert_eq!(ra.magnitude_std(), 0.5);
        assert_eq!(ra.ops(), &RAND_INCREASING_TRANSFORMS);
        assert!(!ra.weighted());
        assert_eq!(ra.fill(), [124, 116, 104]);
        let plain = RandAugment::parse("rand", Interpolation::Bilinear).unwrap();
        assert_eq!(
            (plain.magnitude(), plain.num_layers(), plain.magnitude_std()),
            (10.0, 2, 0.0)
        );
        assert_eq!(plain.ops(), &RAND_TRANSFORMS);
        let ra = RandAugment::parse("rand-n3-m15-mstd1.5-mstd0.2-w0", Interpolation::Random).unwrap();
        assert_eq!((ra.magnitude(), ra.num_layers(), ra.magnitude_std()), (15.0, 3, 1.5));
        assert!(ra.weighted());
        // timm tests bool("0"), which is true.
        assert_eq!(
            RandAugment::parse("rand-inc0", Interpolation::Bicubic).unwrap().ops(),
            &RAND_INCREASING_TRANSFORMS
        );
        assert_eq!(
            RandAugment::parse("rand-mstd1e999", Interpolation::Bicubic)
                .unwrap()
                .magnitude_std(),
            f64::INFINITY
        );
    }

    #[test]
    fn bad_strings_are_named_with_the_reason() {
        for (config, reason) in [
            ("v0", "AutoAugment policies"),
            ("augmix-m5", "AugMix"),
            ("randaug-m9", "expected `rand`"),
            ("", "expected `rand`"),
            ("rand-m9-x3", "unknown key \"x\""),
            ("rand-m9.5", "not an integer magnitude"),
            ("rand-n2x", "not an integer number"),
            ("rand-mstd0.5.1", "not a non-negative number"),
            ("rand-w1", "only weight set 0"),
            ("rand-w0-n14", "n14 is too many"),
            ("rand-m9-inc", "has no value"),
            ("rand-m9-", "has no value"),
        ] {
            let err = RandAugment::parse(config, Interpolation::Bicubic).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{config:?}")), "{msg}");
            assert!(msg.contains(reason), "{config}: {msg}");
            assert_eq!(err.setting, "auto_augment");
        }
    }

    #[test]
    fn magnitudes_are_normal_around_m_and_clipped() {
        let ra = swin();
        let mut r = rng(11);
        let draws: Vec<f64> = (0..20_000).map(|_| ra.sample_magnitude(&mut r)).collect();
        let n = draws.len() as f64;
        assert!(draws.iter().all(|m| (0.0..=10.0).contains(m)));
        // N(9, 0.5²) clipped at 10: the 2.3 % above 10 sit at 10, which pulls the mean to
        // 9 - 0.5 · (φ(2) - 2 · (1 - Φ(2))) = 8.9958 and the standard deviation to 0.4900.
        let mean = draws.iter().sum::<f64>() / n;
        let std = (draws.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mean - 8.9958).abs() < 0.012, "{mean}");
        assert!((std - 0.490).abs() < 0.01, "{std}");
        let at_max = draws.iter().filter(|&&m| m == 10.0).count() as f64 / n;
        assert!((at_max - 0.0228).abs() < 0.005, "{at_max}");
        // No noise: always m; clipped when m is above 10.
        let fixed = RandAugment::parse("rand-m7", Interpolation::Bicubic).unwrap();
        assert_eq!(fixed.sample_magnitude(&mut r), 7.0);
        let high = RandAugment::parse("rand-m30", Interpolation::Bicubic).unwrap();
        assert_eq!(high.sample_magnitude(&mut r), 10.0);
        let uniform = RandAugment::parse("rand-m8-mstd1e999", Interpolation::Bicubic).unwrap();
        let draws: Vec<f64> = (0..10_000).map(|_| uniform.sample_magnitude(&mut r)).collect();
        assert!(draws.iter().all(|m| (0.0..8.0).contains(m)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 4.0).abs() < 0.1, "{mean}");
    }

    #[test]
    fn operations_are_chosen_uniformly_with_replacement() {
        let ra = swin();
        let mut r = rng(3);
        let mut counts: HashMap<RandOp, usize> = HashMap::new();
        let mut repeats = 0;
        let images = 15_000;
        for _ in 0..images {
            let ops = ra.choose_ops(&mut r);
            assert_eq!(ops.len(), 2);
            repeats += usize::from(ops[0] == ops[1]);
            for op in ops {
                *counts.entry(op).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 15);
        assert!(counts.keys().all(|op| RAND_INCREASING_TRANSFORMS.contains(op)));
        // 30 000 draws over 15 operations: 2000 each, σ ≈ 43.
        for (op, n) in &counts {
            assert!((1820..=2180).contains(n), "{op:?}: {n}");
        }
        // With replacement: the same operation twice in 1/15 of the images (σ ≈ 30).
        assert!((880..=1120).contains(&repeats), "{repeats}");
    }

    #[test]
    fn weighted_choice_follows_timms_weights_without_replacement() {
        let ra = RandAugment::parse("rand-w0-n2", Interpolation::Bicubic).unwrap();
        let mut r = rng(4);
        let mut first: HashMap<RandOp, usize> = HashMap::new();
        for _ in 0..20_000 {
            let ops = ra.choose_ops(&mut r);
            assert_ne!(ops[0], ops[1]);
            assert!(!ops.contains(&RandOp::Invert) && !ops.contains(&RandOp::Posterize));
            *first.entry(ops[0]).or_default() += 1;
        }
        // First draw: Rotate 0.3, ShearX 0.2, TranslateXRel 0.1 of the weights (sum 1.0).
        let share = |op| first.get(&op).copied().unwrap_or(0) as f64 / 20_000.0;
        assert!((share(RandOp::Rotate) - 0.3).abs() < 0.015);
        assert!((share(RandOp::ShearX) - 0.2).abs() < 0.015);
        assert!((share(RandOp::TranslateXRel) - 0.1).abs() < 0.012);
    }

    #[test]
    fn each_operation_runs_half_the_time() {
        // Invert at any magnitude changes a non-grey image: count how often it ran.
        let ra = swin();
        let img = RgbImage::from_pixel(4, 4, Rgb([10, 20, 30]));
        let mut r = rng(8);
        let ran = (0..4000)
            .filter(|_| ra.apply_op(RandOp::Invert, img.clone(), &mut r) != img)
            .count();
        assert!((1880..=2120).contains(&ran), "{ran}");
    }

    #[test]
    fn augmentation_is_seeded() {
        let ra = swin();
        let img = RgbImage::from_fn(16, 12, |x, y| {
            Rgb([(x * 15) as u8, (y * 20) as u8, ((x + y) * 7) as u8])
        });
        let a = ra.apply(img.clone(), &mut rng(1));
        assert_eq!(a.dimensions(), (16, 12));
        assert_eq!(a, ra.apply(img.clone(), &mut rng(1)));
        let mut outputs: Vec<RgbImage> = (0..20).map(|s| ra.apply(img.clone(), &mut rng(s))).collect();
        outputs.sort_by(|a, b| a.as_raw().cmp(b.as_raw()));
        outputs.dedup();
        assert!(outputs.len() >= 10, "{} distinct outputs of 20 seeds", outputs.len());
    }
}
