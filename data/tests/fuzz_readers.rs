//! Bounded fuzzing of the idx and COCO readers (`kiln_data::fuzz`): mutated valid files must
//! give an error or a dataset, never a panic, and never an allocation the file's size cannot
//! back (an idx header claiming 4 billion items in a 40-byte file).

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use kiln_data::fuzz::{iterations, Mutator};
use kiln_data::idx::{parse_idx, read_maybe_gzip};
use kiln_data::CocoDataset;

/// A valid idx file: unsigned bytes, shape [2, 3, 4].
fn idx_seed() -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, 3];
    for d in [2u32, 3, 4] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend((0..24).map(|i| i as u8));
    bytes
}

#[test]
fn mutated_idx_files_never_panic() {
    let seed = idx_seed();
    assert_eq!(parse_idx(&seed, Path::new("seed.idx")).unwrap().dims, [2, 3, 4]);
    let mut mutator = Mutator::new(1);
    let mut errors = 0;
    for i in 0..iterations(20_000) {
        let case = mutator.mutate(&seed);
        let result = catch_unwind(AssertUnwindSafe(|| parse_idx(&case, Path::new("case.idx"))));
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                errors += 1;
                assert!(e.to_string().contains("case.idx"), "case {i}: {e}");
            }
            Err(_) => panic!("case {i} panicked: {case:?}"),
        }
    }
    assert!(errors > 0, "no mutation was invalid: the fuzzer is not fuzzing");
}

#[test]
fn mutated_gzip_idx_files_never_panic() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx_seed()).unwrap();
    let seed = gz.finish().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.idx.gz");
    let mut mutator = Mutator::new(2);
    for i in 0..iterations(2_000) {
        let case = mutator.mutate(&seed);
        std::fs::write(&path, &case).unwrap();
        let result = catch_unwind(|| read_maybe_gzip(&path).and_then(|b| parse_idx(&b, &path)));
        assert!(result.is_ok(), "case {i} panicked: {case:?}");
    }
}

#[test]
fn mutated_coco_json_never_panics() {
    let seed = br#"{"images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 50},
        {"id": 3, "file_name": "b.jpg", "width": 20, "height": 20}],
      "annotations": [{"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 5, 20, 10], "iscrowd": 0},
        {"id": 2, "image_id": 3, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25.0, "iscrowd": 1}],
      "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}"#;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("instances.json");
    std::fs::write(&json, seed).unwrap();
    assert_eq!(CocoDataset::from_files(&json, dir.path()).unwrap().len(), 2);
    let mut mutator = Mutator::new(3);
    let mut errors = 0;
    for i in 0..iterations(3_000) {
        let case = mutator.mutate(seed);
        std::fs::write(&json, &case).unwrap();
        match catch_unwind(|| CocoDataset::from_files(&json, dir.path())) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                errors += 1;
                assert!(e.to_string().contains("instances.json"), "case {i}: {e}");
            }
            Err(_) => panic!("case {i} panicked: {}", String::from_utf8_lossy(&case)),
        }
    }
    assert!(errors > 0);
}
