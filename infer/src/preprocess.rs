//! Upload → model input, with torchvision's semantics: decode, convert (PIL "L" or RGB),
//! resize the shorter side (bilinear, antialiased), centre-crop, /255, normalise; CHW f32.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageReader, Limits, Pixel};
use kiln_data::transforms::{to_pil_luma, to_tensor_normalized, CenterCrop, Resize};
use kiln_models::package::InputSpec;

/// Why an upload cannot be turned into a model input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreprocessError {
    /// The file has no bytes.
    #[error("the file is empty")]
    Empty,
    /// The bytes are not an image in a supported format, or are corrupt.
    #[error("not a decodable image: {0}")]
    Undecodable(String),
    /// The image declares more pixels than the server accepts (decompression-bomb guard).
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {limit}")]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// width × height.
        pixels: u64,
        /// The configured limit.
        limit: u64,
    },
}

/// Turns uploaded image bytes into normalised `[C, H, W]` tensors for one model.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    spec: InputSpec,
    max_pixels: u64,
}

impl Preprocessor {
    /// A preprocessor for a package's input spec, refusing images over `max_pixels`.
    pub fn new(spec: InputSpec, max_pixels: u64) -> Self {
        Self { spec, max_pixels }
    }

    /// Values per prepared image (C × H × W).
    pub fn input_len(&self) -> usize {
        self.spec.channels * self.spec.height * self.spec.width
    }

    /// Decodes and transforms one upload.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Vec<f32>, PreprocessError> {
        let image = self.decode(bytes)?;
        Ok(match self.spec.channels {
            1 => self.transform(to_pil_luma(image)),
            _ => self.transform(image.into_rgb8()),
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<DynamicImage, PreprocessError> {
        if bytes.is_empty() {
            return Err(PreprocessError::Empty);
        }
        let undecodable = |e: &dyn std::fmt::Display| PreprocessError::Undecodable(e.to_string());
        let reader = || {
            ImageReader::new(Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| undecodable(&e))
        };
        // Check the declared size from the header before allocating anything for pixels.
        let (width, height) = reader()?.into_dimensions().map_err(|e| undecodable(&e))?;
        let pixels = width as u64 * height as u64;
        if pixels > self.max_pixels {
            return Err(PreprocessError::TooManyPixels {
                width,
                height,
                pixels,
                limit: self.max_pixels,
            });
        }
        let mut limits = Limits::default();
        limits.max_alloc = Some(self.max_pixels.saturating_mul(16).max(1 << 20));
        let mut r = reader()?;
        r.limits(limits);
        r.decode().map_err(|e| undecodable(&e))
    }

    /// The training job's evaluation transform (kiln-data's): resize the shorter side,
    /// centre-crop, /255, normalise.
    fn transform<P>(&self, img: ImageBuffer<P, Vec<u8>>) -> Vec<f32>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let resized = Resize {
            size: self.spec.resize_shorter as u32,
        }
        .apply(&img);
        let cropped = CenterCrop {
            size: self.spec.height as u32,
        }
        .apply(&resized);
        to_tensor_normalized(&cropped, &self.spec.mean, &self.spec.std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};

    fn mnist_spec() -> InputSpec {
        InputSpec {
            channels: 1,
            height: 28,
            width: 28,
            resize_shorter: 28,
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, fmt).unwrap();
        buf.into_inner()
    }

    #[test]
    fn png_28_is_exactly_the_normalised_pixels() {
        let mut g = GrayImage::new(28, 28);
        g.put_pixel(3, 5, Luma([255]));
        g.put_pixel(27, 27, Luma([51]));
        let bytes = encode(&DynamicImage::ImageLuma8(g), ImageFormat::Png);
        let v = Preprocessor::new(mnist_spec(), 1 << 20).prepare(&bytes).unwrap();
        assert_eq!(v.len(), 784);
        let norm = |p: f32| (p / 255.0 - 0.1307) / 0.3081;
        assert_eq!(v[5 * 28 + 3], norm(255.0));
        assert_eq!(v[27 * 28 + 27], norm(51.0));
        assert_eq!(v[0], norm(0.0));
    }

    #[test]
    fn larger_rgb_image_is_resized_and_centre_cropped() {
        // 56×84 RGB: left half white, right half black; after resize → 28×42 and crop rows 7..35.
        let img = RgbImage::from_fn(
            56,
            84,
            |x, _| {
                if x < 28 {
                    Rgb([255, 255, 255])
                } else {
                    Rgb([0, 0, 0])
                }
            },
        );
        let bytes = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png);
        let v = Preprocessor::new(mnist_spec(), 1 << 20).prepare(&bytes).unwrap();
        let norm = |p: f32| (p / 255.0 - 0.1307) / 0.3081;
        assert_eq!(v[10 * 28 + 2], norm(255.0));
        assert_eq!(v[10 * 28 + 25], norm(0.0));
    }

    #[test]
    fn bad_uploads_are_typed_errors() {
        let p = Preprocessor::new(mnist_spec(), 100 * 100);
        assert_eq!(p.prepare(&[]), Err(PreprocessError::Empty));
        assert!(matches!(
            p.prepare(b"hello, not an image"),
            Err(PreprocessError::Undecodable(_))
        ));
        let big = encode(&DynamicImage::ImageLuma8(GrayImage::new(101, 100)), ImageFormat::Png);
        assert!(matches!(
            p.prepare(&big),
            Err(PreprocessError::TooManyPixels { pixels: 10100, .. })
        ));
        let png = encode(&DynamicImage::ImageLuma8(GrayImage::new(28, 28)), ImageFormat::Png);
        assert!(matches!(
            p.prepare(&png[..png.len() / 2]),
            Err(PreprocessError::Undecodable(_))
        ));
    }

    /// CRC-32 (IEEE), as PNG chunks use it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A valid PNG header claiming 60000×60000 pixels is refused from the header alone, before
    /// any pixel buffer is allocated.
    #[test]
    fn decompression_bomb_header_is_refused() {
        let mut png = encode(&DynamicImage::ImageLuma8(GrayImage::new(1, 1)), ImageFormat::Png);
        // IHDR: length at 8..12, type + data at 12..29 (width 16..20, height 20..24), CRC 29..33.
        png[16..20].copy_from_slice(&60000u32.to_be_bytes());
        png[20..24].copy_from_slice(&60000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let p = Preprocessor::new(mnist_spec(), 40_000_000);
        assert_eq!(
            p.prepare(&png),
            Err(PreprocessError::TooManyPixels {
                width: 60000,
                height: 60000,
                pixels: 3_600_000_000,
                limit: 40_000_000
            })
        );
    }
}
