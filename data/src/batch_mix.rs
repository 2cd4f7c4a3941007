//! timm's Mixup and CutMix in batch mode (`timm.data.Mixup(mode='batch')`, as
//! Swin-Transformer configures it): one mixing weight `λ` per batch, every image mixed with
//! its partner in the reversed batch (image `i` with image `n − 1 − i`).
//!
//! - With probability `prob` the batch is mixed at all; when both are on, CutMix is chosen
//!   with probability `switch_prob`, else Mixup.
//! - Mixup: `λ ~ Beta(α_mixup, α_mixup)`, `x ← λ·x + (1 − λ)·x_flipped`.
//! - CutMix: `λ ~ Beta(α_cutmix, α_cutmix)`; a box of `int(H·√(1 − λ)) × int(W·√(1 − λ))`
//!   centred on a uniform pixel, clipped to the image, is pasted from the partner, and `λ`
//!   becomes the share of the image left uncovered.
//!
//! The targets that go with `λ` are the caller's (timm's `mixup_target`).

use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Beta, Distribution};

/// The mixing settings (Swin's `AUG.MIXUP`, `AUG.CUTMIX`, `AUG.MIXUP_PROB`,
/// `AUG.MIXUP_SWITCH_PROB`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchMix {
    /// Mixup's Beta α; 0 turns Mixup off.
    pub mixup_alpha: f64,
    /// CutMix's Beta α; 0 turns CutMix off.
    pub cutmix_alpha: f64,
    /// Probability of mixing a batch.
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are on.
    pub switch_prob: f64,
}

/// How one batch was mixed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mixed {
    /// Left as it was (`λ = 1`).
    Unmixed,
    /// Blended with weight `lam` on each image's own pixels.
    Mixup {
        /// The weight of the image's own pixels and label.
        lam: f64,
    },
    /// Rows `top..bottom` and columns `left..right` pasted from the partner.
    CutMix {
        /// The uncovered share: the weight of the image's own label.
        lam: f64,
        /// First pasted row.
        top: usize,
        /// One past the last pasted row.
        bottom: usize,
        /// First pasted column.
        left: usize,
        /// One past the last pasted column.
        right: usize,
    },
}

impl Mixed {
    /// The weight of each image's own label.
    pub fn lam(&self) -> f64 {
        match *self {
            Self::Unmixed => 1.0,
            Self::Mixup { lam } | Self::CutMix { lam, .. } => lam,
        }
    }
}

impl BatchMix {
    /// Whether any mixing can happen (timm's `mixup_active`).
    pub fn is_active(&self) -> bool {
        self.prob > 0.0 && (self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0)
    }

    /// An error naming the setting when one is out of range.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [("AUG.MIXUP", self.mixup_alpha), ("AUG.CUTMIX", self.cutmix_alpha)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} {v}: must be a finite α ≥ 0"));
            }
        }
        for (name, v) in [
            ("AUG.MIXUP_PROB", self.prob),
            ("AUG.MIXUP_SWITCH_PROB", self.switch_prob),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} {v}: must be a probability in [0, 1]"));
            }
        }
        Ok(())
    }

    /// Draws this batch's mixing (`_params_per_batch`) and applies it to `images`, a
    /// `[n, c, h, w]` row-major batch, in place.
    pub fn apply(&self, images: &mut [f32], shape: [usize; 4], rng: &mut StdRng) -> Mixed {
        let mixed = self.draw(shape, rng);
        apply(images, shape, mixed);
        mixed
    }

    /// The mixing for one batch of `shape`, drawn as timm draws it.
    pub fn draw(&self, [_, _, h, w]: [usize; 4], rng: &mut StdRng) -> Mixed {
        if !self.is_active() || rng.random::<f64>() >= self.prob {
            return Mixed::Unmixed;
        }
        let cutmix = if self.mixup_alpha > 0.0 && self.cutmix_alpha > 0.0 {
            rng.random::<f64>() < self.switch_prob
        } else {
            self.cutmix_alpha > 0.0
        };
        let alpha = if cutmix { self.cutmix_alpha } else { self.mixup_alpha };
        let lam = Beta::new(alpha, alpha).expect("validated α").sample(rng);
        if lam >= 1.0 {
            return Mixed::Unmixed;
        }
        if !cutmix {
            return Mixed::Mixup { lam };
        }
        let ratio = (1.0 - lam).sqrt();
        let (cut_h, cut_w) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
        let (cy, cx) = (rng.random_range(0..h), rng.random_range(0..w));
        let (top, bottom) = (cy.saturating_sub(cut_h / 2), (cy + cut_h / 2).min(h));
        let (left, right) = (cx.saturating_sub(cut_w / 2), (cx + cut_w / 2).min(w));
        let area = (bottom - top) * (right - left);
        Mixed::CutMix {
            lam: 1.0 - area as f64 / (h * w) as f64,
            top,
            bottom,
            left,
            right,
        }
    }
}

/// Applies `mixed` to the `[n, c, h, w]` batch `images` in place.
pub fn apply(images: &mut [f32], [n, c, h, w]: [usize; 4], mixed: Mixed) {
    let plane = h * w;
    let image = c * plane;
    assert_eq!(images.len(), n * image, "batch of {n}×{c}×{h}×{w}");
    match mixed {
        Mixed::Unmixed => {}
        Mixed::Mixup { lam } => {
            let (a, b) = (lam as f32, (1.0 - lam) as f32);
            // Pairs (i, n−1−i) mix symmetrically; the middle image of an odd batch is its own
            // partner and stays as it is.
            for i in 0..n / 2 {
                let j = n - 1 - i;
                let (head, tail) = images.split_at_mut(j * image);
                let (x, y) = (&mut head[i * image..(i + 1) * image], &mut tail[..image]);
                for (p, q) in x.iter_mut().zip(y.iter_mut()) {
                    let (u, v) = (*p, *q);
                    *p = a * u + b * v;
                    *q = a * v + b * u;
                }
            }
        }
        Mixed::CutMix {
            top,
            bottom,
            left,
            right,
            ..
        } => {
            for i in 0..n / 2 {
                let j = n - 1 - i;
                let (head, tail) = images.split_at_mut(j * image);
                let (x, y) = (&mut head[i * image..(i + 1) * image], &mut tail[..image]);
                for ch in 0..c {
                    for row in top..bottom {
                        let at = ch * plane + row * w;
                        x[at + left..at + right].swap_with_slice(&mut y[at + left..at + right]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const BOTH: BatchMix = BatchMix {
        mixup_alpha: 0.8,
        cutmix_alpha: 1.0,
        prob: 1.0,
        switch_prob: 0.5,
    };

    /// A `[n, 1, h, w]` batch whose image `i` is filled with `i`.
    fn batch(n: usize, h: usize, w: usize) -> Vec<f32> {
        (0..n).flat_map(|i| std::iter::repeat_n(i as f32, h * w)).collect()
    }

    #[test]
    fn mixup_blends_each_image_with_its_reversed_partner() {
        let mut x = batch(3, 2, 2);
        apply(&mut x, [3, 1, 2, 2], Mixed::Mixup { lam: 0.75 });
        // Image 0 (zeros) with image 2 (twos): 0.75·0 + 0.25·2 = 0.5; image 2: 1.5; image 1
        // is its own partner.
        assert_eq!(x, [[0.5; 4], [1.0; 4], [1.5; 4]].concat());
    }

    #[test]
    fn cutmix_pastes_the_partners_box_and_the_lambda_is_the_uncovered_share() {
        let mut x = batch(2, 4, 5);
        let mixed = Mixed::CutMix {
            lam: 0.7,
            top: 1,
            bottom: 3,
            left: 2,
            right: 5,
        };
        apply(&mut x, [2, 1, 4, 5], mixed);
        for (i, v) in x[..20].iter().enumerate() {
            let (row, col) = (i / 5, i % 5);
            let inside = (1..3).contains(&row) && (2..5).contains(&col);
            assert_eq!(*v, if inside { 1.0 } else { 0.0 }, "row {row} col {col}");
        }
        assert_eq!(x[20..].iter().filter(|&&v| v == 0.0).count(), 6);

        // Drawn boxes: λ equals 1 − box area / image area, and the box is clipped to the image.
        let mut rng = StdRng::seed_from_u64(4);
        let cutmix_only = BatchMix {
            mixup_alpha: 0.0,
            ..BOTH
        };
        for _ in 0..200 {
            match cutmix_only.draw([2, 3, 7, 9], &mut rng) {
                Mixed::CutMix {
                    lam,
                    top,
                    bottom,
                    left,
                    right,
                } => {
                    assert!(top <= bottom && bottom <= 7 && left <= right && right <= 9);
                    let area = ((bottom - top) * (right - left)) as f64;
                    assert!((lam - (1.0 - area / 63.0)).abs() < 1e-12);
                }
                Mixed::Unmixed => {}
                other => panic!("CutMix only, got {other:?}"),
            }
        }
    }

    #[test]
    fn draws_follow_the_probabilities_and_the_beta_mean() {
        let mut rng = StdRng::seed_from_u64(7);
        let (mut cutmix, mut mixup, mut lam_sum) = (0, 0, 0.0);
        let draws = 4000;
        for _ in 0..draws {
            match BOTH.draw([2, 3, 32, 32], &mut rng) {
                Mixed::Mixup { lam } => {
                    mixup += 1;
                    lam_sum += lam;
                }
                Mixed::CutMix { .. } => cutmix += 1,
                Mixed::Unmixed => {}
            }
        }
        // switch_prob 0.5; Beta(0.8, 0.8) has mean 1/2.
        let share = cutmix as f64 / draws as f64;
        assert!((0.46..0.54).contains(&share), "{share}");
        let mean = lam_sum / mixup as f64;
        assert!((0.47..0.53).contains(&mean), "{mean}");

        let never = BatchMix { prob: 0.0, ..BOTH };
        assert!(!never.is_active());
        assert_eq!(never.draw([2, 3, 8, 8], &mut rng), Mixed::Unmixed);
        let half = BatchMix { prob: 0.5, ..BOTH };
        let unmixed = (0..2000)
            .filter(|_| half.draw([2, 3, 8, 8], &mut rng) == Mixed::Unmixed)
            .count();
        assert!((900..1100).contains(&unmixed), "{unmixed}");
        // The same seed, the same draws.
        let a: Vec<Mixed> = (0..5)
            .map(|_| BOTH.draw([2, 3, 8, 8], &mut StdRng::seed_from_u64(1)))
            .collect();
        assert!(a.windows(2).all(|p| p[0] == p[1]));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = BatchMix { prob: 1.5, ..BOTH }.validate().unwrap_err();
        assert!(e.contains("AUG.MIXUP_PROB"), "{e}");
        let e = BatchMix {
            cutmix_alpha: -1.0,
            ..BOTH
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("AUG.CUTMIX"), "{e}");
    }
}
