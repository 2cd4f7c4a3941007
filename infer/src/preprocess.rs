//! Upload → model input, as the package's [`InputSpec`] says: decode, then either
//! torchvision's evaluation transform (convert to PIL "L" or RGB, resize the shorter side
//! (bilinear, antialiased), centre-crop, /255, normalise) or YOLOX's (letterbox with grey 114,
//! raw 0..255 values, BGR); CHW f32.

use std::io::Cursor;

use image::{DynamicImage, GenericImageView, ImageBuffer, ImageDecoder, ImageReader, Limits, Pixel};
use kiln_data::letterbox;
use kiln_data::transforms::{to_pil_luma, CenterCrop, Resize};
use kiln_models::package::{ChannelOrder, InputSpec, ResizeMode};

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

/// One upload, ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The model input, `[C, H, W]` row-major.
    pub input: Vec<f32>,
    /// The uploaded image's `[width, height]` in pixels.
    pub size: [u32; 2],
    /// Model-input pixels per image pixel: the letterbox ratio, by which model-input
    /// coordinates map back onto the image (for centre crops the resize factor, before the
    /// crop's offset).
    pub ratio: f32,
}

/// Turns uploaded image bytes into normalised `[C, H, W]` tensors for one model.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    spec: InputSpec,
    max_pixels: u64,
    /// For each model-input channel, the value of every 8-bit pixel: `(scaled − mean) / std`,
    /// computed once with the same arithmetic a per-pixel computation would use.
    values: Vec<[f32; 256]>,
}

impl Preprocessor {
    /// A preprocessor for a package's input spec, refusing images over `max_pixels`.
    pub fn new(spec: InputSpec, max_pixels: u64) -> Self {
        let values = (0..spec.channels)
            .map(|c| std::array::from_fn(|v| (spec.scale.apply(v as u8) - spec.mean[c]) / spec.std[c]))
            .collect();
        Self {
            spec,
            max_pixels,
            values,
        }
    }

    /// Values per prepared image (C × H × W).
    pub fn input_len(&self) -> usize {
        self.spec.channels * self.spec.height * self.spec.width
    }

    /// Decodes and transforms one upload.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Prepared, PreprocessError> {
        let image = self.decode(bytes)?;
        let (width, height) = image.dimensions();
        let spec = &self.spec;
        let (input, ratio) = match spec.resize {
            ResizeMode::Letterbox => {
                let boxed = letterbox(&image.into_rgb8(), &[], spec.width as u32, spec.height as u32);
                (self.to_chw(&boxed.image), boxed.ratio)
            }
            ResizeMode::CenterCrop => {
                let input = match spec.channels {
                    1 => self.center_crop(to_pil_luma(image)),
                    _ => self.center_crop(image.into_rgb8()),
                };
                (input, spec.resize_shorter as f32 / width.min(height) as f32)
            }
        };
        Ok(Prepared {
            input,
            size: [width, height],
            ratio,
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<DynamicImage, PreprocessError> {
        if bytes.is_empty() {
            return Err(PreprocessError::Empty);
        }
        let undecodable = |e: &dyn std::fmt::Display| PreprocessError::Undecodable(e.to_string());
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| undecodable(&e))?;
        let mut limits = Limits::default();
        limits.max_alloc = Some(self.max_pixels.saturating_mul(16).max(1 << 20));
        reader.limits(limits);
        // The decoder has read the header only: check the declared size before any pixel is
        // allocated.
        let decoder = reader.into_decoder().map_err(|e| undecodable(&e))?;
        let (width, height) = decoder.dimensions();
        let pixels = width as u64 * height as u64;
        if pixels > self.max_pixels {
            return Err(PreprocessError::TooManyPixels {
                width,
                height,
                pixels,
                limit: self.max_pixels,
            });
        }
        DynamicImage::from_decoder(decoder).map_err(|e| undecodable(&e))
    }

    /// The classification job's evaluation transform (kiln-data's): resize the shorter side,
    /// centre-crop, then [`Self::to_chw`].
    fn center_crop<P>(&self, img: ImageBuffer<P, Vec<u8>>) -> Vec<f32>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let (resize, crop) = (self.spec.resize_shorter as u32, self.spec.height as u32);
        if img.dimensions() == (crop, crop) && resize == crop {
            // Already the input's size: resizing and cropping would copy it unchanged.
            return self.to_chw(&img);
        }
        let resized = Resize { size: resize }.apply(&img);
        let cropped = CenterCrop { size: crop }.apply(&resized);
        self.to_chw(&cropped)
    }

    /// `[C, H, W]` values `(scaled pixel − mean) / std`, colour channels in the spec's order
    /// (on the unit scale exactly torchvision's `ToTensor` + `Normalize`).
    fn to_chw<P>(&self, img: &ImageBuffer<P, Vec<u8>>) -> Vec<f32>
    where
        P: Pixel<Subpixel = u8>,
    {
        let order: &[usize] = match (P::CHANNEL_COUNT, self.spec.channel_order) {
            (1, _) => &[0],
            (_, ChannelOrder::Rgb) => &[0, 1, 2],
            (_, ChannelOrder::Bgr) => &[2, 1, 0],
        };
        let plane = img.width() as usize * img.height() as usize;
        let pixels = img.as_raw().chunks_exact(P::CHANNEL_COUNT as usize);
        let mut out = vec![0f32; order.len() * plane];
        for ((values, &source), channel) in self.values.iter().zip(order).zip(out.chunks_exact_mut(plane)) {
            for (o, px) in channel.iter_mut().zip(pixels.clone()) {
                *o = values[px[source] as usize];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};

    fn mnist_spec() -> InputSpec {
        InputSpec::center_crop(1, 28, 28, vec![0.1307], vec![0.3081])
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
        let prepared = Preprocessor::new(mnist_spec(), 1 << 20).prepare(&bytes).unwrap();
        assert_eq!((prepared.size, prepared.ratio), ([28, 28], 1.0));
        let v = prepared.input;
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
        let v = Preprocessor::new(mnist_spec(), 1 << 20).prepare(&bytes).unwrap().input;
        let norm = |p: f32| (p / 255.0 - 0.1307) / 0.3081;
        assert_eq!(v[10 * 28 + 2], norm(255.0));
        assert_eq!(v[10 * 28 + 25], norm(0.0));
    }

    /// YOLOX's input: letterboxed to the top-left, grey 114 below, raw values, blue first.
    #[test]
    fn letterbox_input_is_raw_bgr_with_grey_padding() {
        let spec = kiln_models::yolox_package_config(kiln_models::YoloxVariant::Nano, (32, 32), &["a"])
            .kiln
            .input;
        let img = RgbImage::from_pixel(40, 20, Rgb([10, 20, 30]));
        let bytes = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png);
        let prepared = Preprocessor::new(spec, 1 << 20).prepare(&bytes).unwrap();
        // min(32 / 20, 32 / 40) = 0.8: the image becomes 32×16 at the top.
        assert_eq!((prepared.size, prepared.ratio), ([40, 20], 0.8));
        let v = prepared.input;
        assert_eq!(v.len(), 3 * 32 * 32);
        let at = |c: usize, y: usize, x: usize| v[(c * 32 + y) * 32 + x];
        for x in [0, 17, 31] {
            assert_eq!([at(0, 3, x), at(1, 3, x), at(2, 3, x)], [30.0, 20.0, 10.0]);
            assert_eq!([at(0, 16, x), at(1, 31, x), at(2, 20, x)], [114.0; 3]);
        }
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
