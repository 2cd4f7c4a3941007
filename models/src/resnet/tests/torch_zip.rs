//! A minimal `torch.save` for tests (PyTorch ≥ 1.6 zip format, pickle protocol 2, stored
//! entries): torch is not available offline and burn-store only reads `.pth` files.

use std::path::Path;

use burn::tensor::{DType, TensorData};

/// Writes `tensors` (PyTorch keys and layout; f32 or i64) as `torch.save(state_dict)` would,
/// or `torch.save({wrapper: state_dict})` when `wrapper` is given.
pub(super) fn save(path: &Path, tensors: &[(String, TensorData)], wrapper: Option<&str>) {
    let mut pickle = Pickle(vec![0x80, 2]);
    if let Some(key) = wrapper {
        pickle.0.push(b'}');
        pickle.string(key);
    }
    pickle.ordered_dict();
    pickle.0.push(b'(');
    let mut entries = vec![];
    for (index, (key, data)) in tensors.iter().enumerate() {
        let storage = match data.dtype {
            DType::F32 => "FloatStorage",
            DType::I64 => "LongStorage",
            other => panic!("{key}: {other:?} is not supported by this writer"),
        };
        pickle.string(key);
        pickle.tensor(storage, &index.to_string(), &data.shape);
        entries.push((format!("archive/data/{index}"), data.as_bytes().to_vec()));
    }
    pickle.0.push(b'u');
    if wrapper.is_some() {
        pickle.0.push(b's');
    }
    pickle.0.push(b'.');
    entries.insert(0, ("archive/data.pkl".into(), pickle.0));
    entries.push(("archive/byteorder".into(), b"little".to_vec()));
    entries.push(("archive/version".into(), b"3\n".to_vec()));
    std::fs::write(path, zip(&entries)).unwrap();
}

struct Pickle(Vec<u8>);

impl Pickle {
    fn string(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
    }

    fn int(&mut self, i: usize) {
        self.0.push(b'J');
        self.0.extend((i as i32).to_le_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
    }

    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.extend(b")R");
    }

    fn int_tuple(&mut self, values: impl IntoIterator<Item = usize>) {
        self.0.push(b'(');
        values.into_iter().for_each(|v| self.int(v));
        self.0.push(b't');
    }

    /// `torch._utils._rebuild_tensor_v2(storage, 0, shape, contiguous strides, False, OrderedDict())`.
    fn tensor(&mut self, storage: &str, key: &str, shape: &[usize]) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.0.push(b'(');
        self.0.push(b'(');
        self.string("storage");
        self.global("torch", storage);
        self.string(key);
        self.string("cpu");
        self.int(shape.iter().product());
        self.0.extend(b"tQ");
        self.int(0);
        self.int_tuple(shape.iter().copied());
        let strides = (0..shape.len()).map(|d| shape[d + 1..].iter().product());
        self.int_tuple(strides);
        self.0.push(0x89);
        self.ordered_dict();
        self.0.extend(b"tR");
    }
}

/// A zip archive of stored (uncompressed) entries.
fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    const DOS_DATE_1980_01_01: u16 = 0x21;
    let mut out = vec![];
    let mut central = vec![];
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let common = |v: &mut Vec<u8>| {
            for half in [20u16, 0, 0, 0, DOS_DATE_1980_01_01] {
                v.extend(half.to_le_bytes());
            }
            for word in [crc, data.len() as u32, data.len() as u32] {
                v.extend(word.to_le_bytes());
            }
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes());
        };
        out.extend(0x04034b50u32.to_le_bytes());
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(data);

        central.extend(0x02014b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes());
        common(&mut central);
        // Comment length, disk number, internal and external attributes.
        central.extend([0u8; 10]);
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x06054b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend([entries.len() as u16; 2].map(u16::to_le_bytes).concat());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(central_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let table: Vec<u32> = (0..256u32)
        .map(|mut c| {
            for _ in 0..8 {
                c = if c & 1 == 1 { 0xEDB88320 ^ (c >> 1) } else { c >> 1 };
            }
            c
        })
        .collect();
    !data
        .iter()
        .fold(!0u32, |c, &b| table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}
