//! torchvision's `ImageFolder`: `root/<class>/<image>` trees, one class per sub-folder.
//!
//! Classes are the sorted names of `root`'s sub-folders; a class's samples are its image files
//! (every file below its folder, nested folders included, as torchvision walks them: folders
//! in path order, files by name). Unlike torchvision, hidden files and folders (names starting
//! with `.`, e.g. `.ipynb_checkpoints`) are skipped.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The file extensions read as images (torchvision's `IMG_EXTENSIONS`), matched
/// case-insensitively.
pub const IMG_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// What is wrong with an image folder or one of its files.
#[derive(Debug, thiserror::Error)]
pub enum ImageFolderError {
    /// A folder is missing or cannot be listed.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The root has no (non-hidden) sub-folders, so there are no classes.
    #[error("{root}: no class sub-folders (expected {root}/<class>/<image>)")]
    NoClasses {
        /// The folder searched.
        root: PathBuf,
    },
    /// A class folder holds no file with an image extension.
    #[error("{dir}: no images with extensions {}", IMG_EXTENSIONS.join(", "))]
    NoImages {
        /// The class folder.
        dir: PathBuf,
    },
    /// A class required by [`ImageFolder::open_with_classes`] has no folder.
    #[error("{root}: class folder {class:?} is missing (expected classes: {expected})")]
    MissingClass {
        /// The folder searched.
        root: PathBuf,
        /// The missing class.
        class: String,
        /// The required classes, comma-separated.
        expected: String,
    },
    /// A folder holds a class that [`ImageFolder::open_with_classes`] did not ask for.
    #[error("{root}: unexpected class folder {class:?} (expected classes: {expected})")]
    ExtraClass {
        /// The folder searched.
        root: PathBuf,
        /// The unexpected class.
        class: String,
        /// The required classes, comma-separated.
        expected: String,
    },
    /// An image file cannot be read or decoded.
    #[error("{path}: cannot decode image: {msg}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        msg: String,
    },
}

/// An image classification dataset laid out as `root/<class>/<image>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
}

impl ImageFolder {
    /// Reads `root`: classes are its sorted sub-folder names, class index = position.
    pub fn open(root: &Path) -> Result<Self, ImageFolderError> {
        let classes = find_classes(root)?;
        Self::open_with_classes(root, &classes)
    }

    /// Reads `root`, which must hold exactly the folders of `classes`; class index = position
    /// in `classes` (used for `val/`, whose classes must be those of `train/`).
    pub fn open_with_classes(root: &Path, classes: &[String]) -> Result<Self, ImageFolderError> {
        check_classes(root, &find_classes(root)?, classes)?;
        let mut samples = Vec::new();
        for (index, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let files = class_files(&dir)?;
            if files.is_empty() {
                return Err(ImageFolderError::NoImages { dir });
            }
            samples.extend(files.into_iter().map(|path| (path, index)));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes: classes.to_vec(),
            samples,
        })
    }

    /// A dataset of `samples` (files and class indices into `classes`) below `root`, as another
    /// reader (the ImageNet-22K map files) lists them.
    pub(crate) fn from_samples(root: &Path, classes: Vec<String>, samples: Vec<(PathBuf, usize)>) -> Self {
        Self {
            root: root.to_path_buf(),
            classes,
            samples,
        }
    }

    /// The folder read.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names; a sample's target is an index into this list.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no samples (only possible after [`ImageFolder::subset`] with 0).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `i`-th sample: its file and class index. Panics if `i >= len()`, like slice indexing.
    pub fn sample(&self, i: usize) -> (&Path, usize) {
        let (path, class) = &self.samples[i];
        (path, *class)
    }

    /// The first `per_class` samples of every class (for small test slices).
    pub fn subset(&self, per_class: usize) -> ImageFolder {
        let mut taken = vec![0usize; self.classes.len()];
        let samples = self
            .samples
            .iter()
            .filter(|(_, class)| {
                taken[*class] += 1;
                taken[*class] <= per_class
            })
            .cloned()
            .collect();
        Self {
            root: self.root.clone(),
            classes: self.classes.clone(),
            samples,
        }
    }
}

/// Reads `data/train` and `data/val`; val must have exactly train's classes.
pub fn open_splits(data: &Path) -> Result<(ImageFolder, ImageFolder), ImageFolderError> {
    let train = ImageFolder::open(&data.join("train"))?;
    let val = ImageFolder::open_with_classes(&data.join("val"), train.classes())?;
    Ok((train, val))
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn is_image(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    IMG_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(ext))
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, ImageFolderError> {
    let io = |source| ImageFolderError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let entries = fs::read_dir(dir).map_err(io)?;
    let entries: Vec<_> = entries.collect::<Result<_, _>>().map_err(io)?;
    Ok(entries.into_iter().filter(|e| !is_hidden(&e.file_name())).collect())
}

/// Sorted names of the sub-folders of `root` (symbolic links followed), hidden ones skipped.
fn find_classes(root: &Path) -> Result<Vec<String>, ImageFolderError> {
    let mut classes: Vec<String> = read_dir(root)?
        .into_iter()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if classes.is_empty() {
        return Err(ImageFolderError::NoClasses {
            root: root.to_path_buf(),
        });
    }
    classes.sort();
    Ok(classes)
}

fn check_classes(root: &Path, found: &[String], expected: &[String]) -> Result<(), ImageFolderError> {
    let found: BTreeSet<&String> = found.iter().collect();
    let wanted: BTreeSet<&String> = expected.iter().collect();
    let list = || expected.join(", ");
    if let Some(class) = wanted.difference(&found).next() {
        return Err(ImageFolderError::MissingClass {
            root: root.to_path_buf(),
            class: class.to_string(),
            expected: list(),
        });
    }
    if let Some(class) = found.difference(&wanted).next() {
        return Err(ImageFolderError::ExtraClass {
            root: root.to_path_buf(),
            class: class.to_string(),
            expected: list(),
        });
    }
    Ok(())
}

/// A class folder's image files, in torchvision's order: `sorted(os.walk(dir))` (folders by
/// path), then each folder's files by name. Nested symbolic links to folders are not followed.
fn class_files(dir: &Path) -> Result<Vec<PathBuf>, ImageFolderError> {
    let mut folders = Vec::new();
    walk(dir, &mut folders)?;
    folders.sort_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    Ok(folders.into_iter().flat_map(|(_, files)| files).collect())
}

/// Appends `(dir, its sorted image files)` and the same for every sub-folder.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<PathBuf>)>) -> Result<(), ImageFolderError> {
    let mut files = Vec::new();
    for entry in read_dir(dir)? {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, out)?;
        } else if is_image(&path) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    out.push((dir.to_path_buf(), files));
    Ok(())
}
