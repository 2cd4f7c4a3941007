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
//! torchvision's: `layer2.0.downsample.0.weight`, `bn1.running_var`, `fc.weight`, ...).

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::{Deserialize, Serialize};

use crate::torch_keys::{check_load, load_remapper, save_remapper};

/// The package's configuration file name.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file name.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The version of the `kiln` section this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

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
    /// How an uploaded image becomes the model's input.
    pub input: InputSpec,
    /// Output labels in class-index order (numbers for MNIST, names for ImageFolder classes).
    pub labels: Vec<serde_json::Value>,
}

/// How images are turned into the model's input tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Colour channels: 1 (8-bit grayscale, PIL's "L") or 3 (RGB).
    pub channels: usize,
    /// Input height in pixels (inputs are square centre crops: equal to `width`).
    pub height: usize,
    /// Input width in pixels.
    pub width: usize,
    /// The shorter image side is resized (bilinear) to this before cropping.
    pub resize_shorter: usize,
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: Vec<f32>,
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
    /// An image-classification package answering `POST /` with multipart/form-data → JSON.
    pub fn image_classification(architecture: &str, input: InputSpec, labels: Vec<serde_json::Value>) -> Self {
        Self {
            model_algorithm: "image_classification".into(),
            model_type: "Custom".into(),
            runtime: format!("kiln_{}-burn_0.21.0", env!("CARGO_PKG_VERSION")),
            apis: vec![ApiSpec {
                url: "/".into(),
                method: "post".into(),
                request: BodySpec {
                    content_type: "multipart/form-data".into(),
                    data: Some(serde_json::json!({
                        "type": "object",
                        "properties": { "image": { "type": "file" } }
                    })),
                },
                response: BodySpec {
                    content_type: "application/json".into(),
                    data: None,
                },
            }],
            kiln: ModelSpec {
                format_version: FORMAT_VERSION,
                architecture: architecture.into(),
                weights: WEIGHTS_FILE.into(),
                input,
                labels,
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
        if i.std.iter().any(|s| *s <= 0.0) || i.height == 0 || i.width == 0 || i.resize_shorter == 0 {
            return unsupported("kiln.input: sizes and std must be positive".into());
        }
        if i.height != i.width {
            return unsupported(format!(
                "kiln.input: {}x{} is not square (inputs are centre crops of one size)",
                i.width, i.height
            ));
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
/// to a temporary sibling folder first, which then replaces `dir` by rename.
pub fn write_package<B: Backend, M: Module<B>>(
    dir: &Path,
    config: &PackageConfig,
    model: &M,
) -> Result<(), PackageError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let written = fill_package(&tmp, config, model);
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // A folder cannot be renamed over a non-empty one: move the old package aside first.
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    fs::rename(&tmp, dir).map_err(io_err(dir))?;
    if had_old {
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}

fn fill_package<B: Backend, M: Module<B>>(dir: &Path, config: &PackageConfig, model: &M) -> Result<(), PackageError> {
    let weights = dir.join(&config.kiln.weights);
    let mut store = SafetensorsStore::from_file(&weights)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(save_remapper())
        .skip_enum_variants(true)
        .metadata("architecture", config.kiln.architecture.clone());
    model.save_into(&mut store).map_err(|e| PackageError::Weights {
        path: weights.clone(),
        msg: e.to_string(),
    })?;
    let cfg_path = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(config).expect("config serialises");
    fs::write(&cfg_path, json + "\n").map_err(io_err(&cfg_path))?;
    for f in [&weights, &cfg_path] {
        fs::File::open(f).and_then(|f| f.sync_all()).map_err(io_err(f))?;
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
    let path = dir.join(&config.kiln.weights);
    if !path.is_file() {
        return Err(PackageError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "weights file missing"),
        });
    }
    let mut store = SafetensorsStore::from_file(&path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .remap(load_remapper())
        .skip_enum_variants(true)
        .validate(false)
        .allow_partial(true);
    let weights_err = |msg: String| PackageError::Weights {
        path: path.clone(),
        msg,
    };
    let result = model.load_from(&mut store).map_err(|e| weights_err(e.to_string()))?;
    check_load(&result, &[]).map_err(weights_err)?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{net_package_config, NetConfig};
    use burn::prelude::*;
    use burn_flex::Flex;

    #[test]
    fn round_trip_gives_identical_outputs() {
        let device = Default::default();
        let cfg = NetConfig::new();
        let net = cfg.init::<Flex>(&device);
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("model");
        let config = net_package_config(&cfg);
        write_package(&pkg, &config, &net).unwrap();

        let read = PackageConfig::read(&pkg).unwrap();
        assert_eq!(read, config);
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
}
