//! Uploads a server must refuse without harm, for the soak of `kiln-bench serve --bad-share`:
//! broken files, a decompression bomb whose resize would take gigabytes, and a large image
//! that is allowed but heavy to decode. Each comes with the status kiln-serve answers it with.

use std::io::Cursor;

use image::{DynamicImage, ExtendedColorType, GrayImage, ImageBuffer, ImageFormat, Luma};
use kiln_data::fuzz::zeros_png;

use crate::load::Upload;

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    image.write_to(&mut buf, format).expect("encoding to memory");
    buf.into_inner()
}

/// The hostile uploads, built from `digit_png` (a valid PNG) and `digit` (its 28×28 pixels).
pub fn hostile_uploads(digit_png: &[u8], digit: &GrayImage) -> Vec<Upload> {
    let refused = |file: Vec<u8>| Upload { file, expect: 400 };
    let jpeg = encode(DynamicImage::ImageLuma8(digit.clone()), ImageFormat::Jpeg);
    // 2000×2000 16-bit: within every limit, but 8 MB to decode.
    let heavy = ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(2000, 2000, |x, y| Luma([((x ^ y) * 31) as u16]));
    vec![
        refused(digit_png[..digit_png.len() / 2].to_vec()),
        refused(jpeg[..jpeg.len() - 2].to_vec()),
        refused(b"GIF89a this is not an image at all".to_vec()),
        refused(Vec::new()),
        // 1×1,000,000: a few KB that a shorter-side-first resize would blow up to 28×28,000,000.
        refused(zeros_png(1, 1_000_000, ExtendedColorType::L8)),
        Upload::good(encode(DynamicImage::ImageLuma16(heavy), ImageFormat::Png)),
    ]
}

/// `good` with `hostile` mixed in so that they make about `share` of the requests, spread
/// evenly.
pub fn mix(good: &[Upload], hostile: &[Upload], share: f64) -> Vec<Upload> {
    if share <= 0.0 || hostile.is_empty() {
        return good.to_vec();
    }
    let share = share.min(0.95);
    // n_bad / (n_good + n_bad) = share, with every hostile upload used the same number of times.
    let wanted = (good.len() as f64 * share / (1.0 - share)).round().max(1.0) as usize;
    let rounds = wanted.div_ceil(hostile.len());
    let bad: Vec<&Upload> = (0..rounds).flat_map(|_| hostile.iter()).collect();
    let total = good.len() + bad.len();
    let mut out = Vec::with_capacity(total);
    let (mut g, mut b) = (0, 0);
    for i in 0..total {
        // Place a hostile upload whenever the running share falls behind.
        let due = (i + 1) * bad.len() / total;
        if b < due && b < bad.len() {
            out.push(bad[b].clone());
            b += 1;
        } else if g < good.len() {
            out.push(good[g].clone());
            g += 1;
        } else {
            out.push(bad[b].clone());
            b += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_the_share_asked_for_spread_out() {
        let good: Vec<Upload> = (0..90).map(|i| Upload::good(vec![i])).collect();
        let hostile: Vec<Upload> = (0..3)
            .map(|i| Upload {
                file: vec![200 + i],
                expect: 400,
            })
            .collect();
        let mixed = mix(&good, &hostile, 0.1);
        let bad = mixed.iter().filter(|u| u.expect == 400).count();
        // 10 wanted, rounded up to whole rounds of the three.
        assert_eq!((mixed.len(), bad), (102, 12));
        assert_eq!(mixed.iter().filter(|u| u.expect == 200).count(), 90);
        // No stretch of 20 without a hostile upload.
        assert!(mixed.windows(20).all(|w| w.iter().any(|u| u.expect == 400)));
        assert_eq!(mix(&good, &hostile, 0.0), good);
    }

    #[test]
    fn hostile_uploads_are_what_they_claim() {
        let digit = GrayImage::from_fn(28, 28, |x, y| Luma([(x * 9 + y) as u8]));
        let png = encode(DynamicImage::ImageLuma8(digit.clone()), ImageFormat::Png);
        let uploads = hostile_uploads(&png, &digit);
        for u in &uploads {
            let decoded = image::load_from_memory(&u.file);
            match u.expect {
                400 if u.file.len() > 100_000 => panic!("a refused upload should be small"),
                400 if u.file.starts_with(&[0xff, 0xd8]) => {}
                400 => {
                    let dims = decoded.as_ref().map(|i| (i.width(), i.height()));
                    // Either undecodable or the 1×1,000,000 strip.
                    assert!(decoded.is_err() || dims.unwrap() == (1, 1_000_000), "{dims:?}");
                }
                _ => assert_eq!(decoded.unwrap().width(), 2000),
            }
        }
        // The truncated JPEG still decodes with a lenient decoder; kiln-serve refuses it.
        assert!(uploads.iter().any(|u| u.file.starts_with(&[0xff, 0xd8])));
    }
}
