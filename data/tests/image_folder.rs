//! ImageFolder trees on disk and the classification loader over them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use kiln_data::transforms::{IMAGENET_MEAN, IMAGENET_STD};
use kiln_data::{
    open_splits, ClassifyBatch, ClassifyLoader, ClassifyTransform, EpochSampler, ImageFolder, ImageFolderError,
    LoaderConfig, LoaderError, SwinAugConfig,
};
use tempfile::TempDir;

/// Writes a `w`×`h` image whose pixels encode their position and `tag` (format from the name).
fn write_image(path: &Path, w: u32, h: u32, tag: u8) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 4) as u8, (y * 4) as u8, tag]))
        .save(path)
        .unwrap();
}

fn write_solid(path: &Path, side: u32, colour: [u8; 3]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(side, side, Rgb(colour)).save(path).unwrap();
}

/// `root/<class>/<i>.png` for each `(class, count)`, 24×20 images.
fn tree(root: &Path, classes: &[(&str, usize)]) {
    for (c, (class, count)) in classes.iter().enumerate() {
        for i in 0..*count {
            write_image(
                &root.join(class).join(format!("{i:02}.png")),
                24,
                20,
                (c * 50 + i) as u8,
            );
        }
    }
}

fn names(folder: &ImageFolder) -> Vec<(String, usize)> {
    (0..folder.len())
        .map(|i| {
            let (path, class) = folder.sample(i);
            let rel = path.strip_prefix(folder.root()).unwrap();
            (rel.to_string_lossy().into_owned(), class)
        })
        .collect()
}

fn loader(folder: ImageFolder, transform: ClassifyTransform, shuffle: bool, config: LoaderConfig) -> ClassifyLoader {
    let sampler = EpochSampler::new(folder.len(), shuffle, 42);
    ClassifyLoader::new(Arc::new(folder), transform, sampler, config).unwrap()
}

fn config(batch_size: usize, workers: usize, prefetch_batches: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        workers,
        prefetch_batches,
    }
}

fn collect(loader: &ClassifyLoader, epoch: u64) -> Vec<ClassifyBatch> {
    loader.epoch(epoch).map(Result::unwrap).collect()
}

#[test]
fn classes_and_files_are_sorted_and_filtered() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    for file in [
        "dog/b.png",
        "dog/a.PNG",
        "cat/z.jpg",
        "cat/c.bmp",
        "cat/sub/d.png",
        "cat/sub2/e.webp",
    ] {
        write_image(&root.join(file), 8, 8, 0);
    }
    // Ignored: hidden files and folders, other extensions, files beside the class folders.
    write_image(&root.join(".cache/x.png"), 8, 8, 0);
    write_image(&root.join("cat/.thumb.png"), 8, 8, 0);
    write_image(&root.join("cat/.ipynb_checkpoints/y.png"), 8, 8, 0);
    write_image(&root.join("top.png"), 8, 8, 0);
    fs::write(root.join("cat/notes.txt"), "not an image").unwrap();
    fs::write(root.join("dog/a.gif"), "gif is not in torchvision's list").unwrap();

    let folder = ImageFolder::open(root).unwrap();
    assert_eq!(folder.classes(), ["cat", "dog"]);
    let expected = [
        ("cat/c.bmp", 0),
        ("cat/z.jpg", 0),
        ("cat/sub/d.png", 0),
        ("cat/sub2/e.webp", 0),
        ("dog/a.PNG", 1),
        ("dog/b.png", 1),
    ];
    let expected: Vec<(String, usize)> = expected.iter().map(|(p, c)| (p.to_string(), *c)).collect();
    assert_eq!(names(&folder), expected);
    assert_eq!(folder.len(), 6);
    assert!(!folder.is_empty());

    let sub = folder.subset(1);
    assert_eq!(names(&sub), [expected[0].clone(), expected[4].clone()]);
    assert!(folder.subset(0).is_empty());
}

#[test]
fn splits_share_the_training_classes() {
    let dir = TempDir::new().unwrap();
    tree(&dir.path().join("train"), &[("b", 2), ("a", 3)]);
    tree(&dir.path().join("val"), &[("a", 1), ("b", 1)]);
    let (train, val) = open_splits(dir.path()).unwrap();
    assert_eq!(train.classes(), ["a", "b"]);
    assert_eq!(val.classes(), ["a", "b"]);
    assert_eq!((train.len(), val.len()), (5, 2));
    assert_eq!(val.sample(1), (dir.path().join("val/b/00.png").as_path(), 1));
}

fn split_error(train: &[(&str, usize)], val: &[(&str, usize)]) -> (TempDir, ImageFolderError) {
    let dir = TempDir::new().unwrap();
    tree(&dir.path().join("train"), train);
    tree(&dir.path().join("val"), val);
    let err = open_splits(dir.path()).unwrap_err();
    (dir, err)
}

#[test]
fn split_errors_name_the_class_and_folder() {
    let (dir, err) = split_error(&[("cat", 1), ("dog", 1)], &[("cat", 1)]);
    let msg = err.to_string();
    assert!(
        matches!(&err, ImageFolderError::MissingClass { class, .. } if class == "dog"),
        "{err:?}"
    );
    assert!(
        msg.contains(&dir.path().join("val").display().to_string()) && msg.contains("\"dog\""),
        "{msg}"
    );

    let (_dir, err) = split_error(&[("cat", 1)], &[("cat", 1), ("cow", 1)]);
    assert!(
        matches!(&err, ImageFolderError::ExtraClass { class, .. } if class == "cow"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"cow\""), "{err}");

    let dir = TempDir::new().unwrap();
    tree(&dir.path().join("train"), &[("cat", 1)]);
    fs::create_dir_all(dir.path().join("train/dog")).unwrap();
    let err = open_splits(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ImageFolderError::NoImages { dir: d } if d.ends_with("train/dog")),
        "{err:?}"
    );
    fs::write(dir.path().join("train/dog/readme.md"), "no images here").unwrap();
    let err = open_splits(dir.path()).unwrap_err();
    let want = format!(
        "{}: no images with extensions jpg, jpeg, png",
        dir.path().join("train/dog").display()
    );
    assert!(err.to_string().starts_with(&want), "{err}");
}

#[test]
fn missing_folders_are_errors() {
    let dir = TempDir::new().unwrap();
    let err = open_splits(dir.path()).unwrap_err();
    assert!(matches!(err, ImageFolderError::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&dir.path().join("train").display().to_string()),
        "{err}"
    );

    tree(&dir.path().join("train"), &[("cat", 1)]);
    let err = open_splits(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains(&dir.path().join("val").display().to_string()),
        "{err}"
    );

    fs::create_dir_all(dir.path().join("val/.hidden")).unwrap();
    let err = open_splits(dir.path()).unwrap_err();
    assert!(matches!(err, ImageFolderError::NoClasses { .. }), "{err:?}");
}

#[test]
fn batches_keep_order_shape_and_targets() {
    // Unshuffled, each class a solid colour: every value of an image is its class colour.
    let dir = TempDir::new().unwrap();
    let colours = [[255, 0, 0], [0, 128, 0], [10, 20, 30]];
    for (c, colour) in colours.iter().enumerate() {
        for i in 0..3 {
            write_solid(&dir.path().join(format!("c{c}/{i}.png")), 16, *colour);
        }
    }
    let folder = ImageFolder::open(dir.path()).unwrap();
    let eval = ClassifyTransform::Eval { resize: 16, crop: 16 };
    let loader = loader(folder, eval, false, config(4, 2, 1));
    assert_eq!(loader.num_batches(), 3);
    let batches = collect(&loader, 0);
    let shapes: Vec<_> = batches.iter().map(|b| b.shape).collect();
    assert_eq!(shapes, [[4, 3, 16, 16], [4, 3, 16, 16], [1, 3, 16, 16]]);
    let targets: Vec<_> = batches.iter().map(|b| b.targets.clone()).collect();
    assert_eq!(targets, [vec![0, 0, 0, 1], vec![1, 1, 2, 2], vec![2]]);
    let plane = 16 * 16;
    for batch in &batches {
        assert_eq!(batch.images.len(), batch.shape.iter().product::<usize>());
        for (n, &target) in batch.targets.iter().enumerate() {
            for c in 0..3 {
                let want = (colours[target as usize][c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                let start = (n * 3 + c) * plane;
                assert!(batch.images[start..start + plane].iter().all(|&v| v == want), "{n} {c}");
            }
        }
    }
}

#[test]
fn worker_count_does_not_change_the_batches() {
    let dir = TempDir::new().unwrap();
    tree(dir.path(), &[("a", 5), ("b", 4), ("c", 4)]);
    let folder = ImageFolder::open(dir.path()).unwrap();
    let train = ClassifyTransform::Train { size: 12 };
    let inline = collect(&loader(folder.clone(), train, true, config(3, 0, 0)), 2);
    assert_eq!(inline.len(), 5);
    for (workers, prefetch) in [(1, 0), (3, 2), (3, 0)] {
        let threaded = collect(&loader(folder.clone(), train, true, config(3, workers, prefetch)), 2);
        assert_eq!(threaded, inline, "workers {workers}, prefetch {prefetch}");
    }
    // The batch size only regroups the same samples, with the same augmentation.
    let singles = collect(&loader(folder.clone(), train, true, config(1, 2, 1)), 2);
    let flat: Vec<f32> = singles.iter().flat_map(|b| b.images.clone()).collect();
    assert_eq!(flat, inline.iter().flat_map(|b| b.images.clone()).collect::<Vec<_>>());

    let other_epoch = collect(&loader(folder, train, true, config(3, 2, 1)), 3);
    let order = |batches: &[ClassifyBatch]| batches.iter().flat_map(|b| b.targets.clone()).collect::<Vec<_>>();
    assert_ne!(other_epoch, inline);
    assert_ne!(
        EpochSampler::new(13, true, 42).indices(2),
        EpochSampler::new(13, true, 42).indices(3)
    );
    let mut a = order(&inline);
    let mut b = order(&other_epoch);
    a.sort();
    b.sort();
    assert_eq!(a, b, "an epoch holds every sample once");
}

#[test]
fn swin_transforms_load_batches_independent_of_workers() {
    let dir = TempDir::new().unwrap();
    tree(dir.path(), &[("a", 4), ("b", 3)]);
    let folder = ImageFolder::open(dir.path()).unwrap();
    let swin = SwinAugConfig {
        img_size: 40,
        ..SwinAugConfig::default()
    };
    let train = swin.train_transform().unwrap();
    let inline = collect(&loader(folder.clone(), train, true, config(3, 0, 0)), 1);
    assert_eq!(inline.len(), 3);
    assert_eq!(inline[0].shape, [3, 3, 40, 40]);
    assert_eq!(inline[2].shape, [1, 3, 40, 40]);
    let threaded = collect(&loader(folder.clone(), train, true, config(3, 2, 1)), 1);
    assert_eq!(threaded, inline);
    assert_ne!(
        collect(&loader(folder.clone(), train, true, config(3, 2, 1)), 2),
        inline
    );

    // Evaluation: 24×20 → shorter side int(256 / 224 · 40) = 45 → 54×45 → centre 40×40; the
    // same every epoch.
    let eval = swin.eval_transform().unwrap();
    let a = collect(&loader(folder.clone(), eval, false, config(7, 2, 1)), 0);
    assert_eq!(a[0].shape, [7, 3, 40, 40]);
    assert_eq!(a, collect(&loader(folder, eval, false, config(7, 0, 0)), 5));
}

#[test]
fn corrupt_file_is_a_decode_error_naming_it() {
    let dir = TempDir::new().unwrap();
    tree(dir.path(), &[("a", 2)]);
    fs::write(dir.path().join("a/x.jpg"), b"\xff\xd8 definitely not a jpeg").unwrap();
    let folder = ImageFolder::open(dir.path()).unwrap();
    for workers in [0, 2] {
        let loader = loader(
            folder.clone(),
            ClassifyTransform::Train { size: 8 },
            false,
            config(1, workers, 1),
        );
        let results: Vec<_> = loader.epoch(0).collect();
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok() && results[1].is_ok());
        let err = results[2].as_ref().unwrap_err();
        assert!(
            matches!(err, ImageFolderError::Decode { path, .. } if path.ends_with("a/x.jpg")),
            "{err:?}"
        );
        assert!(err.to_string().contains("x.jpg"), "{err}");
    }
}

#[test]
fn dropping_mid_epoch_stops_the_workers() {
    let dir = TempDir::new().unwrap();
    for i in 0..48 {
        write_image(&dir.path().join(format!("a/{i:02}.png")), 64, 64, i as u8);
    }
    let folder = ImageFolder::open(dir.path()).unwrap();
    let loader = loader(folder, ClassifyTransform::Train { size: 32 }, true, config(2, 3, 4));
    for taken in [0, 1, 5] {
        let started = Instant::now();
        let mut batches = loader.epoch(0);
        for _ in 0..taken {
            batches.next().unwrap().unwrap();
        }
        drop(batches);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
    assert_eq!(loader.epoch(1).count(), 24);
}

#[test]
fn bad_loader_setups_are_errors() {
    let dir = TempDir::new().unwrap();
    tree(dir.path(), &[("a", 2)]);
    let folder = Arc::new(ImageFolder::open(dir.path()).unwrap());
    let eval = ClassifyTransform::imagenet_eval();
    let sampler = EpochSampler::new(2, false, 0);
    let err = ClassifyLoader::new(folder.clone(), eval, sampler, config(0, 1, 1)).unwrap_err();
    assert_eq!(err, LoaderError::ZeroBatchSize);
    let err = ClassifyLoader::new(folder, eval, EpochSampler::new(3, false, 0), config(2, 1, 1)).unwrap_err();
    assert_eq!(err, LoaderError::SamplerLength { sampler: 3, dataset: 2 });
}

fn dogcat() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/dogcat"))
}

#[test]
#[ignore = "reads the 4000-image dog/cat set from ../shared/data/dogcat"]
fn real_dogcat_splits_load() {
    let (train, val) = open_splits(&dogcat()).unwrap();
    assert_eq!(train.classes(), ["cat", "dog"]);
    assert_eq!((train.len(), val.len()), (2000, 2000));
    let loader = loader(
        train.subset(4),
        ClassifyTransform::imagenet_train(),
        true,
        config(4, 2, 1),
    );
    let batches = collect(&loader, 0);
    assert_eq!(batches.len(), 2);
    for batch in &batches {
        assert_eq!(batch.shape, [4, 3, 224, 224]);
        assert!(batch.images.iter().all(|v| v.is_finite() && v.abs() < 3.0));
    }
}
