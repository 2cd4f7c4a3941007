//! The ImageNet-22K layout of microsoft/Swin-Transformer (`IN22KDATASET`): images anywhere
//! below `--data-path`, listed by a map file, a JSON array of `[relative path, class index]`
//! pairs (`ILSVRC2011fall_whole_map_train.txt`, `…_map_val.txt`), classes `0..21841`.
//!
//! The official loader replaces an image it cannot read with random noise; kiln's loader names
//! the file instead, and this reader refuses a map entry that could not be a file below the
//! root (absolute, or climbing out with `..`) or whose class is out of range, naming the entry.

use std::fs::File;
use std::io::BufReader;
use std::path::{Component, Path, PathBuf};

use crate::image_folder::ImageFolder;

/// The official map files' prefix.
pub const IN22K_PREFIX: &str = "ILSVRC2011fall_whole";
/// The official number of ImageNet-22K classes.
pub const IN22K_CLASSES: usize = 21841;

/// What is wrong with a map file.
#[derive(Debug, thiserror::Error)]
pub enum MapFileError {
    /// The file cannot be opened.
    #[error("{path}: {source}")]
    Io {
        /// The map file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a JSON array of `[path, class]` pairs.
    #[error("{path}: not a JSON list of [relative path, class index] pairs: {msg}")]
    Format {
        /// The map file.
        path: PathBuf,
        /// The parser's message, with the line and column.
        msg: String,
    },
    /// One entry cannot be used.
    #[error("{path}: entry {index} ({entry:?}, {class}): {msg}")]
    Entry {
        /// The map file.
        path: PathBuf,
        /// The entry's position, from 0.
        index: usize,
        /// The entry's path.
        entry: String,
        /// The entry's class.
        class: i64,
        /// What is wrong.
        msg: String,
    },
    /// The file lists nothing.
    #[error("{path}: the map lists no images")]
    Empty {
        /// The map file.
        path: PathBuf,
    },
}

/// Reads the map file `root/<map>`: every entry's image is `root/<path>`, its class an index
/// below `classes`; the dataset's class names are the indices (`"0"`, `"1"`, …).
pub fn open_map_file(root: &Path, map: &str, classes: usize) -> Result<ImageFolder, MapFileError> {
    let path = root.join(map);
    let file = File::open(&path).map_err(|source| MapFileError::Io {
        path: path.clone(),
        source,
    })?;
    let entries: Vec<(String, i64)> =
        serde_json::from_reader(BufReader::new(file)).map_err(|e| MapFileError::Format {
            path: path.clone(),
            msg: e.to_string(),
        })?;
    if entries.is_empty() {
        return Err(MapFileError::Empty { path });
    }
    let mut samples = Vec::with_capacity(entries.len());
    for (index, (entry, class)) in entries.into_iter().enumerate() {
        let refuse = |msg: String| MapFileError::Entry {
            path: path.clone(),
            index,
            entry: entry.clone(),
            class,
            msg,
        };
        if class < 0 || class as usize >= classes {
            return Err(refuse(format!("class index outside 0..{classes}")));
        }
        let relative = Path::new(&entry);
        let inside = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if entry.is_empty() || !inside {
            return Err(refuse("not a relative path below the data folder".into()));
        }
        samples.push((root.join(relative), class as usize));
    }
    let names = (0..classes).map(|c| c.to_string()).collect();
    Ok(ImageFolder::from_samples(root, names, samples))
}

/// The official ImageNet-22K training and validation sets below `data`.
pub fn open_in22k_splits(data: &Path) -> Result<(ImageFolder, ImageFolder), MapFileError> {
    let train = open_map_file(data, &format!("{IN22K_PREFIX}_map_train.txt"), IN22K_CLASSES)?;
    let val = open_map_file(data, &format!("{IN22K_PREFIX}_map_val.txt"), IN22K_CLASSES)?;
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> (tempfile::TempDir, Result<ImageFolder, MapFileError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("map.txt"), text).unwrap();
        let read = open_map_file(dir.path(), "map.txt", 3);
        (dir, read)
    }

    #[test]
    fn entries_become_samples_below_the_root() {
        let (dir, read) = map(r#"[["n01440764/a.JPEG", 0], ["n01443537/b.JPEG", 2], ["./c.png", 1]]"#);
        let set = read.unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.classes(), ["0", "1", "2"]);
        assert_eq!(set.sample(1), (dir.path().join("n01443537/b.JPEG").as_path(), 2));
        assert_eq!(set.sample(2).1, 1);
    }

    #[test]
    fn bad_maps_name_the_file_and_the_entry() {
        let err = |text: &str| map(text).1.unwrap_err().to_string();
        assert!(err(r#"{"a": 1}"#).contains("not a JSON list"), "{}", err(r#"{"a": 1}"#));
        assert!(err(r#"[["a.png"]]"#).contains("line 1"), "{}", err(r#"[["a.png"]]"#));
        let out_of_range = err(r#"[["a.png", 0], ["b.png", 3]]"#);
        assert!(
            out_of_range.contains("entry 1") && out_of_range.contains("outside 0..3"),
            "{out_of_range}"
        );
        assert!(err(r#"[["a.png", -1]]"#).contains("outside"));
        let climbing = err(r#"[["../etc/passwd", 0]]"#);
        assert!(
            climbing.contains("entry 0") && climbing.contains("not a relative path"),
            "{climbing}"
        );
        assert!(err(r#"[["/etc/passwd", 0]]"#).contains("not a relative path"));
        assert!(err("[]").contains("no images"));
        let missing = open_map_file(Path::new("/nonexistent"), "map.txt", 3)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent/map.txt"), "{missing}");
    }
}
