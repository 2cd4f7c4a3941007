//! Upload → model input, as the package's [`InputSpec`] says: decode, then either
//! torchvision's evaluation transform (convert to PIL "L" or RGB, resize the shorter side
//! (bilinear, antialiased), centre-crop, /255, normalise) or YOLOX's (letterbox with grey 114,
//! raw 0..255 values, BGR); CHW f32.
//!
//! Every size is known from the header before a pixel is allocated: [`Preprocessor::plan`]
//! refuses an image whose declared size, or whose size after the model's resize, is over the
//! pixel limit, and estimates the working memory its preparation needs, so that the server can
//! hold concurrent decodes to a budget.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Limits, Pixel};
use kiln_data::letterbox;
use kiln_data::transforms::{resized_size, to_pil_luma, CenterCrop, Resize};
use kiln_models::package::{ChannelOrder, InputSpec, Interpolation, ResizeMode};

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
    /// The model's resize would make the image larger than the pixel limit (a 1×50,000 image
    /// whose shorter side becomes 256 pixels).
    #[error(
        "image is {width}x{height}: resizing it for the model would make it {resized_width}x{resized_height}, \
         over the limit of {limit} pixels"
    )]
    ResizeTooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Width after the resize.
        resized_width: u32,
        /// Height after the resize.
        resized_height: u32,
        /// The configured limit.
        limit: u64,
    },
    /// Preparing the image needs more working memory than the server lets all decodes share.
    #[error("image is {width}x{height}: preparing it needs {need} bytes, over the decode memory budget of {budget}")]
    OverBudget {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The estimated working memory.
        need: u64,
        /// The server's budget.
        budget: u64,
    },
}

/// What an upload's header says, before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Declared width.
    pub width: u32,
    /// Declared height.
    pub height: u32,
    /// Bytes the decode and transform hold at their peak (an estimate from above: the decoded
    /// image, its 8-bit conversion, the resampler's f32 intermediate and output, the crop and
    /// the model input).
    pub bytes: u64,
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

    /// Reads the upload's header only: its size, checked against the pixel limit before and
    /// after the model's resize, and the memory its preparation needs.
    pub fn plan(&self, bytes: &[u8]) -> Result<Plan, PreprocessError> {
        let decoder = self.header(bytes)?;
        self.plan_decoder(&decoder)
    }

    fn plan_decoder(&self, decoder: &impl ImageDecoder) -> Result<Plan, PreprocessError> {
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
        let spec = &self.spec;
        let channels = spec.channels as u64;
        let (rw, rh) = match spec.resize {
            ResizeMode::CenterCrop => resized_size(width, height, spec.resize_shorter as u32),
            ResizeMode::Letterbox | ResizeMode::Stretch => (spec.width as u32, spec.height as u32),
        };
        if rw as u64 * rh as u64 > self.max_pixels {
            return Err(PreprocessError::ResizeTooLarge {
                width,
                height,
                resized_width: rw,
                resized_height: rh,
                limit: self.max_pixels,
            });
        }
        let model_input = (spec.channels * spec.height * spec.width) as u64;
        let bytes = decoder.total_bytes()
            + pixels * 4 // the 8-bit RGB or luma conversion (RGB on the way to luma)
            + width as u64 * rh as u64 * 16 // the resampler's vertical pass (RGBA f32)
            + rw as u64 * rh as u64 * channels // the resized image
            + model_input * (1 + 4); // the crop or canvas, and the f32 input
        Ok(Plan { width, height, bytes })
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
            ResizeMode::Stretch => {
                let input = match spec.channels {
                    1 => self.stretch(to_pil_luma(image)),
                    _ => self.stretch(image.into_rgb8()),
                };
                (input, spec.height as f32 / height as f32)
            }
        };
        Ok(Prepared {
            input,
            size: [width, height],
            ratio,
        })
    }

    /// The decoder, having read the header only.
    fn header<'a>(&self, bytes: &'a [u8]) -> Result<impl ImageDecoder + 'a, PreprocessError> {
        if bytes.is_empty() {
            return Err(PreprocessError::Empty);
        }
        let undecodable = |e: &dyn std::fmt::Display| PreprocessError::Undecodable(e.to_string());
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| undecodable(&e))?;
        if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
            // zune-jpeg fills a cut-off scan with grey; PIL refuses the file ("image file is
            // truncated"), and so does kiln.
            return Err(PreprocessError::Undecodable(
                "the JPEG data is truncated (no end-of-image marker after its last scan)".into(),
            ));
        }
        let mut limits = Limits::default();
        limits.max_alloc = Some(self.max_pixels.saturating_mul(16).max(1 << 20));
        reader.limits(limits);
        reader.into_decoder().map_err(|e| undecodable(&e))
    }

    fn decode(&self, bytes: &[u8]) -> Result<DynamicImage, PreprocessError> {
        let decoder = self.header(bytes)?;
        // The header alone decides whether the image may be decoded at all.
        self.plan_decoder(&decoder)?;
        DynamicImage::from_decoder(decoder).map_err(|e| PreprocessError::Undecodable(e.to_string()))
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
        let resized = Resize { size: resize }.apply_filtered(&img, self.filter());
        let cropped = CenterCrop { size: crop }.apply(&resized);
        self.to_chw(&cropped)
    }

    /// torchvision's `Resize((height, width))`: the whole image resized to the input size
    /// (antialiased when shrinking), then [`Self::to_chw`].
    fn stretch<P>(&self, img: ImageBuffer<P, Vec<u8>>) -> Vec<f32>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let (w, h) = (self.spec.width as u32, self.spec.height as u32);
        if img.dimensions() == (w, h) {
            return self.to_chw(&img);
        }
        self.to_chw(&image::imageops::resize(&img, w, h, self.filter()))
    }

    /// The resize filter of the spec's interpolation (PIL's bilinear or bicubic).
    fn filter(&self) -> FilterType {
        match self.spec.interpolation {
            Interpolation::Bilinear => FilterType::Triangle,
            Interpolation::Bicubic => FilterType::CatmullRom,
        }
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

/// Whether a JPEG stream ends its last scan: an end-of-image marker (`FF D9`) after the last
/// start-of-scan (`FF DA`). Inside entropy-coded data every `FF` is followed by `00` or a
/// restart marker, so neither marker can occur there by chance; an embedded thumbnail's
/// markers come before the main image's scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let Some(scan) = last_scan else {
        return false;
    };
    bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

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

    /// Swin without `TEST.CROP`: the whole image squeezed to the input, so the left edge of a
    /// wide image survives, where a centre crop keeps the middle only.
    #[test]
    fn stretched_inputs_keep_the_whole_image() {
        // 40×20: the first quarter white, the rest black.
        let img = RgbImage::from_fn(40, 20, |x, _| Rgb([if x < 10 { 255 } else { 0 }; 3]));
        let bytes = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png);
        let mut spec = InputSpec::center_crop(3, 8, 8, vec![0.0; 3], vec![1.0; 3]);
        spec.interpolation = Interpolation::Bicubic;
        let cropped = Preprocessor::new(spec.clone(), 1 << 20).prepare(&bytes).unwrap().input;
        (spec.resize, spec.resize_shorter) = (ResizeMode::Stretch, 0);
        let stretched = Preprocessor::new(spec, 1 << 20).prepare(&bytes).unwrap();
        assert_eq!(stretched.input.len(), 3 * 64);
        let s = &stretched.input[..8];
        assert!(s[0] > 0.9 && s[7] < 0.02, "{s:?}");
        // The crop of the 16×8 resize starts at the original's x = 10: hardly any white.
        assert!(cropped[0] < 0.5, "{:?}", &cropped[..8]);
        assert_eq!(stretched.ratio, 8.0 / 20.0);
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

    /// A 1×50,000 image (178 bytes as PNG) would be 256×12,800,000 after a ResNet's resize:
    /// refused from the header, with both sizes.
    #[test]
    fn a_resize_past_the_pixel_limit_is_refused_before_decoding() {
        let spec = InputSpec::center_crop(3, 224, 256, vec![0.5; 3], vec![0.5; 3]);
        let p = Preprocessor::new(spec, 40_000_000);
        let thin = encode(&DynamicImage::ImageLuma8(GrayImage::new(1, 50_000)), ImageFormat::Png);
        assert_eq!(
            p.prepare(&thin),
            Err(PreprocessError::ResizeTooLarge {
                width: 1,
                height: 50_000,
                resized_width: 256,
                resized_height: 12_800_000,
                limit: 40_000_000
            })
        );
        assert_eq!(p.plan(&thin).unwrap_err(), p.prepare(&thin).unwrap_err());
    }

    /// The plan's estimate covers the decoded image, its conversion, the resampler's f32
    /// intermediate, the resized image and the model input: for a 100×200 16-bit RGBA PNG on
    /// the MNIST input, 100·200·8 + 100·200·4 + 100·56·16 + 28·56 + 784·5 bytes.
    #[test]
    fn the_plan_estimates_the_peak_memory_from_the_header() {
        let img = DynamicImage::ImageRgba16(image::ImageBuffer::new(100, 200));
        let png = encode(&img, ImageFormat::Png);
        let plan = Preprocessor::new(mnist_spec(), 1 << 20).plan(&png).unwrap();
        let expected = 100 * 200 * 8 + 100 * 200 * 4 + 100 * 56 * 16 + 28 * 56 + 784 * 5;
        assert_eq!(
            plan,
            Plan {
                width: 100,
                height: 200,
                bytes: expected
            }
        );
    }

    /// A JPEG cut inside its scan is refused (PIL: "image file is truncated"); the whole file
    /// and one with bytes after its end marker are accepted, as PIL accepts them.
    #[test]
    fn truncated_jpegs_are_refused() {
        let img = RgbImage::from_fn(64, 64, |x, y| Rgb([(x * 4) as u8, (y * 4) as u8, 9]));
        let jpeg = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let p = Preprocessor::new(mnist_spec(), 1 << 20);
        assert!(p.prepare(&jpeg).is_ok());
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"\0\0trailer");
        assert!(p.prepare(&trailing).is_ok());
        for cut in [jpeg.len() - 2, jpeg.len() / 2] {
            match p.prepare(&jpeg[..cut]) {
                Err(PreprocessError::Undecodable(msg)) => assert!(msg.contains("truncated"), "{msg}"),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }
}
