//! The idx ("SN3", Pascal Vincent) array format used by MNIST, raw or gzip-compressed.
//!
//! Layout: a big-endian magic `0x00 0x00 TT ND` (`TT` the element type, `ND` the number of
//! dimensions), then `ND` big-endian `u32` sizes, then the elements, big-endian, row-major.
//! Gzip is recognised by its magic bytes (`1f 8b`), never by the file name.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The element type of an idx file, from the third byte of its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxType {
    /// 0x08: unsigned byte.
    U8,
    /// 0x09: signed byte.
    I8,
    /// 0x0B: big-endian 16-bit signed integer.
    I16,
    /// 0x0C: big-endian 32-bit signed integer.
    I32,
    /// 0x0D: big-endian IEEE 754 single.
    F32,
    /// 0x0E: big-endian IEEE 754 double.
    F64,
}

impl IdxType {
    /// The type for a type code, or `None` for a code the format does not define.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0x08 => Some(Self::U8),
            0x09 => Some(Self::I8),
            0x0B => Some(Self::I16),
            0x0C => Some(Self::I32),
            0x0D => Some(Self::F32),
            0x0E => Some(Self::F64),
            _ => None,
        }
    }

    /// The type code written in the magic number.
    pub fn code(self) -> u8 {
        match self {
            Self::U8 => 0x08,
            Self::I8 => 0x09,
            Self::I16 => 0x0B,
            Self::I32 => 0x0C,
            Self::F32 => 0x0D,
            Self::F64 => 0x0E,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::I16 => 2,
            Self::I32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

/// The elements of an idx array, in their stored type.
#[derive(Debug, Clone, PartialEq)]
pub enum IdxData {
    /// Unsigned bytes (MNIST images and labels).
    U8(Vec<u8>),
    /// Signed bytes.
    I8(Vec<i8>),
    /// 16-bit integers.
    I16(Vec<i16>),
    /// 32-bit integers.
    I32(Vec<i32>),
    /// Single-precision floats.
    F32(Vec<f32>),
    /// Double-precision floats.
    F64(Vec<f64>),
}

impl IdxData {
    /// The element type of these values.
    pub fn idx_type(&self) -> IdxType {
        match self {
            Self::U8(_) => IdxType::U8,
            Self::I8(_) => IdxType::I8,
            Self::I16(_) => IdxType::I16,
            Self::I32(_) => IdxType::I32,
            Self::F32(_) => IdxType::F32,
            Self::F64(_) => IdxType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An n-dimensional array read from an idx file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// The size of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: IdxData,
}

impl IdxArray {
    /// The elements as bytes, if the array is of type u8.
    pub fn as_u8(&self) -> Option<&[u8]> {
        match &self.data {
            IdxData::U8(v) => Some(v),
            _ => None,
        }
    }

    /// Serialises the array in idx layout (uncompressed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0, 0, self.data.idx_type().code(), self.dims.len() as u8];
        for &d in &self.dims {
            out.extend_from_slice(&(d as u32).to_be_bytes());
        }
        match &self.data {
            IdxData::U8(v) => out.extend_from_slice(v),
            IdxData::I8(v) => out.extend(v.iter().map(|x| *x as u8)),
            IdxData::I16(v) => v.iter().for_each(|x| out.extend(x.to_be_bytes())),
            IdxData::I32(v) => v.iter().for_each(|x| out.extend(x.to_be_bytes())),
            IdxData::F32(v) => v.iter().for_each(|x| out.extend(x.to_be_bytes())),
            IdxData::F64(v) => v.iter().for_each(|x| out.extend(x.to_be_bytes())),
        }
        out
    }
}

/// What is wrong with an idx file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file starts with a gzip header but its stream is corrupt or cut short.
    #[error("{path}: corrupt or truncated gzip stream: {source}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// The file is shorter than the 4-byte magic number plus its dimension sizes.
    #[error("{path}: truncated header: {len} bytes, the header needs {needed}")]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Bytes present (after decompression).
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// The first two bytes of the magic number are not zero.
    #[error("{path}: bad magic number 0x{magic:08x}: an idx file starts with two zero bytes")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The four magic bytes as read.
        magic: u32,
    },
    /// The element type code is not one of the six the format defines.
    #[error("{path}: unknown element type 0x{code:02x} (expected 0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e)")]
    UnknownType {
        /// The file.
        path: PathBuf,
        /// The type byte.
        code: u8,
    },
    /// The magic number declares zero dimensions.
    #[error("{path}: the header declares 0 dimensions")]
    NoDimensions {
        /// The file.
        path: PathBuf,
    },
    /// The dimension sizes multiply to more elements than memory can address.
    #[error("{path}: dimensions {dims:?} overflow the addressable size")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The declared dimensions.
        dims: Vec<usize>,
    },
    /// The data section is shorter or longer than the dimensions require.
    #[error("{path}: dimensions {dims:?} of {elem} need {expected} data bytes, found {found}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The declared dimensions.
        dims: Vec<usize>,
        /// The element type's name.
        elem: &'static str,
        /// Data bytes the header implies.
        expected: usize,
        /// Data bytes present.
        found: usize,
    },
}

/// Reads an idx file, decompressing it first if it is gzip (detected by content).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray, IdxError> {
    let path = path.as_ref();
    let bytes = read_maybe_gzip(path)?;
    parse_idx(&bytes, path)
}

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut raw = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut raw)).map_err(io)?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|source| IdxError::Gzip {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out)
}

/// Parses idx bytes (already decompressed); `path` only names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, IdxError> {
    let path_buf = || path.to_path_buf();
    if bytes.len() < 4 {
        return Err(IdxError::TruncatedHeader {
            path: path_buf(),
            len: bytes.len(),
            needed: 4,
        });
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(IdxError::BadMagic {
            path: path_buf(),
            magic,
        });
    }
    let elem = IdxType::from_code(bytes[2]).ok_or(IdxError::UnknownType {
        path: path_buf(),
        code: bytes[2],
    })?;
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err(IdxError::NoDimensions { path: path_buf() });
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(IdxError::TruncatedHeader {
            path: path_buf(),
            len: bytes.len(),
            needed: header,
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(elem.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| IdxError::TooLarge {
            path: path_buf(),
            dims: dims.clone(),
        })?;
    let body = &bytes[header..];
    if body.len() != expected {
        return Err(IdxError::SizeMismatch {
            path: path_buf(),
            dims,
            elem: elem_name(elem),
            expected,
            found: body.len(),
        });
    }
    let data = decode_elements(elem, body);
    Ok(IdxArray { dims, data })
}

fn elem_name(elem: IdxType) -> &'static str {
    match elem {
        IdxType::U8 => "u8",
        IdxType::I8 => "i8",
        IdxType::I16 => "i16",
        IdxType::I32 => "i32",
        IdxType::F32 => "f32",
        IdxType::F64 => "f64",
    }
}

/// Converts a big-endian data section (whose length is already checked) to typed values.
fn decode_elements(elem: IdxType, body: &[u8]) -> IdxData {
    fn be<const N: usize, T>(body: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        body.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
            .collect()
    }
    match elem {
        IdxType::U8 => IdxData::U8(body.to_vec()),
        IdxType::I8 => IdxData::I8(body.iter().map(|&b| b as i8).collect()),
        IdxType::I16 => IdxData::I16(be(body, i16::from_be_bytes)),
        IdxType::I32 => IdxData::I32(be(body, i32::from_be_bytes)),
        IdxType::F32 => IdxData::F32(be(body, f32::from_be_bytes)),
        IdxType::F64 => IdxData::F64(be(body, f64::from_be_bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn reads_every_element_type_big_endian() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(Vec<u8>, IdxData)> = vec![
            (vec![0, 0, 0x08, 1, 0, 0, 0, 2, 7, 255], IdxData::U8(vec![7, 255])),
            (vec![0, 0, 0x09, 1, 0, 0, 0, 2, 0xff, 0x80], IdxData::I8(vec![-1, -128])),
            (
                vec![0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xff, 0xfe],
                IdxData::I16(vec![0x0102, -2]),
            ),
            (
                vec![0, 0, 0x0C, 1, 0, 0, 0, 1, 0x80, 0, 0, 0],
                IdxData::I32(vec![i32::MIN]),
            ),
            // 0x3fc00000 = 1.5f32, 0xc0200000 = -2.5f32
            (
                vec![0, 0, 0x0D, 1, 0, 0, 0, 2, 0x3f, 0xc0, 0, 0, 0xc0, 0x20, 0, 0],
                IdxData::F32(vec![1.5, -2.5]),
            ),
            // 0x3fd0000000000000 = 0.25f64
            (
                vec![0, 0, 0x0E, 1, 0, 0, 0, 1, 0x3f, 0xd0, 0, 0, 0, 0, 0, 0],
                IdxData::F64(vec![0.25]),
            ),
        ];
        for (i, (bytes, want)) in cases.into_iter().enumerate() {
            let p = write(dir.path(), &format!("t{i}"), &bytes);
            let arr = read_idx(&p).unwrap();
            assert_eq!(arr.data, want, "case {i}");
        }
    }

    #[test]
    fn reads_any_number_of_dimensions_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let arr = IdxArray {
            dims: vec![2, 1, 3, 2],
            data: IdxData::I16((0..12).map(|x| x * 300 - 1000).collect()),
        };
        let p = write(dir.path(), "four-d", &arr.to_bytes());
        assert_eq!(read_idx(&p).unwrap(), arr);
    }

    #[test]
    fn gzip_is_detected_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let arr = IdxArray {
            dims: vec![2, 2],
            data: IdxData::U8(vec![1, 2, 3, 4]),
        };
        // Compressed file without a .gz name, and a raw file with one.
        let gz = write(dir.path(), "plain-name", &gzip(&arr.to_bytes()));
        let raw = write(dir.path(), "looks.gz", &arr.to_bytes());
        assert_eq!(read_idx(gz).unwrap(), arr);
        assert_eq!(read_idx(raw).unwrap(), arr);
    }

    fn err_of(bytes: &[u8]) -> (IdxError, String) {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad-file", bytes);
        let e = read_idx(&p).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bad-file"), "message must name the file: {msg}");
        (e, msg)
    }

    #[test]
    fn wrong_magic_is_reported() {
        let (e, msg) = err_of(&[0x12, 0x34, 0x08, 1, 0, 0, 0, 0]);
        assert!(matches!(e, IdxError::BadMagic { magic: 0x1234_0801, .. }), "{e:?}");
        assert!(msg.contains("0x12340801"), "{msg}");
    }

    #[test]
    fn unknown_type_is_reported() {
        let (e, msg) = err_of(&[0, 0, 0x0A, 1, 0, 0, 0, 0]);
        assert!(matches!(e, IdxError::UnknownType { code: 0x0A, .. }), "{e:?}");
        assert!(msg.contains("0x0a"), "{msg}");
    }

    #[test]
    fn zero_dimensions_are_reported() {
        let (e, _) = err_of(&[0, 0, 0x08, 0]);
        assert!(matches!(e, IdxError::NoDimensions { .. }), "{e:?}");
    }

    #[test]
    fn truncated_header_is_reported() {
        let (e, _) = err_of(&[0, 0]);
        assert!(
            matches!(e, IdxError::TruncatedHeader { len: 2, needed: 4, .. }),
            "{e:?}"
        );
        // Three dimensions declared, only one size present.
        let (e, _) = err_of(&[0, 0, 0x08, 3, 0, 0, 0, 1]);
        assert!(
            matches!(e, IdxError::TruncatedHeader { len: 8, needed: 16, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn truncated_and_oversized_data_are_reported() {
        // 2x3 i16 needs 12 bytes; give 11, then 13.
        let mut bytes = vec![0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend(vec![0u8; 11]);
        let (e, msg) = err_of(&bytes);
        assert!(
            matches!(
                e,
                IdxError::SizeMismatch {
                    expected: 12,
                    found: 11,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(msg.contains("[2, 3]") && msg.contains("i16"), "{msg}");
        bytes.extend(vec![0u8; 2]);
        let (e, _) = err_of(&bytes);
        assert!(
            matches!(
                e,
                IdxError::SizeMismatch {
                    expected: 12,
                    found: 13,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn huge_dimensions_do_not_allocate_or_overflow() {
        let (e, _) = err_of(&[
            0, 0, 0x0E, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        ]);
        assert!(
            matches!(e, IdxError::TooLarge { .. } | IdxError::SizeMismatch { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn truncated_gzip_is_reported() {
        let arr = IdxArray {
            dims: vec![100],
            data: IdxData::U8((0..100).collect()),
        };
        let gz = gzip(&arr.to_bytes());
        let (e, msg) = err_of(&gz[..gz.len() - 6]);
        assert!(matches!(e, IdxError::Gzip { .. }), "{e:?}");
        assert!(msg.contains("gzip"), "{msg}");
    }

    #[test]
    fn corrupt_gzip_checksum_is_reported() {
        let arr = IdxArray {
            dims: vec![4],
            data: IdxData::U8(vec![9, 8, 7, 6]),
        };
        let mut gz = gzip(&arr.to_bytes());
        let n = gz.len();
        gz[n - 8] ^= 0xff; // first CRC32 byte of the trailer
        let (e, _) = err_of(&gz);
        assert!(matches!(e, IdxError::Gzip { .. }), "{e:?}");
    }

    #[test]
    fn missing_file_is_reported() {
        let e = read_idx("/nonexistent/kiln/bad-file").unwrap_err();
        assert!(matches!(e, IdxError::Io { .. }));
        assert!(e.to_string().contains("/nonexistent/kiln/bad-file"));
    }
}
