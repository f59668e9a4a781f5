//! JPEG-2000 through `openjp2` (OpenJPEG ported to Rust): a raw J2K codestream (no JP2 box
//! wrapper, the smallest legal file), one quality layer whose rate is set as a compression
//! ratio, 9/7 irreversible wavelet and the colour transform for RGB. OpenJPEG's stream API
//! works on files, so each image passes through a private temporary file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use openjp2::{
    opj_cparameters_t, opj_dparameters_t, opj_image, opj_image_comptparm, Codec, Stream, CODEC_FORMAT,
    COLOR_SPACE,
};

fn scratch(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "orchestra-j2k-{}-{}-{tag}.j2k",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Removes the scratch file however the function ends.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Compresses an interleaved 8-bit square image (1 or 3 channels) to about `bpp` bits per
/// pixel (the codec's rate control aims at it; the true size is what counts).
pub fn encode(pixels: &[u8], side: u32, channels: usize, bpp: f64) -> Result<Vec<u8>, String> {
    encode_rect(pixels, side, side, channels, bpp)
}

/// `encode` for a `width` x `height` image (a slice of a volume).
pub fn encode_rect(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: usize,
    bpp: f64,
) -> Result<Vec<u8>, String> {
    let n = (width * height) as usize;
    if pixels.len() != n * channels || !(channels == 1 || channels == 3) {
        return Err(format!(
            "JPEG-2000: {} bytes for a {width}x{height}x{channels} image",
            pixels.len()
        ));
    }
    let cmpt = opj_image_comptparm {
        dx: 1,
        dy: 1,
        w: width,
        h: height,
        x0: 0,
        y0: 0,
        prec: 8,
        bpp: 8,
        sgnd: 0,
    };
    let space = if channels == 3 {
        COLOR_SPACE::OPJ_CLRSPC_SRGB
    } else {
        COLOR_SPACE::OPJ_CLRSPC_GRAY
    };
    let mut image: Box<opj_image> =
        opj_image::create(&vec![cmpt; channels], space).ok_or("JPEG-2000: cannot create the image")?;
    image.x0 = 0;
    image.y0 = 0;
    image.x1 = width;
    image.y1 = height;
    for (c, data) in image
        .comps_data_mut_iter()
        .ok_or("JPEG-2000: image has no components")?
        .enumerate()
    {
        for (i, v) in data.iter_mut().enumerate() {
            *v = pixels[i * channels + c] as i32;
        }
    }
    // One quality layer, its rate as a compression ratio against the raw 8-bit samples.
    let mut rates = [0f32; 100];
    rates[0] = ((8 * channels) as f64 / bpp.max(1e-3)) as f32;
    let mut params = opj_cparameters_t {
        tcp_numlayers: 1,
        tcp_rates: rates,
        cp_disto_alloc: 1,
        irreversible: 1,
        tcp_mct: if channels == 3 { 1 } else { 0 },
        // Five decompositions need at least 32 pixels a side; fewer for tiny images.
        numresolution: (1 + (width.min(height) as f64).log2().floor() as i32 - 4).clamp(1, 6),
        ..Default::default()
    };
    let file = Scratch(scratch("enc"));
    {
        let mut codec = Codec::new_encoder(CODEC_FORMAT::OPJ_CODEC_J2K).ok_or("JPEG-2000: no encoder")?;
        let mut stream = Stream::new_file(&file.0, 1 << 16, false).map_err(|e| format!("JPEG-2000: {e}"))?;
        let ok = codec.setup_encoder(&mut params, &mut image) != 0
            && codec.start_compress(&mut image, &mut stream) != 0
            && codec.encode(&mut stream) != 0
            && codec.end_compress(&mut stream) != 0;
        if !ok {
            return Err(format!("JPEG-2000: encoding at {bpp} bpp failed"));
        }
    }
    std::fs::read(&file.0).map_err(|e| format!("JPEG-2000: {e}"))
}

/// Decodes a J2K codestream to interleaved 8-bit pixels with `channels` channels.
pub fn decode(bytes: &[u8], channels: usize) -> Result<Vec<u8>, String> {
    let file = Scratch(scratch("dec"));
    std::fs::write(&file.0, bytes).map_err(|e| format!("JPEG-2000: {e}"))?;
    let mut codec = Codec::new_decoder(CODEC_FORMAT::OPJ_CODEC_J2K).ok_or("JPEG-2000: no decoder")?;
    let mut params = opj_dparameters_t::default();
    if codec.setup_decoder(&mut params) == 0 {
        return Err("JPEG-2000: decoder setup failed".into());
    }
    let mut stream = Stream::new_file(&file.0, 1 << 16, true).map_err(|e| format!("JPEG-2000: {e}"))?;
    let mut image = codec
        .read_header(&mut stream)
        .ok_or("JPEG-2000: unreadable header")?;
    if codec.decode(&mut stream, &mut image) == 0 || codec.end_decompress(&mut stream) == 0 {
        return Err("JPEG-2000: decoding failed".into());
    }
    let comps: Vec<&[i32]> = image
        .comps_data_iter()
        .ok_or("JPEG-2000: no components decoded")?
        .map(|c| c.data)
        .collect();
    if comps.len() != channels {
        return Err(format!(
            "JPEG-2000: {} components, expected {channels}",
            comps.len()
        ));
    }
    let n = comps[0].len();
    let mut out = vec![0u8; n * channels];
    for (c, data) in comps.iter().enumerate() {
        for (i, v) in data.iter().enumerate() {
            out[i * channels + c] = (*v).clamp(0, 255) as u8;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{mean_abs_error, ramps};
    use super::*;

    #[test]
    fn rate_follows_the_target_and_the_image_survives() {
        let side = 64u32;
        let pixels = ramps(side, 4, 2, 40);
        let small = encode(&pixels, side, 3, 0.25).unwrap();
        let large = encode(&pixels, side, 3, 2.0).unwrap();
        assert!(small.len() < large.len(), "{} vs {}", small.len(), large.len());
        let bpp = 8.0 * large.len() as f64 / (side * side) as f64;
        assert!(bpp < 2.5, "about the asked rate: {bpp}");
        let back = decode(&large, 3).unwrap();
        assert_eq!(back.len(), pixels.len());
        let err = mean_abs_error(&back, &pixels);
        assert!(err < 20.0, "mean absolute error {err}");
        assert!(decode(&small[..small.len() / 2], 3).is_err() || decode(b"junk", 3).is_err());
    }
}
