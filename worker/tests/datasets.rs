//! Dataset loading: the real layouts on ../shared/data when present, and every kind of broken
//! input rejected with an error naming the file.

mod common;

use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage};
use orchestra_worker::data::{DataError, Dataset};

fn write_rgb(path: &Path, w: u32, h: u32) {
    RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 90]))
        .save(path)
        .unwrap();
}

fn write_mask(path: &Path, w: u32, h: u32, value: u8) {
    GrayImage::from_fn(w, h, |x, _| Luma([if x < w / 2 { 0 } else { value }]))
        .save(path)
        .unwrap();
}

/// A valid ISIC-layout folder with `n` images.
fn isic_folder(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::create_dir_all(dir.path().join("masks")).unwrap();
    for i in 0..n {
        write_rgb(&dir.path().join(format!("images/ISIC_{i:07}.jpg")), 40, 30);
        write_mask(
            &dir.path().join(format!("masks/ISIC_{i:07}_segmentation.png")),
            40,
            30,
            255,
        );
    }
    dir
}

fn uri(dir: &Path, query: &str) -> String {
    format!("file://{}{query}", dir.display())
}

#[test]
fn isic_layout_loads_resizes_and_splits_by_sorted_id() {
    let dir = isic_folder(5);
    let d = Dataset::open(&uri(dir.path(), "?val=2"), 32).unwrap();
    assert_eq!((d.channels, d.classes, d.size), (3, 2, 32));
    assert_eq!((d.train.len(), d.val.len()), (3, 2));
    assert_eq!(d.train[0].image.len(), 32 * 32 * 3);
    assert!(d.val[0].mask.iter().all(|&m| m <= 1));
    assert!(d.val[0].mask.contains(&1) && d.val[0].mask.contains(&0));
}

#[test]
fn class_index_layout_infers_or_checks_the_class_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::create_dir_all(dir.path().join("masks")).unwrap();
    for i in 0..4 {
        GrayImage::from_fn(16, 16, |x, y| Luma([(x * y) as u8]))
            .save(dir.path().join(format!("images/p{i}.png")))
            .unwrap();
        write_mask(&dir.path().join(format!("masks/p{i}.png")), 16, 16, 4);
    }
    let d = Dataset::open(&uri(dir.path(), "?val=1"), 16).unwrap();
    assert_eq!((d.channels, d.classes), (1, 5));
    let err = Dataset::open(&uri(dir.path(), "?val=1&classes=3"), 16)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("p0.png") && err.contains("value 4") && err.contains("below 3"),
        "{err}"
    );
}

fn expect_error(dir: &Path, needle_file: &str, needle: &str) {
    let err = Dataset::open(&uri(dir, ""), 32).expect_err("broken dataset must not load");
    let text = err.to_string();
    assert!(
        text.contains(needle_file) && text.contains(needle),
        "expected {needle_file} / {needle}, got: {text}"
    );
}

#[test]
fn a_missing_mask_is_named() {
    let dir = isic_folder(3);
    std::fs::remove_file(dir.path().join("masks/ISIC_0000001_segmentation.png")).unwrap();
    expect_error(dir.path(), "ISIC_0000001_segmentation.png", "missing");
}

#[test]
fn a_truncated_image_is_named() {
    let dir = isic_folder(3);
    let path = dir.path().join("images/ISIC_0000002.jpg");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    expect_error(dir.path(), "ISIC_0000002.jpg", "cannot read image");
}

#[test]
fn an_unreadable_image_is_named() {
    let dir = isic_folder(3);
    std::fs::write(dir.path().join("images/ISIC_0000000.jpg"), b"not an image at all").unwrap();
    expect_error(dir.path(), "ISIC_0000000.jpg", "cannot read image");
}

#[test]
fn a_size_mismatch_is_named() {
    let dir = isic_folder(3);
    write_mask(
        &dir.path().join("masks/ISIC_0000001_segmentation.png"),
        20,
        30,
        255,
    );
    expect_error(dir.path(), "ISIC_0000001_segmentation.png", "20x30");
}

#[test]
fn an_isic_mask_value_outside_0_and_255_is_named() {
    let dir = isic_folder(3);
    write_mask(
        &dir.path().join("masks/ISIC_0000002_segmentation.png"),
        40,
        30,
        128,
    );
    expect_error(dir.path(), "ISIC_0000002_segmentation.png", "value 128");
}

#[test]
fn a_channel_mismatch_is_named() {
    let dir = isic_folder(3);
    GrayImage::new(40, 30)
        .save(dir.path().join("images/ISIC_0000002.png"))
        .unwrap();
    std::fs::remove_file(dir.path().join("images/ISIC_0000002.jpg")).unwrap();
    expect_error(dir.path(), "ISIC_0000002.png", "1 channels");
}

#[test]
fn empty_and_missing_folders_are_named() {
    let dir = tempfile::tempdir().unwrap();
    expect_error(dir.path(), "images", "no such folder");
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::create_dir_all(dir.path().join("masks")).unwrap();
    let err = Dataset::open(&uri(dir.path(), ""), 32).unwrap_err();
    assert!(matches!(err, DataError::Empty(_)), "{err}");
}

#[test]
fn real_isic_2017_loads() {
    let Some(shared) = common::shared_data() else {
        return;
    };
    let root = shared.join("isic2017/train");
    let d = Dataset::open(&format!("file://{}?limit=60&val=10", root.display()), 128).unwrap();
    assert_eq!(
        (d.channels, d.classes, d.train.len(), d.val.len()),
        (3, 2, 50, 10)
    );
    let fg: usize = d
        .train
        .iter()
        .map(|s| s.mask.iter().filter(|&&m| m == 1).count())
        .sum();
    let fraction = fg as f64 / (50.0 * 128.0 * 128.0);
    assert!((0.05..0.8).contains(&fraction), "lesion fraction {fraction}");
}

#[test]
fn real_hvsmr_slices_load_with_five_classes() {
    let Some(shared) = common::shared_data() else {
        return;
    };
    let root = shared.join("hvsmr2016_slices");
    let d = Dataset::open(&format!("file://{}?val=6", root.display()), 128).unwrap();
    assert_eq!((d.channels, d.classes, d.train.len(), d.val.len()), (1, 5, 30, 6));
}

#[test]
fn a_dataset_in_s3_is_mirrored_once_and_loads_like_a_folder() {
    use orchestra_store::moto::{create_bucket, point_at, start_moto, SERIAL};
    use orchestra_store::Store;
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let moto = start_moto();
    create_bucket(moto.port, "data");
    point_at(moto.port);
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("ORCHESTRA_DATA_CACHE", cache.path());
    let local = isic_folder(5);
    let store = Store::open("s3://data/isic/train").unwrap();
    for sub in ["images", "masks"] {
        for entry in std::fs::read_dir(local.path().join(sub)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            store
                .put(&format!("{sub}/{name}"), std::fs::read(entry.path()).unwrap())
                .unwrap();
        }
    }
    let d = Dataset::open("s3://data/isic/train?val=2", 32).unwrap();
    assert_eq!((d.train.len(), d.val.len(), d.channels, d.classes), (3, 2, 3, 2));
    let from_disk = Dataset::open(&uri(local.path(), "?val=2"), 32).unwrap();
    assert_eq!(d.train[0].image, from_disk.train[0].image);

    // A second open lists the folder again but fetches nothing.
    let cached =
        orchestra_worker::data::remote::mirror_dir("s3://data/isic/train").join("images/ISIC_0000000.jpg");
    let mtime = || std::fs::metadata(&cached).unwrap().modified().unwrap();
    let before = mtime();
    std::thread::sleep(std::time::Duration::from_millis(20));
    Dataset::open("s3://data/isic/train?val=2", 32).unwrap();
    assert_eq!(mtime(), before);

    // Listing needs the server: with it gone, the error names the dataset.
    drop(moto);
    let err = Dataset::open("s3://data/isic/train?val=2", 32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://data/isic/train"), "{err}");
    let err = Dataset::open("s3://data/nothing-here", 32);
    assert!(err.is_err());
    std::env::remove_var("ORCHESTRA_DATA_CACHE");
}
