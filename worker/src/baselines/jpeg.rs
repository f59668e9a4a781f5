//! JPEG through the `image` crate's encoder and decoder, at a quality setting.

use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;

/// Compresses an interleaved 8-bit image (1 or 3 channels) at `quality` (1-100).
pub fn encode(pixels: &[u8], side: u32, channels: usize, quality: u8) -> Result<Vec<u8>, String> {
    let colour = if channels == 3 {
        ExtendedColorType::Rgb8
    } else {
        ExtendedColorType::L8
    };
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode(pixels, side, side, colour)
        .map_err(|e| format!("JPEG encoding at quality {quality}: {e}"))?;
    Ok(out)
}

/// Decodes a JPEG file to interleaved 8-bit pixels with `channels` channels.
pub fn decode(bytes: &[u8], channels: usize) -> Result<Vec<u8>, String> {
    let decoder =
        image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    Ok(if channels == 3 {
        img.to_rgb8().into_raw()
    } else {
        img.to_luma8().into_raw()
    })
}
