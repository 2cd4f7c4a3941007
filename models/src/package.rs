//! The model package: the folder `kiln-train` writes and `kiln-serve` reads.
//!
//! ```text
//! model/
//!   config.json         the platform's fields + a `kiln` section that rebuilds the model
//!   model.safetensors   the weights, in PyTorch's layout and names (loadable by torch too)
//! ```
//!
//! A package is written into a temporary sibling folder and renamed into place, so a
//! reader never sees half a package. Tensor names are PyTorch's state_dict keys (for a ResNet
//! torchvision's: `layer2.0.downsample.0.weight`, `bn1.running_var`, `fc.weight`, ...; for
//! YOLOX the official `yolox` package's: `backbone.backbone.stem.conv.conv.weight`,
//! `head.cls_preds.0.weight`, ...).
//!
//! Two families share the format: image classification (`model_algorithm`
//! `image_classification`, centre-cropped inputs, class probabilities) and object detection
//! (`object_detection`, YOLOX: letterboxed BGR inputs of raw pixel values, boxes, with the
//! serving thresholds in `kiln.detection`).

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::{Deserialize, Serialize};

use crate::checksum::file_sha256_hex;
use crate::tensor_check::unusable;
use crate::torch_keys::KeyScheme;

/// The package's configuration file name.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file name.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The version of the `kiln` section this code writes and reads. Fields added since version 1
/// (`input.resize`, `input.scale`, `input.channel_order`, `detection`) have defaults that
/// keep the meaning of packages written before them.
pub const FORMAT_VERSION: u32 = 1;

/// The longest side of a model input (and of a centre crop's resize) a package may ask for:
/// a 4096×4096 RGB input is 200 MB of f32 per image.
pub const MAX_INPUT_SIDE: usize = 4096;

/// The platform's `model_algorithm` of a classifier.
pub const IMAGE_CLASSIFICATION: &str = "image_classification";
/// The platform's `model_algorithm` of a detector.
pub const OBJECT_DETECTION: &str = "object_detection";

/// `config.json`: the platform's fields (`model_algorithm`, `model_type`, `runtime`, `apis`)
/// and the `kiln` section a server needs to rebuild the model without guessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageConfig {
    /// The platform's algorithm family, e.g. `image_classification`.
    pub model_algorithm: String,
    /// The platform's engine: `Custom` (kiln serves from its own image).
    pub model_type: String,
    /// A description of the runtime that wrote the package.
    pub runtime: String,
    /// The HTTP endpoints the server exposes for this model.
    pub apis: Vec<ApiSpec>,
    /// What kiln needs to rebuild and feed the model.
    pub kiln: ModelSpec,
}

/// One endpoint of the platform's `apis` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiSpec {
    /// Path, e.g. `/`.
    pub url: String,
    /// HTTP method, lower case as the platform writes it (`post`).
    pub method: String,
    /// Request body description.
    pub request: BodySpec,
    /// Response body description.
    pub response: BodySpec,
}

/// A request or response body in the platform's `apis` format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodySpec {
    /// The media type (the platform spells the key `Content-type`).
    #[serde(rename = "Content-type")]
    pub content_type: String,
    /// An optional JSON schema of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// The `kiln` section of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Version of this section's layout ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The architecture to build, e.g. `mnist_net` or `resnet50`.
    pub architecture: String,
    /// The weights file, relative to the package folder.
    pub weights: String,
    /// The weights file's SHA-256 (hex), checked on load; absent in packages written before
    /// it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// How an uploaded image becomes the model's input.
    pub input: InputSpec,
    /// Output labels in class-index order (numbers for MNIST, names for ImageFolder or COCO
    /// classes).
    pub labels: Vec<serde_json::Value>,
    /// A detector's serving thresholds; absent for classifiers (a detector without them
    /// serves with [`DetectionSpec::default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<DetectionSpec>,
    /// A Swin Transformer's shape (architecture [`SWIN_ARCHITECTURE`](crate::swin::SWIN_ARCHITECTURE)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swin: Option<crate::swin::SwinConfig>,
    /// Held-out images (files in [`PARITY_DIR`]) with the class probabilities the training
    /// job computed for them: a server must reproduce them through its own decoding,
    /// preprocessing and model before it is ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parity: Vec<ParitySample>,
}

/// The package folder holding the parity images.
pub const PARITY_DIR: &str = "parity";

/// One parity image and what the training job's model said about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParitySample {
    /// The file name inside [`PARITY_DIR`].
    pub file: String,
    /// Class probabilities in label order (softmax of the logits).
    pub probabilities: Vec<f32>,
}

/// How a detector's raw outputs become the boxes a server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectionSpec {
    /// Least score (objectness × class probability) of a reported box.
    pub conf: f32,
    /// IoU above which class-wise NMS drops the weaker of two boxes of one class.
    pub nms: f32,
}

impl Default for DetectionSpec {
    /// The YOLOX README's demo command (`tools/demo.py image ... --conf 0.25 --nms 0.45`).
    fn default() -> Self {
        Self { conf: 0.25, nms: 0.45 }
    }
}

/// How images are turned into the model's input tensor: resized to `height × width` by
/// `resize`, each value `(scaled pixel − mean) / std`, channels in `channel_order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Colour channels: 1 (8-bit grayscale, PIL's "L") or 3 (colour, in `channel_order`).
    pub channels: usize,
    /// Input height in pixels (centre crops are square: equal to `width`).
    pub height: usize,
    /// Input width in pixels.
    pub width: usize,
    /// How the image is brought to the input size (default: centre crop).
    #[serde(default)]
    pub resize: ResizeMode,
    /// Centre crop only: the shorter image side is resized to this before cropping. Absent
    /// (0) for letterboxed inputs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resize_shorter: usize,
    /// The centre crop's resize filter (default: bilinear).
    #[serde(default, skip_serializing_if = "Interpolation::is_bilinear")]
    pub interpolation: Interpolation,
    /// The pixel values' range before normalisation (default: [0, 1]).
    #[serde(default)]
    pub scale: PixelScale,
    /// Per-channel mean subtracted from the scaled values.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: Vec<f32>,
    /// Colour channel order of 3-channel inputs (default: RGB).
    #[serde(default)]
    pub channel_order: ChannelOrder,
}

/// How an image is brought to the input size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// torchvision's evaluation transform: the shorter side resized to `resize_shorter`
    /// (bilinear, antialiased), then the centre `height × width` cropped.
    #[default]
    CenterCrop,
    /// YOLOX's `preproc` (kiln-data's `letterbox`): scaled by `min(height / h, width / w)`,
    /// keeping the aspect ratio, pasted at the top-left of a `width × height` canvas of grey
    /// 114.
    Letterbox,
    /// torchvision's `Resize((height, width))`: resized to the input size whatever the aspect
    /// ratio (Swin's evaluation transform without `TEST.CROP`).
    Stretch,
}

/// The filter a centre crop's resize uses (PIL's, antialiased when shrinking).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Bilinear (torchvision's default).
    #[default]
    Bilinear,
    /// Bicubic (timm's and Swin-Transformer's evaluation transform).
    Bicubic,
}

impl Interpolation {
    fn is_bilinear(&self) -> bool {
        *self == Self::Bilinear
    }
}

/// The range of pixel values before `mean` and `std` apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelScale {
    /// Divided by 255 into [0, 1] (torchvision's `ToTensor`).
    #[default]
    Unit,
    /// The raw 8-bit values 0..255 as floats (YOLOX).
    Raw,
}

impl PixelScale {
    /// An 8-bit pixel value on this scale.
    pub fn apply(self, value: u8) -> f32 {
        match self {
            Self::Unit => value as f32 / 255.0,
            Self::Raw => value as f32,
        }
    }
}

/// The order of a colour input's channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    /// Red, green, blue (PIL, torchvision).
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV's `imread`, which YOLOX's pipeline reads with).
    Bgr,
}

impl InputSpec {
    /// A classifier's input (torchvision's evaluation transform): the shorter side resized to
    /// `resize_shorter`, the centre `size × size` cropped, pixels /255, normalised with `mean`
    /// and `std`, RGB (or grayscale for 1 channel).
    pub fn center_crop(channels: usize, size: usize, resize_shorter: usize, mean: Vec<f32>, std: Vec<f32>) -> Self {
        Self {
            channels,
            height: size,
            width: size,
            resize: ResizeMode::CenterCrop,
            resize_shorter,
            interpolation: Interpolation::Bilinear,
            scale: PixelScale::Unit,
            mean,
            std,
            channel_order: ChannelOrder::Rgb,
        }
    }
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// What went wrong reading or writing a package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON of the expected shape.
    #[error("{path}: invalid package config: {source}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The parser's error (names the line and the field).
        source: serde_json::Error,
    },
    /// The config is well-formed but describes something this build cannot serve.
    #[error("{path}: {msg}")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// What is unsupported.
        msg: String,
    },
    /// The weights file is unreadable or does not fit the architecture.
    #[error("{path}: weights do not load: {msg}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The store's error.
        msg: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl PackageConfig {
    /// An image-classification package answering `POST /` (multipart/form-data, field
    /// `image`) with JSON.
    pub fn image_classification(architecture: &str, input: InputSpec, labels: Vec<serde_json::Value>) -> Self {
        Self::new(IMAGE_CLASSIFICATION, "image", None, architecture, input, labels, None)
    }

    /// An object-detection package answering `POST /` (multipart/form-data, the platform's
    /// field `images`) with the platform's detection body, served with `detection`'s
    /// thresholds.
    pub fn object_detection(
        architecture: &str,
        input: InputSpec,
        labels: Vec<serde_json::Value>,
        detection: DetectionSpec,
    ) -> Self {
        // The platform's built-in object-detection output, with numeric scores.
        let response = serde_json::json!({
            "type": "object",
            "properties": {
                "detection_classes": { "type": "array", "items": { "type": "string" } },
                "detection_boxes": {
                    "type": "array",
                    "items": { "type": "array", "minItems": 4, "maxItems": 4, "items": { "type": "number" } }
                },
                "detection_scores": { "type": "array", "items": { "type": "number" } }
            }
        });
        Self::new(
            OBJECT_DETECTION,
            "images",
            Some(response),
            architecture,
            input,
            labels,
            Some(detection),
        )
    }

    fn new(
        algorithm: &str,
        field: &str,
        response: Option<serde_json::Value>,
        architecture: &str,
        input: InputSpec,
        labels: Vec<serde_json::Value>,
        detection: Option<DetectionSpec>,
    ) -> Self {
        Self {
            model_algorithm: algorithm.into(),
            model_type: "Custom".into(),
            runtime: format!("kiln_{}-burn_0.21.0", env!("CARGO_PKG_VERSION")),
            apis: vec![ApiSpec {
                url: "/".into(),
                method: "post".into(),
                request: BodySpec {
                    content_type: "multipart/form-data".into(),
                    data: Some(serde_json::json!({
                        "type": "object",
                        "properties": { field: { "type": "file" } }
                    })),
                },
                response: BodySpec {
                    content_type: "application/json".into(),
                    data: response,
                },
            }],
            kiln: ModelSpec {
                format_version: FORMAT_VERSION,
                architecture: architecture.into(),
                weights: WEIGHTS_FILE.into(),
                weights_sha256: None,
                input,
                labels,
                detection,
                swin: None,
                parity: Vec::new(),
            },
        }
    }

    /// Reads and checks `<dir>/config.json`.
    pub fn read(dir: &Path) -> Result<Self, PackageError> {
        let path = dir.join(CONFIG_FILE);
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let config: Self = serde_json::from_str(&text).map_err(|source| PackageError::Config {
            path: path.clone(),
            source,
        })?;
        config.validate(&path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), PackageError> {
        let unsupported = |msg: String| {
            Err(PackageError::Unsupported {
                path: path.to_path_buf(),
                msg,
            })
        };
        let k = &self.kiln;
        if k.format_version != FORMAT_VERSION {
            return unsupported(format!(
                "kiln.format_version {} is not supported (this build reads {FORMAT_VERSION})",
                k.format_version
            ));
        }
        let i = &k.input;
        if ![1, 3].contains(&i.channels) || i.mean.len() != i.channels || i.std.len() != i.channels {
            return unsupported(format!(
                "kiln.input: channels must be 1 or 3 with one mean and std each (channels {}, mean {:?}, std {:?})",
                i.channels, i.mean, i.std
            ));
        }
        if i.std.iter().any(|s| *s <= 0.0) || i.height == 0 || i.width == 0 {
            return unsupported("kiln.input: sizes and std must be positive".into());
        }
        if i.height > MAX_INPUT_SIDE || i.width > MAX_INPUT_SIDE || i.resize_shorter > MAX_INPUT_SIDE {
            return unsupported(format!(
                "kiln.input: {}x{} (resize_shorter {}) is over the largest input side kiln serves, {MAX_INPUT_SIDE}",
                i.width, i.height, i.resize_shorter
            ));
        }
        match i.resize {
            ResizeMode::CenterCrop if i.resize_shorter == 0 => {
                return unsupported("kiln.input: a centre crop needs a positive resize_shorter".into());
            }
            ResizeMode::CenterCrop if i.height != i.width => {
                return unsupported(format!(
                    "kiln.input: {}x{} is not square (inputs are centre crops of one size)",
                    i.width, i.height
                ));
            }
            ResizeMode::Letterbox if i.channels != 3 => {
                return unsupported("kiln.input: letterboxed inputs have 3 channels".into());
            }
            _ => {}
        }
        if let Some(d) = &k.detection {
            let unit = 0.0..=1.0;
            if !unit.contains(&d.conf) || !unit.contains(&d.nms) {
                return unsupported(format!(
                    "kiln.detection: conf {} and nms {} must be within [0, 1]",
                    d.conf, d.nms
                ));
            }
        }
        if k.labels.is_empty() {
            return unsupported("kiln.labels is empty".into());
        }
        if Path::new(&k.weights).components().count() != 1 {
            return unsupported(format!(
                "kiln.weights {:?} must be a file name inside the package",
                k.weights
            ));
        }
        Ok(())
    }
}

/// Writes `model`'s weights and `config` as a package at `dir`, atomically: everything goes
/// to a temporary sibling folder first, which then replaces `dir` by rename. Returns the
/// config as written (with the weights' checksum).
pub fn write_package<B: Backend, M: Module<B>>(
    dir: &Path,
    config: &PackageConfig,
    model: &M,
) -> Result<PackageConfig, PackageError> {
    write_package_with(dir, config, model, &[])
}

/// [`write_package`] with `parity_files` (name, bytes) written into [`PARITY_DIR`]; every
/// file `config.kiln.parity` names must be among them.
pub fn write_package_with<B: Backend, M: Module<B>>(
    dir: &Path,
    config: &PackageConfig,
    model: &M,
    parity_files: &[(String, Vec<u8>)],
) -> Result<PackageConfig, PackageError> {
    if let Some(missing) = config
        .kiln
        .parity
        .iter()
        .find(|p| !parity_files.iter().any(|(name, _)| *name == p.file))
    {
        return Err(PackageError::Unsupported {
            path: dir.join(PARITY_DIR).join(&missing.file),
            msg: "kiln.parity names a file the package writer was not given".into(),
        });
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = package_name(dir);
    recover_package(dir)?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let written = match fill_package(&tmp, config, model, parity_files) {
        Ok(written) => written,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // A folder cannot be renamed over a non-empty one: move the old package aside first
    // ([`recover_package`] puts it back if the process dies before the new one is in place).
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    fs::rename(&tmp, dir).map_err(io_err(dir))?;
    sync_dir(parent);
    if had_old {
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(written)
}

fn package_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// Makes a folder's renames durable (best effort: not every file system syncs folders).
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Cleans up after a writer of the package at `dir` that died: its temporary folders
/// (`.<name>.tmp-<pid>`) are removed, and an old package it had moved aside
/// (`.<name>.old-<pid>`) is put back where no package is, else removed. Folders of writers
/// still running are left alone. Returns whether anything was found.
pub fn recover_package(dir: &Path) -> Result<bool, PackageError> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = package_name(dir);
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(false);
    };
    let mut found = false;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&format!(".{name}.")) else {
            continue;
        };
        let (kind, pid) = match rest.split_once('-') {
            Some((kind @ ("tmp" | "old"), pid)) => (kind, pid.parse::<u32>().ok()),
            _ => continue,
        };
        if pid.is_some_and(process_alive) {
            continue;
        }
        found = true;
        let path = entry.path();
        if kind == "old" && !dir.exists() {
            fs::rename(&path, dir).map_err(io_err(dir))?;
        } else {
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    Ok(found)
}

/// Whether process `pid` is running (this one counts as not running: its own leftovers are
/// from an earlier call that failed).
fn process_alive(pid: u32) -> bool {
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

fn fill_package<B: Backend, M: Module<B>>(
    dir: &Path,
    config: &PackageConfig,
    model: &M,
    parity_files: &[(String, Vec<u8>)],
) -> Result<PackageConfig, PackageError> {
    if !parity_files.is_empty() {
        let parity = dir.join(PARITY_DIR);
        fs::create_dir(&parity).map_err(io_err(&parity))?;
        for (name, bytes) in parity_files {
            let safe = Path::new(name).file_name().is_some_and(|n| n == name.as_str());
            let path = parity.join(name);
            if !safe {
                return Err(PackageError::Unsupported {
                    path,
                    msg: "a parity file name must be a plain file name".into(),
                });
            }
            fs::write(&path, bytes)
                .and_then(|()| fs::File::open(&path)?.sync_all())
                .map_err(io_err(&path))?;
        }
    }
    let weights = dir.join(&config.kiln.weights);
    let mut store = SafetensorsStore::from_file(&weights)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(KeyScheme::for_architecture(&config.kiln.architecture).save_remapper())
        .skip_enum_variants(true)
        .metadata("architecture", config.kiln.architecture.clone());
    model.save_into(&mut store).map_err(|e| PackageError::Weights {
        path: weights.clone(),
        msg: e.to_string(),
    })?;
    let mut written = config.clone();
    written.kiln.weights_sha256 = Some(file_sha256_hex(&weights).map_err(io_err(&weights))?);
    let cfg_path = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(&written).expect("config serialises");
    fs::write(&cfg_path, json + "\n").map_err(io_err(&cfg_path))?;
    for f in [&weights, &cfg_path] {
        fs::File::open(f).and_then(|f| f.sync_all()).map_err(io_err(f))?;
    }
    sync_dir(dir);
    Ok(written)
}

/// Reads a package's config and checks its weights file against the recorded checksum.
pub fn verify_package(dir: &Path) -> Result<PackageConfig, PackageError> {
    let config = PackageConfig::read(dir)?;
    verify_weights(dir, &config)?;
    Ok(config)
}

fn verify_weights(dir: &Path, config: &PackageConfig) -> Result<(), PackageError> {
    let path = dir.join(&config.kiln.weights);
    if !path.is_file() {
        return Err(PackageError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "weights file missing"),
        });
    }
    if let Some(expected) = &config.kiln.weights_sha256 {
        let actual = file_sha256_hex(&path).map_err(io_err(&path))?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(PackageError::Weights {
                path,
                msg: format!(
                    "checksum mismatch: the file's SHA-256 is {actual}, config.json records {expected} \
                     (the file is damaged or was replaced)"
                ),
            });
        }
    }
    Ok(())
}

/// Loads a package's weights into `model` (built from the same architecture), checking that
/// every parameter is present with the right shape and that the file holds nothing else
/// (PyTorch's `num_batches_tracked` counters aside).
pub fn load_weights<B: Backend, M: Module<B>>(
    dir: &Path,
    config: &PackageConfig,
    mut model: M,
) -> Result<M, PackageError> {
    verify_weights(dir, config)?;
    let path = dir.join(&config.kiln.weights);
    let scheme = KeyScheme::for_architecture(&config.kiln.architecture);
    let mut store = SafetensorsStore::from_file(&path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .remap(scheme.load_remapper())
        .skip_enum_variants(true)
        .validate(false)
        .allow_partial(true);
    let weights_err = |msg: String| PackageError::Weights {
        path: path.clone(),
        msg,
    };
    let result = model.load_from(&mut store).map_err(|e| weights_err(e.to_string()))?;
    scheme.check_load(&result, &[]).map_err(weights_err)?;
    if let Some(msg) = unusable(&model) {
        return Err(weights_err(msg));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{net_package_config, NetConfig};
    use crate::yolox::{yolox_package_config, Yolox, YoloxVariant};
    use burn::prelude::*;
    use burn_flex::Flex;
    use burn_store::ModuleStore;

    #[test]
    fn round_trip_gives_identical_outputs() {
        let device = Default::default();
        let cfg = NetConfig::new();
        let net = cfg.init::<Flex>(&device);
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("model");
        let config = net_package_config(&cfg);
        let written = write_package(&pkg, &config, &net).unwrap();

        let read = PackageConfig::read(&pkg).unwrap();
        assert_eq!(read, written);
        let sha = written.kiln.weights_sha256.as_deref().unwrap();
        assert_eq!(sha, crate::checksum::file_sha256_hex(&pkg.join(WEIGHTS_FILE)).unwrap());
        assert_eq!(
            PackageConfig {
                kiln: ModelSpec {
                    weights_sha256: None,
                    ..read.kiln.clone()
                },
                ..read.clone()
            },
            config
        );
        let fresh = cfg.init::<Flex>(&device);
        let loaded = load_weights(&pkg, &read, fresh).unwrap();
        let x = Tensor::<Flex, 4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        assert_eq!(net.forward(x.clone()).into_data(), loaded.forward(x).into_data());
        // Only the package is left: no temporary folders beside it.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("model")]);
    }

    #[test]
    fn rewrite_replaces_an_existing_package() {
        let device = Default::default();
        let cfg = NetConfig::new();
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("model");
        let config = net_package_config(&cfg);
        write_package(&pkg, &config, &cfg.init::<Flex>(&device)).unwrap();
        fs::write(pkg.join("stale"), b"x").unwrap();
        write_package(&pkg, &config, &cfg.init::<Flex>(&device)).unwrap();
        assert!(!pkg.join("stale").exists());
        assert!(pkg.join(WEIGHTS_FILE).is_file());
    }

    #[test]
    fn config_has_the_platform_fields() {
        let config = net_package_config(&NetConfig::new());
        let v = serde_json::to_value(&config).unwrap();
        assert_eq!(v["model_algorithm"], "image_classification");
        assert_eq!(v["apis"][0]["url"], "/");
        assert_eq!(v["apis"][0]["method"], "post");
        assert_eq!(v["apis"][0]["request"]["Content-type"], "multipart/form-data");
        assert_eq!(v["apis"][0]["response"]["Content-type"], "application/json");
        assert_eq!(v["kiln"]["labels"][2], 2);
        assert!(v["runtime"].as_str().unwrap().starts_with("kiln_"));
    }

    /// Flipped bytes in the weights, or a weights file swapped for another model's, fail the
    /// recorded checksum, naming the file.
    #[test]
    fn damaged_weights_fail_the_checksum() {
        let device = Default::default();
        let cfg = NetConfig::new();
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("model");
        let config = write_package(&pkg, &net_package_config(&cfg), &cfg.init::<Flex>(&device)).unwrap();
        let w = pkg.join(WEIGHTS_FILE);
        let mut bytes = fs::read(&w).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40; // inside the last tensor's data
        fs::write(&w, &bytes).unwrap();
        for e in [
            verify_package(&pkg).unwrap_err(),
            load_weights(&pkg, &config, cfg.init::<Flex>(&device)).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(
                msg.contains("model.safetensors") && msg.contains("checksum mismatch"),
                "{msg}"
            );
        }
    }

    /// Weights that load but cannot run are refused at load with the cause.
    #[test]
    fn non_finite_weights_are_refused_at_load() {
        let device = Default::default();
        let cfg = NetConfig::new();
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("model");
        struct Poison;
        impl<B: Backend> burn::module::ModuleMapper<B> for Poison {
            fn map_float<const D: usize>(
                &mut self,
                param: burn::module::Param<Tensor<B, D>>,
            ) -> burn::module::Param<Tensor<B, D>> {
                param.map(|t| t.mul_scalar(f32::NAN))
            }
        }
        let net = cfg.init::<Flex>(&device).map(&mut Poison);
        let config = write_package(&pkg, &net_package_config(&cfg), &net).unwrap();
        let msg = load_weights(&pkg, &config, cfg.init::<Flex>(&device))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("conv1.weight") && msg.contains("NaN"), "{msg}");
    }

    /// A package whose weights file holds a tensor in a type other than f32 is refused at load,
    /// naming the tensor and its type.
    #[test]
    fn an_f16_tensor_is_refused_at_load_naming_it() {
        let device = Default::default();
        let cfg = NetConfig::new();
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("model");
        struct Half;
        impl<B: Backend> burn::module::ModuleMapper<B> for Half {
            fn map_float<const D: usize>(
                &mut self,
                param: burn::module::Param<Tensor<B, D>>,
            ) -> burn::module::Param<Tensor<B, D>> {
                param.map(|t| t.cast(burn::tensor::FloatDType::F16))
            }
        }
        let net = cfg.init::<Flex>(&device).map(&mut Half);
        let config = write_package(&pkg, &net_package_config(&cfg), &net).unwrap();
        let msg = load_weights(&pkg, &config, cfg.init::<Flex>(&device))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(WEIGHTS_FILE) && msg.contains("conv1.weight") && msg.contains("F16"),
            "{msg}"
        );
    }

    /// A writer that died leaves its temporary folder, or the old package moved aside with no
    /// package in its place: the next write (or a resume) cleans up and puts the old one back.
    #[test]
    fn a_dead_writers_leftovers_are_recovered() {
        let device = Default::default();
        let cfg = NetConfig::new();
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("model");
        write_package(&pkg, &net_package_config(&cfg), &cfg.init::<Flex>(&device)).unwrap();
        // No process has pid u32::MAX - 1.
        let dead = u32::MAX - 1;
        fs::create_dir(dir.path().join(format!(".model.tmp-{dead}"))).unwrap();
        fs::rename(&pkg, dir.path().join(format!(".model.old-{dead}"))).unwrap();
        assert!(recover_package(&pkg).unwrap());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("model")]);
        verify_package(&pkg).unwrap();
        assert!(!recover_package(&pkg).unwrap());
    }

    #[test]
    fn inputs_over_the_largest_side_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = net_package_config(&NetConfig::new());
        config.kiln.input.height = 100_000;
        config.kiln.input.width = 100_000;
        fs::write(dir.path().join(CONFIG_FILE), serde_json::to_string(&config).unwrap()).unwrap();
        let msg = PackageConfig::read(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("100000x100000") && msg.contains("4096"), "{msg}");
    }

    #[test]
    fn bad_packages_are_named_errors() {
        let device = Default::default();
        let cfg = NetConfig::new();
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("model");
        let config = net_package_config(&cfg);
        write_package(&pkg, &config, &cfg.init::<Flex>(&device)).unwrap();

        // Weights for a 3-class head do not fit a 10-class model.
        let small = NetConfig::new().with_num_classes(3);
        let other = dir.path().join("other");
        write_package(&other, &net_package_config(&small), &small.init::<Flex>(&device)).unwrap();
        let e = load_weights(&other, &config, cfg.init::<Flex>(&device)).unwrap_err();
        assert!(matches!(e, PackageError::Weights { .. }), "{e}");
        assert!(e.to_string().contains("model.safetensors"), "{e}");

        // Truncated weights.
        let w = pkg.join(WEIGHTS_FILE);
        let bytes = fs::read(&w).unwrap();
        fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
        let e = load_weights(&pkg, &config, cfg.init::<Flex>(&device)).unwrap_err();
        assert!(matches!(e, PackageError::Weights { .. }), "{e}");

        // Broken and unsupported configs.
        let c = pkg.join(CONFIG_FILE);
        fs::write(&c, "{\"model_algorithm\": 3}").unwrap();
        let e = PackageConfig::read(&pkg).unwrap_err();
        assert!(
            matches!(e, PackageError::Config { .. }) && e.to_string().contains("config.json"),
            "{e}"
        );
        let mut v = serde_json::to_value(&config).unwrap();
        v["kiln"]["format_version"] = 99.into();
        fs::write(&c, v.to_string()).unwrap();
        let e = PackageConfig::read(&pkg).unwrap_err();
        assert!(e.to_string().contains("format_version 99"), "{e}");
        let e = PackageConfig::read(dir.path()).unwrap_err();
        assert!(matches!(e, PackageError::Io { .. }), "{e}");
    }

    #[test]
    fn yolox_round_trip_gives_identical_outputs() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        for (variant, seed) in [(YoloxVariant::Nano, 1), (YoloxVariant::S, 2)] {
            Flex::seed(&device, seed);
            let model = Yolox::<Flex>::new(variant, 3, &device);
            let pkg = dir.path().join(variant.to_string());
            let config = yolox_package_config(variant, (64, 96), &["person", "bicycle", "car"]);
            let written = write_package(&pkg, &config, &model).unwrap();

            let read = PackageConfig::read(&pkg).unwrap();
            assert_eq!(read, written);
            // A fresh model from another seed: equal outputs mean every tensor was loaded.
            Flex::seed(&device, seed + 10);
            let loaded = load_weights(&pkg, &read, Yolox::<Flex>::new(variant, 3, &device)).unwrap();
            let x = Tensor::<Flex, 4>::random([1, 3, 64, 96], burn::tensor::Distribution::Uniform(0.0, 255.0), &device);
            for (a, b) in model.forward(x.clone()).into_iter().zip(loaded.forward(x)) {
                assert_eq!(a.into_data(), b.into_data(), "{variant}");
            }
        }
    }

    /// The weights of yolox-nano (depthwise) and yolox-s (plain convs) are the official
    /// model's state_dict: every key with its shape, as the `yolox` 0.3.0 package's PyTorch
    /// modules list them (`tests/fixtures/`).
    #[test]
    fn yolox_weights_are_the_official_state_dict() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let official = [
            (YoloxVariant::Nano, include_str!("../tests/fixtures/yolox-nano-80.keys")),
            (YoloxVariant::S, include_str!("../tests/fixtures/yolox-s-80.keys")),
        ];
        let names: Vec<String> = (0..80).map(|i| i.to_string()).collect();
        for (variant, fixture) in official {
            let pkg = dir.path().join(variant.to_string());
            let config = yolox_package_config(variant, (64, 64), &names);
            write_package(&pkg, &config, &Yolox::<Flex>::new(variant, 80, &device)).unwrap();
            let mut store = SafetensorsStore::from_file(pkg.join(WEIGHTS_FILE));
            let ours: Vec<String> = store
                .get_all_snapshots()
                .unwrap()
                .iter()
                .map(|(key, s)| {
                    let shape: Vec<String> = s.shape.iter().map(usize::to_string).collect();
                    format!("{key} {}", shape.join(","))
                })
                .collect();
            let theirs: Vec<&str> = fixture.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(ours, theirs, "{variant}");
        }
    }

    #[test]
    fn a_classification_config_written_before_the_detection_fields_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let old = format!(
            r#"{{
  "model_algorithm": "image_classification",
  "model_type": "Custom",
  "runtime": "kiln_{}-burn_0.21.0",
  "apis": [{{"url": "/", "method": "post",
             "request": {{"Content-type": "multipart/form-data",
                          "data": {{"type": "object", "properties": {{"image": {{"type": "file"}}}}}}}},
             "response": {{"Content-type": "application/json"}}}}],
  "kiln": {{"format_version": 1, "architecture": "mnist_net", "weights": "model.safetensors",
            "input": {{"channels": 1, "height": 28, "width": 28, "resize_shorter": 28,
                       "mean": [0.1307], "std": [0.3081]}},
            "labels": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}}
}}"#,
            env!("CARGO_PKG_VERSION")
        );
        fs::write(dir.path().join(CONFIG_FILE), old).unwrap();
        let read = PackageConfig::read(dir.path()).unwrap();
        assert_eq!(read, net_package_config(&NetConfig::new()));
        let input = &read.kiln.input;
        assert_eq!(
            (input.resize, input.scale, input.channel_order),
            (ResizeMode::CenterCrop, PixelScale::Unit, ChannelOrder::Rgb)
        );
        assert_eq!(read.kiln.detection, None);
    }

    #[test]
    fn detection_config_has_the_platform_fields() {
        let config = yolox_package_config(YoloxVariant::S, (640, 640), &["person", "bicycle"]);
        let v = serde_json::to_value(&config).unwrap();
        assert_eq!(v["model_algorithm"], "object_detection");
        assert_eq!(v["apis"][0]["request"]["data"]["properties"]["images"]["type"], "file");
        let response = &v["apis"][0]["response"]["data"]["properties"];
        assert_eq!(response["detection_boxes"]["items"]["maxItems"], 4);
        assert_eq!(response["detection_scores"]["items"]["type"], "number");
        let k = &v["kiln"];
        assert_eq!(k["architecture"], "yolox-s");
        assert_eq!(k["labels"], serde_json::json!(["person", "bicycle"]));
        let text = serde_json::to_string(&config).unwrap();
        assert!(text.contains(r#""detection":{"conf":0.25,"nms":0.45}"#), "{text}");
        assert_eq!(
            k["input"],
            serde_json::json!({
                "channels": 3, "height": 640, "width": 640, "resize": "letterbox", "scale": "raw",
                "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channel_order": "bgr"
            })
        );
        // Classification packages say nothing about detection.
        let v = serde_json::to_value(net_package_config(&NetConfig::new())).unwrap();
        assert!(v["kiln"].get("detection").is_none());
        assert_eq!(v["kiln"]["input"]["resize"], "center_crop");
    }

    #[test]
    fn inconsistent_inputs_and_thresholds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = yolox_package_config(YoloxVariant::Nano, (64, 64), &["person", "bicycle"]);
        let refused = |edit: &dyn Fn(&mut serde_json::Value), expected: &str| {
            let mut v = serde_json::to_value(&config).unwrap();
            edit(&mut v);
            fs::write(dir.path().join(CONFIG_FILE), v.to_string()).unwrap();
            let e = PackageConfig::read(dir.path()).unwrap_err();
            assert!(
                matches!(e, PackageError::Unsupported { .. }) && e.to_string().contains(expected),
                "{e}"
            );
        };
        refused(&|v| v["kiln"]["detection"]["conf"] = 1.5.into(), "conf 1.5");
        refused(&|v| v["kiln"]["detection"]["nms"] = (-0.1).into(), "nms -0.1");
        refused(
            &|v| {
                v["kiln"]["input"]["channels"] = 1.into();
                v["kiln"]["input"]["mean"] = serde_json::json!([0.0]);
                v["kiln"]["input"]["std"] = serde_json::json!([1.0]);
            },
            "letterboxed inputs have 3 channels",
        );
        refused(
            &|v| v["kiln"]["input"]["resize"] = "center_crop".into(),
            "resize_shorter",
        );
        let mut v = serde_json::to_value(&config).unwrap();
        v["kiln"]["input"]["resize"] = "squash".into();
        fs::write(dir.path().join(CONFIG_FILE), v.to_string()).unwrap();
        let e = PackageConfig::read(dir.path()).unwrap_err();
        assert!(
            matches!(e, PackageError::Config { .. }) && e.to_string().contains("squash"),
            "{e}"
        );
    }
}
