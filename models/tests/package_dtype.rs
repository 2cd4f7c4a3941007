//! A package whose weights file holds a tensor in a type other than f32 is refused at load,
//! naming the tensor, instead of failing later inside the model.

use burn_flex::Flex;
use kiln_models::net::{net_package_config, NetConfig};
use kiln_models::package::{load_weights, write_package, WEIGHTS_FILE};

/// Rewrites the first tensor of a safetensors file as f16 (the format: an 8-byte little-endian
/// header length, a JSON header of name → dtype, shape, byte offsets, then the data).
fn first_tensor_to_f16(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut names: Vec<_> = header.keys().filter(|k| *k != "__metadata__").cloned().collect();
    names.sort_by_key(|k| header[k]["data_offsets"][0].as_u64().unwrap());
    let mut out_header = serde_json::Map::new();
    let mut out_data = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let entry = &header[name];
        let start = entry["data_offsets"][0].as_u64().unwrap() as usize;
        let end = entry["data_offsets"][1].as_u64().unwrap() as usize;
        let mut chunk = data[start..end].to_vec();
        let mut dtype = entry["dtype"].as_str().unwrap().to_string();
        if i == 0 {
            assert_eq!(dtype, "F32");
            // f32 → f16 by truncating the mantissa: exact for 0 and the small values here
            // are only there to be refused, not read.
            chunk = chunk
                .chunks_exact(4)
                .flat_map(|c| {
                    let x = f32::from_le_bytes(c.try_into().unwrap());
                    let bits = x.to_bits();
                    let sign = ((bits >> 16) & 0x8000) as u16;
                    let half = if x == 0.0 { sign } else { sign | 0x3c00 };
                    half.to_le_bytes()
                })
                .collect();
            dtype = "F16".into();
        }
        let offset = out_data.len();
        out_data.extend_from_slice(&chunk);
        let mut e = entry.clone();
        e["dtype"] = dtype.into();
        e["data_offsets"] = serde_json::json!([offset, out_data.len()]);
        out_header.insert(name.clone(), e);
    }
    if let Some(meta) = header.get("__metadata__") {
        out_header.insert("__metadata__".into(), meta.clone());
    }
    let mut head = serde_json::to_vec(&out_header).unwrap();
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut file = (head.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&head);
    file.extend_from_slice(&out_data);
    std::fs::write(path, file).unwrap();
    names[0].clone()
}

#[test]
fn an_f16_tensor_is_refused_at_load_naming_it() {
    let device = Default::default();
    let cfg = NetConfig::new();
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("model");
    let mut config = write_package(&pkg, &net_package_config(&cfg), &cfg.init::<Flex>(&device)).unwrap();
    let changed = first_tensor_to_f16(&pkg.join(WEIGHTS_FILE));
    // The checksum would refuse the edited file first; this case is a package written that way.
    config.kiln.weights_sha256 = None;
    let err = load_weights(&pkg, &config, cfg.init::<Flex>(&device))
        .err()
        .expect("an f16 tensor must be refused")
        .to_string();
    assert!(err.contains(WEIGHTS_FILE), "{err}");
    assert!(err.contains(&changed) && err.contains("F16"), "{err}");
}
