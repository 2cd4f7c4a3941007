//! YOLOX augmentation and the COCO detection loader on synthetic scenes: solid rectangles of
//! one colour per class on black, so that after any augmentation a box can be checked against
//! the pixels under it. Opt-in, the real `../shared/data/coco-mini`.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{Rgb, RgbImage};
use kiln_data::augment::{
    hflip, mosaic, random_affine, train_sample, train_transform, DetectionSource, YoloxAugConfig,
};
use kiln_data::{
    CocoBox, CocoDataset, DetectBatch, DetectError, DetectLoader, DetectMode, EpochSampler, LoaderConfig, LoaderError,
    PAD_VALUE,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tempfile::TempDir;

/// Class colours: red, green, blue, and white for a fourth class.
const COLOURS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];

/// A `w × h` black image with a solid rectangle of its class colour at each `(class, [x1, y1,
/// x2, y2])`, and those rectangles as boxes.
fn scene(w: u32, h: u32, rects: &[(usize, [u32; 4])]) -> (RgbImage, Vec<CocoBox>) {
    let mut img = RgbImage::new(w, h);
    for &(class, [x1, y1, x2, y2]) in rects {
        for y in y1..y2 {
            for x in x1..x2 {
                img.put_pixel(x, y, Rgb(COLOURS[class]));
            }
        }
    }
    let boxes = rects
        .iter()
        .map(|&(class, r)| CocoBox {
            class,
            xyxy: r.map(|v| v as f32),
        })
        .collect();
    (img, boxes)
}

/// Whether a pixel shows class `class`: for the primaries, its channel beats the smaller of
/// the other two by 40 (this survives half-and-half blending and the HSV jitter); for white,
/// all channels are high.
fn shows(px: [u8; 3], class: usize) -> bool {
    if class == 3 {
        return px.iter().all(|&c| c >= 200);
    }
    let others = (0..3).filter(|&c| c != class).map(|c| px[c]).min().unwrap_or(0);
    px[class] >= others.saturating_add(40)
}

/// Share of the pixels whose centre lies in `b` that show its class.
fn share(img: &RgbImage, b: &CocoBox) -> f32 {
    let [x1, y1, x2, y2] = b.xyxy;
    let (mut hits, mut total) = (0, 0);
    for y in y1.floor() as u32..(y2.ceil() as u32).min(img.height()) {
        for x in x1.floor() as u32..(x2.ceil() as u32).min(img.width()) {
            let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
            if cx > x1 && cx < x2 && cy > y1 && cy < y2 {
                total += 1;
                hits += usize::from(shows(img.get_pixel(x, y).0, b.class));
            }
        }
    }
    hits as f32 / total.max(1) as f32
}

/// Asserts every box lies inside the image and mostly (over half) shows its class's colour;
/// returns how many boxes were checked for colour.
///
/// After a turn (`turned`: the mosaic's affine warp) only boxes that are at least 6 pixels
/// wide and tall, not cut by the image border, and at most twice as long as wide are checked:
/// YOLOX takes the enclosing box of the turned rectangle, which a thin rectangle (say, a
/// sliver the mosaic cut off) fills little of, and which, when the border cuts it, may hold
/// one corner of the rectangle or none of it.
fn assert_boxes_on_their_colour(img: &RgbImage, boxes: &[CocoBox], turned: bool, context: &str) -> usize {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let mut checked = 0;
    for b in boxes {
        let [x1, y1, x2, y2] = b.xyxy;
        assert!(
            0.0 <= x1 && x1 < x2 && x2 <= w && 0.0 <= y1 && y1 < y2 && y2 <= h,
            "{context}: {b:?} is not inside {w}×{h}"
        );
        let (bw, bh) = (x2 - x1, y2 - y1);
        let cut = x1 == 0.0 || y1 == 0.0 || x2 == w || y2 == h;
        if turned && (cut || bw.min(bh) < 6.0 || bw.max(bh) > 2.0 * bw.min(bh)) {
            continue;
        }
        let s = share(img, b);
        assert!(s > 0.5, "{context}: only {s:.2} of {b:?} shows its colour");
        checked += 1;
    }
    checked
}

/// An in-memory dataset for the augmentation pipeline.
struct Scenes(Vec<(RgbImage, Vec<CocoBox>)>, Vec<usize>);

impl Scenes {
    /// Six scenes of assorted sizes: squares and near-squares of the three primaries, one scene
    /// without boxes.
    fn new() -> Self {
        let scenes = vec![
            scene(160, 120, &[(0, [10, 10, 60, 60]), (1, [90, 40, 150, 100])]),
            scene(100, 140, &[(2, [20, 30, 80, 90])]),
            scene(200, 90, &[(1, [5, 5, 55, 65]), (0, [120, 20, 180, 80])]),
            scene(120, 120, &[]),
            scene(90, 160, &[(0, [10, 90, 70, 150]), (2, [15, 10, 75, 70])]),
            scene(150, 150, &[(1, [40, 40, 110, 110])]),
        ];
        let annotated = (0..scenes.len()).filter(|&i| !scenes[i].1.is_empty()).collect();
        Self(scenes, annotated)
    }
}

impl DetectionSource for Scenes {
    type Error = std::convert::Infallible;

    fn num_images(&self) -> usize {
        self.0.len()
    }

    fn annotated(&self) -> &[usize] {
        &self.1
    }

    fn load_image(&self, index: usize) -> Result<(RgbImage, Vec<CocoBox>), Self::Error> {
        Ok(self.0[index].clone())
    }
}

fn small(config: YoloxAugConfig) -> YoloxAugConfig {
    YoloxAugConfig {
        input_size: 128,
        ..config
    }
}

#[test]
fn every_augmentation_keeps_each_box_on_its_object() {
    let source = Scenes::new();
    let base = small(YoloxAugConfig::default());
    let configs = [
        ("default", base),
        ("nano", small(YoloxAugConfig::yolox_nano())),
        (
            "mosaic only",
            YoloxAugConfig {
                mixup: false,
                hsv_prob: 0.0,
                flip_prob: 0.0,
                ..base
            },
        ),
        (
            "no mosaic",
            YoloxAugConfig {
                mosaic: false,
                flip_prob: 1.0,
                ..base
            },
        ),
        (
            "big warps",
            YoloxAugConfig {
                mosaic_scale: (1.5, 2.0),
                mixup_scale: (1.2, 1.5),
                ..base
            },
        ),
    ];
    for (name, config) in configs {
        let mut checked = 0;
        for seed in 0..30 {
            for index in 0..source.num_images() {
                let mut rng = StdRng::seed_from_u64(seed * 100 + index as u64);
                let out = train_sample(&source, index, &config, &mut rng).unwrap();
                assert_eq!(out.image.dimensions(), (128, 128));
                assert!(out.boxes.len() <= config.max_labels);
                let context = format!("{name}, seed {seed}, image {index}");
                let turned = out.ratio.is_none();
                checked += assert_boxes_on_their_colour(&out.image, &out.boxes, turned, &context);
                if !config.mosaic {
                    assert!(out.ratio.is_some(), "{context}");
                } else if config.mosaic_prob == 1.0 {
                    assert_eq!(out.ratio, None, "{context}");
                }
            }
        }
        assert!(checked >= 40, "{name}: only {checked} boxes were large enough to check");
    }
}

#[test]
fn mosaic_puts_each_images_box_on_its_colour() {
    // Four images, one class (colour) each, with one box: after the mosaic and after the
    // affine warp, each box that is left shows its own image's colour.
    let parts: Vec<_> = (0..4)
        .map(|i| scene(80 + 20 * i, 100 - 10 * i, &[(i as usize, [10, 15, 60, 65])]))
        .collect();
    let quad: [(&RgbImage, &[CocoBox]); 4] = std::array::from_fn(|i| (&parts[i].0, parts[i].1.as_slice()));
    let config = small(YoloxAugConfig::default());
    let mut seen = [0; 4];
    // Centres right of x = 64 and below y = 45 leave a part of every box on the canvas.
    for (n, center) in [(70, 50), (100, 70), (80, 120), (127, 127)].into_iter().enumerate() {
        let (canvas, boxes) = mosaic(quad, 128, center);
        assert_eq!(canvas.dimensions(), (256, 256));
        assert_eq!(boxes.len(), 4, "nothing is cut off at centre {center:?}");
        assert_eq!(boxes.iter().map(|b| b.class).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(assert_boxes_on_their_colour(&canvas, &boxes, false, "mosaic"), 4);
        for seed in 0..10 {
            let mut rng = StdRng::seed_from_u64(seed + 10 * n as u64);
            let (img, warped) = random_affine(&canvas, &boxes, &config, &mut rng);
            let context = format!("centre {center:?}, seed {seed}");
            assert_boxes_on_their_colour(&img, &warped, true, &context);
            for b in &warped {
                seen[b.class] += 1;
            }
        }
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "every image's box shows up somewhere: {seen:?}"
    );
}

#[test]
fn the_train_transform_flips_and_letterboxes_exactly() {
    // 100×50 at input 100: ratio 1, so the flipped box is exact.
    let (img, boxes) = scene(100, 50, &[(2, [10, 5, 30, 25]), (0, [60, 10, 61, 40])]);
    let config = YoloxAugConfig {
        input_size: 100,
        hsv_prob: 0.0,
        flip_prob: 1.0,
        ..YoloxAugConfig::default()
    };
    let out = train_transform(img.clone(), boxes.clone(), &config, &mut StdRng::seed_from_u64(0));
    assert_eq!(out.ratio, 1.0);
    // The 1-pixel-wide box is dropped; the other is mirrored: [100 - 30, 5, 100 - 10, 25].
    assert_eq!(
        out.boxes,
        [CocoBox {
            class: 2,
            xyxy: [70.0, 5.0, 90.0, 25.0]
        }]
    );
    let mut mirrored = img;
    hflip(&mut mirrored, &mut []);
    for (x, y, px) in out.image.enumerate_pixels() {
        let want = if y < 50 {
            *mirrored.get_pixel(x, y)
        } else {
            Rgb([PAD_VALUE; 3])
        };
        assert_eq!(*px, want, "({x}, {y})");
    }
    // max_labels keeps the first boxes.
    let many: Vec<_> = (0..8).map(|i| (1, [i * 12, 0, i * 12 + 10, 10])).collect();
    let (img, boxes) = scene(100, 50, &many);
    let capped = YoloxAugConfig {
        max_labels: 3,
        ..config
    };
    let out = train_transform(img, boxes, &capped, &mut StdRng::seed_from_u64(0));
    assert_eq!(out.boxes.len(), 3);
    assert_eq!(out.boxes[0].xyxy, [90.0, 0.0, 100.0, 10.0]);
}

#[test]
fn samples_follow_the_seed() {
    let source = Scenes::new();
    let config = small(YoloxAugConfig::default());
    let run = |seed| train_sample(&source, 0, &config, &mut StdRng::seed_from_u64(seed)).unwrap();
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).image, run(8).image);
}

#[test]
fn images_without_boxes_work() {
    let source = Scenes::new();
    for config in [
        small(YoloxAugConfig::default()),
        small(YoloxAugConfig {
            mosaic: false,
            ..YoloxAugConfig::default()
        }),
    ] {
        for seed in 0..20 {
            let out = train_sample(&source, 3, &config, &mut StdRng::seed_from_u64(seed)).unwrap();
            assert_eq!(out.image.dimensions(), (128, 128));
            if !config.mosaic {
                // Only letterboxed (120 × 120 → 128 × 128): no jitter, no boxes.
                assert!(out.boxes.is_empty());
                assert_eq!(out.ratio, Some(128.0 / 120.0));
                assert_eq!(out.image.get_pixel(5, 5).0, [0; 3]);
            }
        }
    }
    // A dataset with no boxes at all: mosaics without targets, no MixUp partner to find.
    let empty = Scenes(vec![scene(50, 40, &[]), scene(30, 60, &[])], vec![]);
    let out = train_sample(
        &empty,
        1,
        &small(YoloxAugConfig::default()),
        &mut StdRng::seed_from_u64(1),
    )
    .unwrap();
    assert!(out.boxes.is_empty());
}

// ----------------------------------------------------------------------------------------
// The loader, on a COCO folder written to disk.

/// Category ids of the classes: ascending, so class index = position.
const CATEGORY_IDS: [u64; 4] = [1, 2, 3, 9];

/// One image of a synthetic COCO split: its size and `(class, rect, iscrowd)` annotations.
struct Entry {
    w: u32,
    h: u32,
    rects: Vec<(usize, [u32; 4], bool)>,
}

fn entries() -> Vec<Entry> {
    let e = |w, h, rects: &[(usize, [u32; 4], bool)]| Entry {
        w,
        h,
        rects: rects.to_vec(),
    };
    vec![
        e(
            160,
            120,
            &[(0, [10, 10, 60, 60], false), (1, [90, 40, 150, 100], false)],
        ),
        e(100, 140, &[(2, [20, 30, 80, 90], false), (3, [0, 0, 100, 20], true)]),
        e(120, 120, &[]),
        e(200, 90, &[(1, [5, 5, 55, 65], false), (0, [120, 20, 180, 80], false)]),
        e(90, 160, &[(3, [30, 0, 60, 20], true), (2, [15, 30, 75, 90], false)]),
        e(150, 150, &[(1, [40, 40, 110, 110], false)]),
        e(64, 64, &[(0, [8, 8, 56, 56], false)]),
    ]
}

/// Writes `entries` as split `train2017` of a COCO folder at `root` (image ids 100, 101, ...;
/// crowd regions painted white).
fn write_coco(root: &Path, entries: &[Entry]) {
    fs::create_dir_all(root.join("annotations")).unwrap();
    fs::create_dir_all(root.join("train2017")).unwrap();
    let (mut images, mut annotations) = (Vec::new(), Vec::new());
    for (i, entry) in entries.iter().enumerate() {
        let id = 100 + i;
        let rects: Vec<_> = entry.rects.iter().map(|&(c, r, _)| (c, r)).collect();
        let (img, _) = scene(entry.w, entry.h, &rects);
        img.save(root.join(format!("train2017/{id}.png"))).unwrap();
        images.push(format!(
            r#"{{"id": {id}, "file_name": "{id}.png", "width": {}, "height": {}}}"#,
            entry.w, entry.h
        ));
        for &(class, [x1, y1, x2, y2], crowd) in &entry.rects {
            annotations.push(format!(
                r#"{{"id": {}, "image_id": {id}, "category_id": {}, "bbox": [{x1}, {y1}, {}, {}], "iscrowd": {}}}"#,
                annotations.len() + 1,
                CATEGORY_IDS[class],
                x2 - x1,
                y2 - y1,
                u8::from(crowd)
            ));
        }
    }
    let categories: Vec<_> = CATEGORY_IDS
        .iter()
        .map(|id| format!(r#"{{"id": {id}, "name": "c{id}"}}"#))
        .collect();
    let json = format!(
        r#"{{"images": [{}], "annotations": [{}], "categories": [{}]}}"#,
        images.join(","),
        annotations.join(","),
        categories.join(",")
    );
    fs::write(root.join("annotations/instances_train2017.json"), json).unwrap();
}

fn coco_folder() -> (TempDir, Arc<CocoDataset>) {
    let dir = TempDir::new().unwrap();
    write_coco(dir.path(), &entries());
    let dataset = CocoDataset::open(dir.path(), "train2017").unwrap();
    (dir, Arc::new(dataset))
}

fn config(batch_size: usize, workers: usize, prefetch_batches: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        workers,
        prefetch_batches,
    }
}

fn loader(dataset: &Arc<CocoDataset>, mode: DetectMode, shuffle: bool, config: LoaderConfig) -> DetectLoader {
    let sampler = EpochSampler::new(dataset.len(), shuffle, 5);
    DetectLoader::new(Arc::clone(dataset), mode, sampler, config).unwrap()
}

fn collect(loader: &DetectLoader, epoch: u64) -> Vec<DetectBatch> {
    loader.epoch(epoch).map(Result::unwrap).collect()
}

/// Image `i` of a batch back as RGB bytes.
fn batch_image(batch: &DetectBatch, i: usize) -> RgbImage {
    let [_, _, h, w] = batch.shape;
    let plane = h * w;
    let planes = &batch.images[i * 3 * plane..(i + 1) * 3 * plane];
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let p = y as usize * w + x as usize;
        // Stored B, G, R.
        Rgb([planes[2 * plane + p], planes[plane + p], planes[p]].map(|v| {
            assert!(v.fract() == 0.0 && (0.0..=255.0).contains(&v), "{v}");
            v as u8
        }))
    })
}

fn train_mode() -> DetectMode {
    DetectMode::Train(small(YoloxAugConfig::default()))
}

#[test]
fn worker_count_does_not_change_the_batches() {
    let (_dir, dataset) = coco_folder();
    for epoch in [0, 3] {
        let inline = collect(&loader(&dataset, train_mode(), true, config(3, 0, 0)), epoch);
        assert_eq!(inline.len(), 3);
        for (workers, prefetch) in [(1, 0), (2, 1), (3, 3)] {
            let threaded = collect(
                &loader(&dataset, train_mode(), true, config(3, workers, prefetch)),
                epoch,
            );
            assert_eq!(
                threaded, inline,
                "epoch {epoch}, workers {workers}, prefetch {prefetch}"
            );
        }
        // The batch size only regroups the same samples, augmented the same way.
        let singles = collect(&loader(&dataset, train_mode(), true, config(1, 2, 1)), epoch);
        let flat = |batches: &[DetectBatch]| -> (Vec<f32>, Vec<Vec<CocoBox>>) {
            (
                batches.iter().flat_map(|b| b.images.clone()).collect(),
                batches.iter().flat_map(|b| b.targets.clone()).collect(),
            )
        };
        assert_eq!(flat(&singles), flat(&inline));
    }
    let a = collect(&loader(&dataset, train_mode(), true, config(3, 2, 1)), 0);
    let b = collect(&loader(&dataset, train_mode(), true, config(3, 2, 1)), 1);
    assert_ne!(a, b, "another epoch, other augmentations");
}

#[test]
fn train_batches_keep_boxes_on_their_objects_without_crowds() {
    let (_dir, dataset) = coco_folder();
    let mut train = loader(&dataset, train_mode(), true, config(4, 2, 1));
    let mut checked = 0;
    for epoch in 0..12 {
        if epoch == 8 {
            train.set_mosaic(false); // YOLOX's last no-aug epochs
        }
        for batch in collect(&train, epoch) {
            let n = batch.shape[0];
            assert_eq!(batch.shape[1..], [3, 128, 128]);
            assert_eq!(batch.images.len(), n * 3 * 128 * 128);
            assert_eq!(
                (batch.targets.len(), batch.image_ids.len(), batch.ratios.len()),
                (n, n, n)
            );
            for i in 0..n {
                assert!((100..107).contains(&batch.image_ids[i]));
                assert_eq!(
                    batch.ratios[i].is_none(),
                    epoch < 8,
                    "mosaic samples have no single ratio"
                );
                // Class 3 only ever marks crowd regions: never a target.
                assert!(batch.targets[i].iter().all(|b| b.class != 3), "{:?}", batch.targets[i]);
                let context = format!("epoch {epoch}, image {}", batch.image_ids[i]);
                let turned = batch.ratios[i].is_none();
                checked += assert_boxes_on_their_colour(&batch_image(&batch, i), &batch.targets[i], turned, &context);
            }
        }
    }
    assert!(checked >= 60, "{checked}");
}

#[test]
fn validation_letterboxes_and_keeps_ids_and_ratios() {
    let (_dir, dataset) = coco_folder();
    let val = loader(&dataset, DetectMode::Val { size: 100 }, false, config(3, 2, 0));
    let batches = collect(&val, 0);
    assert_eq!(batches.iter().map(|b| b.shape[0]).collect::<Vec<_>>(), [3, 3, 1]);
    let entries = entries();
    for (k, batch) in batches.iter().enumerate() {
        for i in 0..batch.shape[0] {
            let index = 3 * k + i;
            let entry = &entries[index];
            assert_eq!(batch.image_ids[i], 100 + index as u64);
            let ratio = (100.0 / entry.h as f32).min(100.0 / entry.w as f32);
            assert_eq!(batch.ratios[i], Some(ratio));
            // The non-crowd boxes, scaled by the ratio; crowd regions are no targets.
            let want: Vec<_> = entry
                .rects
                .iter()
                .filter(|r| !r.2)
                .map(|&(class, r, _)| CocoBox {
                    class,
                    xyxy: r.map(|v| v as f32 * ratio),
                })
                .collect();
            assert_eq!(batch.targets[i], want);
            let img = batch_image(batch, i);
            assert_eq!(
                assert_boxes_on_their_colour(&img, &batch.targets[i], false, "val"),
                want.len()
            );
            // Channels are B, G, R: a red rectangle is high in the last plane.
            if let Some(red) = want.iter().find(|b| b.class == 0) {
                let [x1, y1, x2, y2] = red.xyxy;
                let (x, y) = (((x1 + x2) / 2.0) as usize, ((y1 + y2) / 2.0) as usize);
                let plane = 100 * 100;
                let at = |c: usize| batch.images[(i * 3 + c) * plane + y * 100 + x];
                assert_eq!((at(0), at(1), at(2)), (0.0, 0.0, 255.0));
            }
            // Right of or below the resized image: the padding, 114.
            let covered = (entry.w as f32 * ratio) as u32 >= 100 && (entry.h as f32 * ratio) as u32 >= 100;
            if !covered {
                assert_eq!(img.get_pixel(99, 99).0, [PAD_VALUE; 3], "image {index}");
            }
        }
    }
}

#[test]
fn unreadable_images_are_errors_naming_the_file() {
    let (dir, dataset) = coco_folder();
    fs::write(dir.path().join("train2017/102.png"), b"\x89PNG not really").unwrap();
    // An image whose size contradicts its annotations.
    RgbImage::new(10, 10)
        .save(dir.path().join("train2017/105.png"))
        .unwrap();
    for workers in [0, 2] {
        let val = loader(&dataset, DetectMode::Val { size: 64 }, false, config(1, workers, 1));
        let results: Vec<_> = val.epoch(0).collect();
        assert_eq!(results.len(), 7);
        for (i, result) in results.iter().enumerate() {
            match (i, result) {
                (2, Err(DetectError::Image { path, .. })) => assert!(path.ends_with("train2017/102.png")),
                (5, Err(e @ DetectError::Image { path, problem })) => {
                    assert!(path.ends_with("train2017/105.png"));
                    assert!(problem.contains("10×10") && problem.contains("150×150"), "{problem}");
                    assert!(e.to_string().contains("105.png"), "{e}");
                }
                (2 | 5, other) => panic!("{i}: {other:?}"),
                (_, other) => assert!(other.is_ok(), "{i}: {other:?}"),
            }
        }
    }
    // In training, a mosaic that draws the broken file fails the same way.
    let train = loader(&dataset, train_mode(), false, config(7, 0, 0));
    let err = train.epoch(0).next().unwrap().unwrap_err();
    let DetectError::Image { path, .. } = &err;
    assert!(path.ends_with("102.png") || path.ends_with("105.png"), "{err}");
}

#[test]
fn bad_detection_setups_are_errors() {
    let (_dir, dataset) = coco_folder();
    let sampler = EpochSampler::new(dataset.len(), false, 0);
    let new =
        |mode, sampler: &EpochSampler, config| DetectLoader::new(Arc::clone(&dataset), mode, sampler.clone(), config);
    let err = new(DetectMode::Val { size: 0 }, &sampler, config(2, 0, 0)).unwrap_err();
    assert!(
        matches!(&err, LoaderError::Augment(e) if e.field == "input_size"),
        "{err:?}"
    );
    let bad = YoloxAugConfig {
        mixup_scale: (0.0, 1.0),
        ..YoloxAugConfig::default()
    };
    let err = new(DetectMode::Train(bad), &sampler, config(2, 0, 0)).unwrap_err();
    assert!(err.to_string().contains("mixup_scale"), "{err}");
    let err = new(train_mode(), &sampler, config(0, 0, 0)).unwrap_err();
    assert_eq!(err, LoaderError::ZeroBatchSize);
    let err = new(train_mode(), &EpochSampler::new(3, false, 0), config(2, 0, 0)).unwrap_err();
    assert_eq!(err, LoaderError::SamplerLength { sampler: 3, dataset: 7 });
}

fn coco_mini() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/coco-mini"))
}

#[test]
#[ignore = "reads the 80-image COCO subset from ../shared/data/coco-mini"]
fn real_coco_mini_batches_load_at_416() {
    let root = coco_mini();
    if !root.join("annotations/instances_train2017.json").is_file() {
        eprintln!("skipped: {} is missing", root.display());
        return;
    }
    let train = Arc::new(CocoDataset::open(&root, "train2017").unwrap());
    let aug = YoloxAugConfig {
        input_size: 416,
        ..YoloxAugConfig::default()
    };
    let mut ids = HashSet::new();
    for mode in [DetectMode::Train(aug), DetectMode::Train(YoloxAugConfig::yolox_nano())] {
        let loader = loader(&train, mode, true, config(4, 2, 1));
        let batches: Vec<_> = loader.epoch(0).take(3).map(Result::unwrap).collect();
        for batch in &batches {
            assert_eq!(batch.shape, [4, 3, 416, 416]);
            assert!(batch.images.iter().all(|v| (0.0..=255.0).contains(v)));
            for boxes in &batch.targets {
                for b in boxes {
                    let [x1, y1, x2, y2] = b.xyxy;
                    assert!(0.0 <= x1 && x1 + 1.0 < x2 && x2 <= 416.0 && 0.0 <= y1 && y1 + 1.0 < y2 && y2 <= 416.0);
                    assert!(b.class < 80);
                }
            }
            ids.extend(batch.image_ids.iter().copied());
        }
        let targets: usize = batches
            .iter()
            .map(|b| b.targets.iter().map(Vec::len).sum::<usize>())
            .sum();
        assert!(targets > 0);
    }
    assert!(ids.len() > 4);
    let val_set = Arc::new(CocoDataset::open(&root, "val2017").unwrap());
    let val = loader(&val_set, DetectMode::Val { size: 416 }, false, config(8, 2, 1));
    let first = val.epoch(0).next().unwrap().unwrap();
    for (i, image) in val_set.images()[..8].iter().enumerate() {
        assert_eq!(first.image_ids[i], image.id);
        let ratio = first.ratios[i].unwrap();
        assert_eq!(ratio, (416.0 / image.height as f32).min(416.0 / image.width as f32));
        assert_eq!(first.targets[i].len(), image.boxes.len());
    }
}
