//! An image file as a model's input: decoded, resized to the model's side, grey or RGB, then
//! scaled to [0, 1]. The worker's dataset loader and its codec commands prepare images with the
//! same functions, so the edge feeds C exactly what C was trained on.

use std::path::{Path, PathBuf};

use image::{imageops::FilterType, DynamicImage};

use crate::layers::Planes;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct InputError {
    pub path: PathBuf,
    pub reason: String,
}

/// The largest image file the edge decodes (a 256x256 dermoscopy JPEG is about 8 KB).
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// Decodes an image file (PNG or JPEG, by content), bounded in file size and in the decoder's
/// allocations. A JPEG must end with its end-of-image marker: the decoder would otherwise fill
/// the missing part of a truncated file with grey and return it as an image.
pub fn read_image(path: &Path) -> Result<DynamicImage, InputError> {
    let err = |reason: String| InputError {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
    if bytes > MAX_IMAGE_BYTES {
        return Err(err(format!(
            "{bytes} bytes, above the limit of {MAX_IMAGE_BYTES}"
        )));
    }
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let format = image::guess_format(&data).map_err(|e| err(e.to_string()))?;
    if format == image::ImageFormat::Jpeg && !ends_with_jpeg_eoi(&data) {
        return Err(err(format!(
            "JPEG is truncated: no end-of-image marker (FF D9) at its end ({} bytes)",
            data.len()
        )));
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&data), format);
    // image's default limits bound the decoder's allocations (512 MiB).
    reader.limits(image::Limits::default());
    reader.decode().map_err(|e| err(e.to_string()))
}

/// Whether JPEG data ends with the EOI marker, allowing the zero or 0xFF padding some writers
/// append after it.
fn ends_with_jpeg_eoi(data: &[u8]) -> bool {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let trimmed = &data[..end];
    trimmed.ends_with(&[0xFF, 0xD9])
}

/// The image resized to `side` x `side` (bilinear "triangle" filter, skipped at that size) as
/// interleaved bytes: RGB for 3 channels, grey otherwise. Row-major (H, W, C).
pub fn model_bytes(image: &DynamicImage, side: u32, channels: usize) -> Vec<u8> {
    let resized;
    let image = if (image.width(), image.height()) == (side, side) {
        image
    } else {
        resized = image.resize_exact(side, side, FilterType::Triangle);
        &resized
    };
    if channels == 3 {
        image.to_rgb8().into_raw()
    } else {
        image.to_luma8().into_raw()
    }
}

/// An input's interleaved bytes (H, W, C) -> planes (C, H, W) of f32 in [0, 1], as the worker
/// batches them.
pub fn to_planes(bytes: &[u8], channels: usize, side: usize) -> Result<Planes, String> {
    let expected = side * side * channels;
    if bytes.len() != expected {
        return Err(format!(
            "{} bytes, a {side}x{side} image of {channels} channels has {expected}",
            bytes.len()
        ));
    }
    let mut data = vec![0f32; expected];
    for (i, &b) in bytes.iter().enumerate() {
        let (pixel, c) = (i / channels, i % channels);
        data[c * side * side + pixel] = b as f32 / 255.0;
    }
    Ok(Planes {
        channels,
        sides: [1, side, side],
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_become_planes_in_unit_range() {
        // A 2x2 RGB image: pixels (255, 0, 51), (0, 255, 102), then black.
        assert!(
            to_planes(&[255, 0, 51, 0, 255, 102], 3, 1).is_err(),
            "6 bytes are not one RGB pixel"
        );
        let p = to_planes(&[255, 0, 51, 0, 255, 102, 0, 0, 0, 0, 0, 0], 3, 2).unwrap();
        assert_eq!(p.sides, [1, 2, 2]);
        assert_eq!(p.data[..4], [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(p.data[4..8], [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(p.data[8], 0.2);
    }

    #[test]
    fn a_truncated_jpeg_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 90]));
        let full = dir.path().join("full.jpg");
        img.save(&full).unwrap();
        let bytes = std::fs::read(&full).unwrap();
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_image(&full).is_ok());
        let e = read_image(&cut).unwrap_err();
        assert_eq!(e.path, cut);
        assert!(e.reason.contains("truncated"), "{e}");
    }
}
