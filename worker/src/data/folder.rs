//! Image folders on disk: the ISIC layout (`images/ID.jpg` + `masks/ID_segmentation.png`,
//! masks in {0, 255}) and the generic layout (`images/ID.png` + `masks/ID.png`, masks holding
//! class indices). Everything is checked before training starts: a broken dataset never trains.

use std::path::{Path, PathBuf};

use image::{imageops::FilterType, DynamicImage, GenericImageView};

use super::error::DataError;
use super::{Dataset, Sample};

/// Which naming and label convention the folder follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `masks/ID_segmentation.png`, values 0 and 255.
    Isic,
    /// `masks/ID.png`, values are class indices.
    ClassIndex,
}

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// Loads and checks a folder dataset, resized to `size` x `size`.
pub fn load(
    root: &Path,
    size: u32,
    val: Option<usize>,
    classes: Option<usize>,
    limit: Option<usize>,
    uri: &str,
) -> Result<Dataset, DataError> {
    let images_dir = root.join("images");
    let masks_dir = root.join("masks");
    for dir in [root, &images_dir, &masks_dir] {
        if !dir.is_dir() {
            return Err(DataError::MissingFolder(dir.to_path_buf()));
        }
    }
    let mut ids = image_files(&images_dir)?;
    if let Some(limit) = limit {
        ids.truncate(limit);
    }
    if ids.is_empty() {
        return Err(DataError::Empty(images_dir));
    }

    let layout = if masks_dir.join(format!("{}_segmentation.png", ids[0].0)).exists() {
        Layout::Isic
    } else {
        Layout::ClassIndex
    };

    let mut samples = Vec::with_capacity(ids.len());
    let mut channels = None;
    let mut max_label = 0u8;
    for (id, image_path) in &ids {
        let mask_path = mask_file(layout, &masks_dir, id);
        if !mask_path.exists() {
            return Err(DataError::MissingMask {
                image: image_path.clone(),
                mask: mask_path,
            });
        }
        let (image, mask) = read_pair(image_path, &mask_path)?;
        let this_channels = if image.color().has_color() { 3 } else { 1 };
        let expected = *channels.get_or_insert(this_channels);
        if expected != this_channels {
            return Err(DataError::ChannelMismatch {
                path: image_path.clone(),
                found: this_channels,
                expected,
            });
        }
        let labels = check_labels(&mask, &mask_path, layout, classes)?;
        max_label = max_label.max(*labels.iter().max().unwrap_or(&0));
        samples.push(resize_sample(&image, labels, mask.dimensions(), expected, size));
    }

    let classes = match (layout, classes) {
        (Layout::Isic, _) => 2,
        (_, Some(c)) => c,
        (_, None) => (max_label as usize + 1).max(2),
    };
    let n = samples.len();
    let val = val.unwrap_or((n / 10).max(1));
    if val >= n {
        return Err(DataError::Split {
            uri: uri.to_string(),
            reason: format!("val={val} leaves no training images out of {n}"),
        });
    }
    let val_samples = samples.split_off(n - val);
    Ok(Dataset {
        name: uri.to_string(),
        channels: channels.unwrap_or(3),
        classes,
        size,
        train: samples,
        val: val_samples,
    })
}

/// The images of `images_dir` (JPEG or PNG) by id (the file's stem), in id order.
fn image_files(images_dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut ids: Vec<(String, PathBuf)> = std::fs::read_dir(images_dir)
        .map_err(|e| DataError::Unreadable {
            path: images_dir.to_path_buf(),
            reason: e.to_string(),
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p.clone())))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Where the mask of image `id` is: ISIC's `<id>_segmentation.png`, else `<id>.png`.
fn mask_file(layout: Layout, masks_dir: &Path, id: &str) -> PathBuf {
    match layout {
        Layout::Isic => masks_dir.join(format!("{id}_segmentation.png")),
        Layout::ClassIndex => masks_dir.join(format!("{id}.png")),
    }
}

/// An image and its mask, which must have the same size.
fn read_pair(image_path: &Path, mask_path: &Path) -> Result<(DynamicImage, DynamicImage), DataError> {
    let image = read_image(image_path)?;
    let mask = read_image(mask_path)?;
    if image.dimensions() != mask.dimensions() {
        let ((iw, ih), (mw, mh)) = (image.dimensions(), mask.dimensions());
        return Err(DataError::SizeMismatch {
            image: image_path.to_path_buf(),
            mask: mask_path.to_path_buf(),
            image_w: iw,
            image_h: ih,
            mask_w: mw,
            mask_h: mh,
        });
    }
    Ok((image, mask))
}

/// Decodes with the edge's reader: bounded, and a truncated JPEG is an error, not a grey patch.
fn read_image(path: &Path) -> Result<DynamicImage, DataError> {
    orchestra_edge::input::read_image(path).map_err(|e| DataError::Unreadable {
        path: e.path,
        reason: e.reason,
    })
}

/// Converts a mask image to class indices, rejecting any value the layout does not allow.
fn check_labels(
    mask: &DynamicImage,
    path: &Path,
    layout: Layout,
    classes: Option<usize>,
) -> Result<Vec<u8>, DataError> {
    let luma = mask.to_luma8();
    let width = luma.width();
    let mut labels = Vec::with_capacity(luma.len());
    for (i, &v) in luma.as_raw().iter().enumerate() {
        let label = match layout {
            Layout::Isic => match v {
                0 => Some(0),
                255 => Some(1),
                _ => None,
            },
            Layout::ClassIndex => match classes {
                Some(c) if v as usize >= c => None,
                _ => Some(v),
            },
        };
        let Some(label) = label else {
            return Err(DataError::BadLabel {
                mask: path.to_path_buf(),
                value: v,
                x: i as u32 % width,
                y: i as u32 / width,
                expected: match (layout, classes) {
                    (Layout::Isic, _) => "0 or 255".into(),
                    (_, Some(c)) => format!("a class index below {c}"),
                    (_, None) => unreachable!("class-index masks without a class count accept every value"),
                },
            });
        };
        labels.push(label);
    }
    Ok(labels)
}

fn resize_sample(
    image: &DynamicImage,
    labels: Vec<u8>,
    (w, h): (u32, u32),
    channels: usize,
    size: u32,
) -> Sample {
    // The edge prepares its inputs with the same function: C sees the pixels it was trained on.
    let image = orchestra_edge::input::model_bytes(image, size, channels);
    let mask = if (w, h) == (size, size) {
        labels
    } else {
        let buf = image::GrayImage::from_raw(w, h, labels).expect("mask buffer matches its size");
        image::imageops::resize(&buf, size, size, FilterType::Nearest).into_raw()
    };
    Sample { image, mask }
}
