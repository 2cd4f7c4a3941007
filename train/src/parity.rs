//! Train–serve parity: a handful of held-out evaluation images, stored in the model package
//! as their original files with the class probabilities the trained model gives them through
//! the job's own evaluation transform. kiln-serve runs them through its decoding,
//! preprocessing and model at load and must reproduce the probabilities before it is ready,
//! so preprocessing that drifts between training and serving is caught at deployment, not by
//! users.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use rand::SeedableRng;

use kiln_data::{decode_rgb, ClassifyTransform, ImageFolder};
use kiln_models::{write_package_with, PackageConfig, PackageError, ParitySample};

use crate::error::TrainError;

/// Images per package: one per class, up to this many.
pub const PARITY_IMAGES: usize = 4;

/// The parity images of a run and their evaluation inputs.
#[derive(Debug, Clone, Default)]
pub struct ParitySet {
    files: Vec<(String, Vec<u8>)>,
    inputs: Vec<f32>,
    shape: [usize; 3],
}

impl ParitySet {
    /// Up to [`PARITY_IMAGES`] images of `folder` (the first file of each class in turn), as
    /// read from disk, and their inputs by the evaluation `transform`.
    pub fn from_folder(folder: &ImageFolder, transform: &ClassifyTransform) -> Result<Self, TrainError> {
        let classes = folder.classes().len();
        let mut picked = Vec::new();
        for class in 0..classes {
            if let Some(i) = (0..folder.len()).find(|&i| folder.sample(i).1 == class) {
                picked.push(i);
            }
            if picked.len() == PARITY_IMAGES {
                break;
            }
        }
        let mut set = Self {
            shape: transform.output_shape(),
            ..Self::default()
        };
        for (k, i) in picked.into_iter().enumerate() {
            let path = folder.sample(i).0;
            let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let img = decode_rgb(path).map_err(|msg| TrainError::Flag(format!("{}: {msg}", path.display())))?;
            // The evaluation transform draws nothing from the generator.
            set.inputs
                .extend(transform.apply(img, &mut rand::rngs::StdRng::seed_from_u64(0)));
            let name = path
                .file_name()
                .map_or("image".into(), |n| n.to_string_lossy().into_owned());
            set.files.push((format!("{k}-{name}"), bytes));
        }
        Ok(set)
    }

    /// Parity images given as files and their inputs `[n, shape…]` (for data not read from
    /// image files, such as MNIST's idx arrays).
    pub fn from_parts(files: Vec<(String, Vec<u8>)>, inputs: Vec<f32>, shape: [usize; 3]) -> Self {
        Self { files, inputs, shape }
    }

    /// One test digit per class (up to [`PARITY_IMAGES`]) of `set`, as 28×28 grayscale PNG
    /// files, and their inputs as the MNIST job normalises them.
    pub fn from_mnist(set: &kiln_data::MnistDataset) -> Result<Self, TrainError> {
        use burn::data::dataset::Dataset;
        let mut files = Vec::new();
        let mut inputs = Vec::new();
        for digit in 0..kiln_data::mnist::MNIST_CLASSES as u8 {
            if files.len() == PARITY_IMAGES {
                break;
            }
            let Some(item) = (0..set.len()).filter_map(|i| set.get(i)).find(|it| it.label == digit) else {
                continue;
            };
            let side = kiln_data::mnist::MNIST_SIDE as u32;
            let img = image::GrayImage::from_raw(side, side, item.image.to_vec()).expect("28×28 pixels");
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| TrainError::Flag(format!("encoding a parity digit: {e}")))?;
            files.push((format!("{}-digit{digit}.png", files.len()), png.into_inner()));
            inputs.extend(item.image.iter().map(|&p| kiln_data::mnist::normalize_pixel(p)));
        }
        let side = kiln_data::mnist::MNIST_SIDE;
        Ok(Self::from_parts(files, inputs, [1, side, side]))
    }

    /// How many images the set holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Writes the package of `model` at `dir` with the parity images and the probabilities
    /// `scores` gives them (`log_probs`: the scores are log-probabilities, else logits).
    pub fn write_package<B: Backend, M: Module<B>>(
        &self,
        dir: &Path,
        config: &PackageConfig,
        model: &M,
        scores: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 2>,
        log_probs: bool,
        device: &B::Device,
    ) -> Result<PackageConfig, PackageError> {
        let mut config = config.clone();
        if !self.is_empty() {
            let [c, h, w] = self.shape;
            let x = Tensor::<B, 4>::from_data(TensorData::new(self.inputs.clone(), [self.len(), c, h, w]), device);
            let out = scores(x);
            let probs = if log_probs { out.exp() } else { softmax(out, 1) };
            let classes = probs.dims()[1];
            let values: Vec<f32> = probs.into_data().convert::<f32>().to_vec().expect("f32 probabilities");
            config.kiln.parity = self
                .files
                .iter()
                .zip(values.chunks(classes))
                .map(|((file, _), p)| ParitySample {
                    file: file.clone(),
                    probabilities: p.to_vec(),
                })
                .collect();
        }
        write_package_with(dir, &config, model, &self.files)
    }
}
