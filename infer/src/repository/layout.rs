//! What a model repository holds on disk: Triton's layout, `<root>/<name>/<version>/`, each
//! version folder a kiln model package. A model's versions are its folders named by a
//! positive whole number; the highest one is served (Triton's default version policy,
//! "latest 1"). Anything else in the root or a model folder is left alone.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Where the served models come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// One package folder (`--model-dir`), served as model `name`, version 1.
    Package {
        /// The package folder.
        dir: PathBuf,
        /// The model's name (the folder's name).
        name: String,
    },
    /// A model repository (`--model-repository`).
    Repository {
        /// The repository folder.
        root: PathBuf,
    },
}

/// One version folder of a model, as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionDir {
    /// The version number (the folder's name).
    pub version: u64,
    /// The package folder.
    pub dir: PathBuf,
    /// What its files looked like when scanned: a changed stamp means changed files.
    pub stamp: Stamp,
}

/// The newest modification time, total size and count of a package folder's files, down to
/// [`STAMP_DEPTH`] folders deep: enough to tell that a version was rewritten or is still
/// being copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    newest_nanos: u128,
    bytes: u64,
    files: u64,
}

/// How deep [`Stamp`] looks into a package folder (the package's `parity/` is one deep).
pub const STAMP_DEPTH: usize = 3;

/// Whether `name` may name a model: letters, digits, `_`, `-` and `.` (not only dots), so it
/// fits a URL path segment unescaped.
pub fn is_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().any(|c| c != '.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl ModelSource {
    /// The source's model names, in name order. A repository's are its sub-folders with a
    /// valid name; the others are returned as warnings.
    pub fn model_names(&self) -> Result<(Vec<String>, Vec<String>), String> {
        match self {
            Self::Package { name, .. } => Ok((vec![name.clone()], Vec::new())),
            Self::Repository { root } => {
                let entries =
                    std::fs::read_dir(root).map_err(|e| format!("model repository {}: {e}", root.display()))?;
                let mut names = Vec::new();
                let mut warnings = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| format!("model repository {}: {e}", root.display()))?;
                    if !entry.path().is_dir() {
                        continue;
                    }
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    if is_model_name(&name) {
                        names.push(name);
                    } else {
                        warnings.push(format!(
                            "{}: not a model name (letters, digits, '_', '-' and '.' only); left out",
                            entry.path().display()
                        ));
                    }
                }
                names.sort();
                Ok((names, warnings))
            }
        }
    }

    /// The version of model `name` to serve: its highest-numbered version folder, `None` when
    /// the model folder is gone, and an error naming the folder when it has no version.
    pub fn latest(&self, name: &str) -> Result<Option<VersionDir>, String> {
        match self {
            Self::Package { dir, name: own } => {
                if name != own {
                    return Ok(None);
                }
                Ok(Some(VersionDir {
                    version: 1,
                    dir: dir.clone(),
                    stamp: Stamp::of(dir),
                }))
            }
            Self::Repository { root } => {
                let folder = root.join(name);
                let entries = match std::fs::read_dir(&folder) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(format!("{}: {e}", folder.display())),
                };
                let latest = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| Some((parse_version(&e.file_name().to_string_lossy())?, e.path())))
                    .max_by_key(|(v, _)| *v);
                match latest {
                    Some((version, dir)) => Ok(Some(VersionDir {
                        version,
                        stamp: Stamp::of(&dir),
                        dir,
                    })),
                    None => Err(format!(
                        "{}: no version folder (name each version's package folder by a positive \
                         whole number: {}/1/config.json)",
                        folder.display(),
                        folder.display()
                    )),
                }
            }
        }
    }

    /// Whether models can be added, reloaded and removed (a repository; one package cannot).
    pub fn is_repository(&self) -> bool {
        matches!(self, Self::Repository { .. })
    }
}

/// A version folder's number: a positive whole number written without leading zeros.
fn parse_version(name: &str) -> Option<u64> {
    if name.starts_with('0') {
        return None;
    }
    name.parse::<u64>().ok().filter(|v| *v > 0)
}

impl Stamp {
    /// The stamp of the files under `dir` (an unreadable folder stamps as empty).
    pub fn of(dir: &Path) -> Self {
        let mut stamp = Self::default();
        stamp.add(dir, STAMP_DEPTH);
        stamp
    }

    fn add(&mut self, dir: &Path, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if depth > 1 {
                    self.add(&entry.path(), depth - 1);
                }
                continue;
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            self.newest_nanos = self.newest_nanos.max(modified);
            self.bytes += meta.len();
            self.files += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn the_highest_numbered_version_folder_is_served() {
        let root = tempfile::tempdir().unwrap();
        for v in ["1", "2", "10", "03", "0", "latest"] {
            touch(&root.path().join("digits").join(v).join("config.json"), b"{}");
        }
        let source = ModelSource::Repository {
            root: root.path().into(),
        };
        let latest = source.latest("digits").unwrap().unwrap();
        assert_eq!(latest.version, 10);
        assert_eq!(latest.dir, root.path().join("digits/10"));
        assert_eq!(source.latest("gone").unwrap(), None);
    }

    #[test]
    fn a_model_without_versions_is_an_error_naming_its_folder() {
        let root = tempfile::tempdir().unwrap();
        touch(&root.path().join("digits/config.json"), b"{}");
        let source = ModelSource::Repository {
            root: root.path().into(),
        };
        let e = source.latest("digits").unwrap_err();
        assert!(e.contains("digits") && e.contains("no version folder"), "{e}");
    }

    #[test]
    fn model_names_are_sorted_and_unusable_names_are_reported() {
        let root = tempfile::tempdir().unwrap();
        for name in ["zeta", "alpha", "has space", ".hidden"] {
            std::fs::create_dir_all(root.path().join(name)).unwrap();
        }
        touch(&root.path().join("README.md"), b"not a model");
        let source = ModelSource::Repository {
            root: root.path().into(),
        };
        let (names, warnings) = source.model_names().unwrap();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("has space"), "{warnings:?}");
        assert!(is_model_name("resnet-50_v1.2") && !is_model_name("..") && !is_model_name("a/b"));
    }

    #[test]
    fn a_rewritten_or_growing_package_changes_its_stamp() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("1");
        touch(&dir.join("config.json"), b"{}");
        let first = Stamp::of(&dir);
        assert_eq!(first, Stamp::of(&dir));
        touch(&dir.join("parity/a.png"), b"png");
        let grown = Stamp::of(&dir);
        assert_ne!(first, grown);
        touch(&dir.join("config.json"), b"{\"x\": 1}");
        assert_ne!(grown, Stamp::of(&dir));
    }

    #[test]
    fn one_package_is_version_one_of_its_own_name() {
        let root = tempfile::tempdir().unwrap();
        let source = ModelSource::Package {
            dir: root.path().into(),
            name: "model".into(),
        };
        assert_eq!(source.model_names().unwrap().0, ["model"]);
        assert_eq!(source.latest("model").unwrap().unwrap().version, 1);
        assert_eq!(source.latest("other").unwrap(), None);
        assert!(!source.is_repository());
    }
}
