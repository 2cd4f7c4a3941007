//! COCO detection data: `annotations/instances_<split>.json` and the `<split>/` image folder,
//! read into images with corner-form boxes and contiguous class indices (ascending category
//! id, as YOLOX numbers them). Crowd boxes are kept apart: they are no training target, only
//! regions evaluation ignores.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Deserialize;

use crate::coco_eval::{CocoGroundTruth, GtBox};

/// Why a COCO folder cannot be used; every variant names the file and the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum CocoError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The annotations file is not COCO instances json.
    #[error("{path}: not COCO instances json: {source}")]
    Json {
        /// The annotations file.
        path: PathBuf,
        /// What the parser found.
        source: serde_json::Error,
    },
    /// An entry contradicts the rest of the file.
    #[error("{path}: {entry}: {problem}")]
    Inconsistent {
        /// The annotations file.
        path: PathBuf,
        /// The entry, e.g. `annotation 42`, `image 7`, `category 3`.
        entry: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An image file cannot be decoded.
    #[error("{path}: cannot decode the image: {source}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
}

/// A box in pixels, corner form `[x1, y1, x2, y2]`, with its contiguous class index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CocoBox {
    /// Class index, `0..classes`, by ascending category id.
    pub class: usize,
    /// `[x1, y1, x2, y2]`, clipped to the image.
    pub xyxy: [f32; 4],
}

/// One image and its annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoImage {
    /// COCO image id.
    pub id: u64,
    /// The image file.
    pub path: PathBuf,
    /// Width in pixels, as the annotations give it.
    pub width: u32,
    /// Height in pixels, as the annotations give it.
    pub height: u32,
    /// The training targets: every non-crowd box.
    pub boxes: Vec<CocoBox>,
    /// Crowd regions (`iscrowd: 1`).
    pub crowd: Vec<CocoBox>,
}

/// One split of a COCO folder.
#[derive(Debug, Clone)]
pub struct CocoDataset {
    images: Vec<CocoImage>,
    /// `(category id, name)` by ascending id: position = class index.
    categories: Vec<(u64, String)>,
    /// The annotations as evaluation reads them (json boxes and areas, crowds included).
    ground_truth: CocoGroundTruth,
}

#[derive(Deserialize)]
struct Json {
    images: Vec<JsonImage>,
    annotations: Vec<JsonAnnotation>,
    categories: Vec<JsonCategory>,
}

#[derive(Deserialize)]
struct JsonImage {
    id: u64,
    file_name: String,
    width: f64,
    height: f64,
}

#[derive(Deserialize)]
struct JsonAnnotation {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    /// The segmentation's area (evaluation's size ranges); the box's when absent.
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct JsonCategory {
    id: u64,
    name: String,
}

impl CocoDataset {
    /// Opens split `split` (`train2017`, `val2017`) of the COCO folder `root`:
    /// `root/annotations/instances_<split>.json` and images under `root/<split>/`.
    pub fn open(root: &Path, split: &str) -> Result<Self, CocoError> {
        let json = root.join("annotations").join(format!("instances_{split}.json"));
        Self::from_files(&json, &root.join(split))
    }

    /// Reads an instances json whose `file_name`s are relative to `image_dir`.
    pub fn from_files(json_path: &Path, image_dir: &Path) -> Result<Self, CocoError> {
        let text = std::fs::read(json_path).map_err(|source| CocoError::Io {
            path: json_path.to_path_buf(),
            source,
        })?;
        let json: Json = serde_json::from_slice(&text).map_err(|source| CocoError::Json {
            path: json_path.to_path_buf(),
            source,
        })?;
        Builder { path: json_path }.build(json, image_dir)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The images, in the json's order.
    pub fn images(&self) -> &[CocoImage] {
        &self.images
    }

    /// Class names by class index.
    pub fn class_names(&self) -> Vec<&str> {
        self.categories.iter().map(|(_, n)| n.as_str()).collect()
    }

    /// The split's annotations, images and categories as COCO evaluation reads them: boxes
    /// `[x, y, w, h]` and areas exactly as the json gives them, crowd regions included.
    pub fn ground_truth(&self) -> &CocoGroundTruth {
        &self.ground_truth
    }

    /// The COCO category id of class index `class`.
    pub fn category_id(&self, class: usize) -> Option<u64> {
        self.categories.get(class).map(|(id, _)| *id)
    }

    /// Decodes image `index` as RGB.
    ///
    /// # Panics
    /// If `index` is out of range.
    pub fn load_rgb(&self, index: usize) -> Result<RgbImage, CocoError> {
        let path = &self.images[index].path;
        let bytes = std::fs::read(path).map_err(|source| CocoError::Io {
            path: path.clone(),
            source,
        })?;
        image::load_from_memory(&bytes)
            .map(|img| img.to_rgb8())
            .map_err(|source| CocoError::Decode {
                path: path.clone(),
                source,
            })
    }
}

/// Checks and converts a parsed json, naming `path` in its errors.
struct Builder<'a> {
    path: &'a Path,
}

impl Builder<'_> {
    fn error(&self, entry: String, problem: impl Into<String>) -> CocoError {
        CocoError::Inconsistent {
            path: self.path.to_path_buf(),
            entry,
            problem: problem.into(),
        }
    }

    fn build(&self, json: Json, image_dir: &Path) -> Result<CocoDataset, CocoError> {
        let mut categories: Vec<(u64, String)> = json.categories.into_iter().map(|c| (c.id, c.name)).collect();
        categories.sort_by_key(|(id, _)| *id);
        if let Some(w) = categories.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(self.error(format!("category {}", w[0].0), "appears twice"));
        }
        let class_of: HashMap<u64, usize> = categories.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();

        let mut ground_truth = CocoGroundTruth {
            image_ids: json.images.iter().map(|i| i.id).collect(),
            category_ids: categories.iter().map(|(id, _)| *id).collect(),
            annotations: Vec::with_capacity(json.annotations.len()),
        };
        let mut images = Vec::with_capacity(json.images.len());
        let mut index_of = HashMap::with_capacity(json.images.len());
        for img in json.images {
            let entry = format!("image {}", img.id);
            if !(img.width >= 1.0 && img.height >= 1.0 && img.width.is_finite() && img.height.is_finite()) {
                return Err(self.error(entry, format!("non-positive size {}×{}", img.width, img.height)));
            }
            if index_of.insert(img.id, images.len()).is_some() {
                return Err(self.error(entry, "appears twice"));
            }
            images.push(CocoImage {
                id: img.id,
                path: image_dir.join(&img.file_name),
                width: img.width as u32,
                height: img.height as u32,
                boxes: Vec::new(),
                crowd: Vec::new(),
            });
        }

        for ann in json.annotations {
            let entry = format!("annotation {}", ann.id);
            let &at = index_of
                .get(&ann.image_id)
                .ok_or_else(|| self.error(entry.clone(), format!("image {} is not in `images`", ann.image_id)))?;
            let &class = class_of.get(&ann.category_id).ok_or_else(|| {
                self.error(
                    entry.clone(),
                    format!("category {} is not in `categories`", ann.category_id),
                )
            })?;
            let image = &mut images[at];
            let xyxy = corners(ann.bbox, image.width, image.height).ok_or_else(|| {
                self.error(
                    entry,
                    format!("bbox {:?} has no positive area inside the image", ann.bbox),
                )
            })?;
            ground_truth.annotations.push(GtBox {
                image_id: ann.image_id,
                category_id: ann.category_id,
                bbox: ann.bbox,
                area: ann.area.unwrap_or(ann.bbox[2] * ann.bbox[3]),
                iscrowd: ann.iscrowd != 0,
            });
            let target = if ann.iscrowd != 0 {
                &mut image.crowd
            } else {
                &mut image.boxes
            };
            target.push(CocoBox { class, xyxy });
        }
        Ok(CocoDataset {
            images,
            categories,
            ground_truth,
        })
    }
}

/// `[x, y, w, h]` → `[x1, y1, x2, y2]` clipped to the image, or `None` when nothing of
/// positive area remains (or a value is not finite).
fn corners([x, y, w, h]: [f64; 4], width: u32, height: u32) -> Option<[f32; 4]> {
    if ![x, y, w, h].iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 {
        return None;
    }
    let x1 = x.max(0.0);
    let y1 = y.max(0.0);
    let x2 = (x + w).min(width as f64);
    let y2 = (y + h).min(height as f64);
    (x2 > x1 && y2 > y1).then_some([x1 as f32, y1 as f32, x2 as f32, y2 as f32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_convert_and_clip() {
        assert_eq!(
            corners([10.0, 20.0, 30.0, 40.0], 640, 480),
            Some([10.0, 20.0, 40.0, 60.0])
        );
        assert_eq!(
            corners([-5.0, 470.0, 20.0, 30.0], 640, 480),
            Some([0.0, 470.0, 15.0, 480.0])
        );
        assert_eq!(corners([1.0, 1.0, 0.0, 5.0], 640, 480), None);
        assert_eq!(corners([700.0, 1.0, 5.0, 5.0], 640, 480), None);
        assert_eq!(corners([f64::NAN, 1.0, 5.0, 5.0], 640, 480), None);
    }
}
