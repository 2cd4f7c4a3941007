//! A seeded byte mutator for bounded fuzz tests that run on stable Rust in `cargo test`:
//! each test mutates valid seed inputs (bit flips, boundary values, size fields set huge,
//! truncation, duplicated and inserted chunks) and checks that the code under test returns an
//! error instead of panicking, hanging or allocating without bound. `KILN_FUZZ_ITERS` scales
//! the number of cases for a longer run.

use std::io::Cursor;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A `width × height` PNG of one colour type, all zeros: a few KB for millions of pixels, the
/// shape of a decompression bomb.
pub fn zeros_png(width: u32, height: u32, color: ExtendedColorType) -> Vec<u8> {
    let bytes_per_pixel = color.bits_per_pixel() as usize / 8;
    let pixels = vec![0u8; width as usize * height as usize * bytes_per_pixel];
    let mut out = Cursor::new(Vec::new());
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::NoFilter)
        .write_image(&pixels, width, height, color)
        .expect("encoding to memory");
    out.into_inner()
}

/// Produces mutated copies of seed inputs, reproducibly from a seed.
pub struct Mutator {
    rng: StdRng,
}

/// The number of cases a fuzz test runs: `default`, or `KILN_FUZZ_ITERS` when set.
pub fn iterations(default: usize) -> usize {
    std::env::var("KILN_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Mutator {
    /// A mutator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A copy of `input` with one to four mutations.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..self.rng.random_range(1..=4) {
            self.mutate_once(&mut out);
        }
        out
    }

    fn mutate_once(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            out.push(self.rng.random());
            return;
        }
        let at = self.rng.random_range(0..out.len());
        match self.rng.random_range(0..6) {
            0 => out[at] ^= 1 << self.rng.random_range(0..8),
            1 => out[at] = [0x00, 0xFF, 0x7F, 0x80, 0x01][self.rng.random_range(0..5)],
            2 => {
                // A 32-bit size or count field set to a boundary value, either byte order.
                let value: u32 = [u32::MAX, 0x7FFF_FFFF, 0x0001_0000, 0][self.rng.random_range(0..4)];
                let bytes = if self.rng.random() {
                    value.to_be_bytes()
                } else {
                    value.to_le_bytes()
                };
                for (i, b) in bytes.into_iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = b;
                    }
                }
            }
            3 => out.truncate(at),
            4 => {
                let len = self.rng.random_range(1..=64.min(out.len() - at));
                let chunk = out[at..at + len].to_vec();
                let to = self.rng.random_range(0..=out.len());
                out.splice(to..to, chunk);
            }
            _ => {
                let len = self.rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                out.splice(at..at, bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_cases_and_cases_differ() {
        let seed = b"0123456789abcdef0123456789abcdef";
        let a: Vec<_> = (0..20).scan(Mutator::new(7), |m, _| Some(m.mutate(seed))).collect();
        let b: Vec<_> = (0..20).scan(Mutator::new(7), |m, _| Some(m.mutate(seed))).collect();
        assert_eq!(a, b);
        assert!(a.iter().filter(|c| c.as_slice() != seed).count() >= 15);
        assert!(a.windows(2).any(|w| w[0] != w[1]));
    }
}
