//! H.264 intra through Cisco's OpenH264 (the `openh264` crate builds its source): each image is
//! one IDR frame (intra only, with its SPS and PPS, as a still-image codec would send it) at a
//! fixed quantiser, 4:2:0. Grey images go through as RGB with equal channels and come back as
//! the mean of the three.

use openh264::decoder::Decoder;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, QpRange, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};
use openh264::OpenH264API;

/// An encoder at a fixed quantiser: the quantiser alone sets the rate (min = max); frame
/// skipping is on only so that the library does not warn about rate control on every encoder,
/// and the target bitrate is far above any frame here, so nothing is ever skipped.
fn encoder_at(qp: u8) -> Result<Encoder, String> {
    let config = EncoderConfig::new()
        .rate_control_mode(RateControlMode::Quality)
        .qp(QpRange::new(qp, qp))
        .bitrate(BitRate::from_bps(200_000_000))
        .skip_frames(true);
    Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| format!("H.264 encoder: {e}"))
}

/// Compresses an interleaved 8-bit square image (1 or 3 channels) at quantiser `qp` (0-51).
pub fn encode(pixels: &[u8], side: u32, channels: usize, qp: u8) -> Result<Vec<u8>, String> {
    let n = (side * side) as usize;
    if pixels.len() != n * channels || !(channels == 1 || channels == 3) || !side.is_multiple_of(2) {
        return Err(format!(
            "H.264: {} bytes for a {side}x{side}x{channels} image (side must be even)",
            pixels.len()
        ));
    }
    let rgb: Vec<u8> = if channels == 3 {
        pixels.to_vec()
    } else {
        pixels.iter().flat_map(|&v| [v, v, v]).collect()
    };
    let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (side as usize, side as usize)));
    let qp = qp.min(51);
    let mut encoder = encoder_at(qp)?;
    let stream = encoder
        .encode(&yuv)
        .map_err(|e| format!("H.264 encoding at QP {qp}: {e}"))?;
    let bytes = stream.to_vec();
    if bytes.is_empty() {
        return Err(format!("H.264: the encoder skipped the frame at QP {qp}"));
    }
    Ok(bytes)
}

/// Compresses grey `width` x `height` frames (even sides) as one video at quantiser `qp`: the
/// first frame intra, every later one predicted from the frames before it (a volume's slices
/// as a sequence: inter prediction is what makes a video codec fair against a volume coder).
/// One packet per frame; their sizes add up to the stream's.
pub fn encode_sequence(
    frames: &[Vec<u8>],
    width: usize,
    height: usize,
    qp: u8,
) -> Result<Vec<Vec<u8>>, String> {
    if !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
        || frames.iter().any(|f| f.len() != width * height)
    {
        return Err(format!(
            "H.264: frames must be {width}x{height} grey bytes with even sides"
        ));
    }
    let qp = qp.min(51);
    let mut encoder = encoder_at(qp)?;
    let mut packets = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        let rgb: Vec<u8> = frame.iter().flat_map(|&v| [v, v, v]).collect();
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (width, height)));
        let bytes = encoder
            .encode(&yuv)
            .map_err(|e| format!("H.264 encoding frame {i} at QP {qp}: {e}"))?
            .to_vec();
        if bytes.is_empty() {
            return Err(format!("H.264: the encoder skipped frame {i} at QP {qp}"));
        }
        packets.push(bytes);
    }
    Ok(packets)
}

/// Decodes `encode_sequence`'s packets, in order, to grey frames.
pub fn decode_sequence(packets: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let mut decoder = Decoder::new().map_err(|e| format!("H.264 decoder: {e}"))?;
    let mut frames = Vec::with_capacity(packets.len());
    for (i, p) in packets.iter().enumerate() {
        if let Some(f) = decoder
            .decode(p)
            .map_err(|e| format!("H.264 decoding frame {i}: {e}"))?
        {
            frames.push(grey(&to_rgb(&f)));
        }
    }
    for f in decoder
        .flush_remaining()
        .map_err(|e| format!("H.264 decoding: {e}"))?
    {
        frames.push(grey(&to_rgb(&f)));
    }
    if frames.len() != packets.len() {
        return Err(format!(
            "H.264: {} frames decoded from {} packets",
            frames.len(),
            packets.len()
        ));
    }
    Ok(frames)
}

/// The mean of each RGB pixel's channels.
fn grey(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| ((p[0] as u16 + p[1] as u16 + p[2] as u16) / 3) as u8)
        .collect()
}

/// Decodes one intra frame to interleaved 8-bit pixels with `channels` channels.
pub fn decode(bytes: &[u8], channels: usize) -> Result<Vec<u8>, String> {
    let mut decoder = Decoder::new().map_err(|e| format!("H.264 decoder: {e}"))?;
    let rgb = {
        let frame = decoder
            .decode(bytes)
            .map_err(|e| format!("H.264 decoding: {e}"))?
            .map(|f| to_rgb(&f));
        match frame {
            Some(rgb) => rgb,
            None => {
                let rest = decoder
                    .flush_remaining()
                    .map_err(|e| format!("H.264 decoding: {e}"))?;
                to_rgb(rest.first().ok_or("H.264: the stream holds no frame")?)
            }
        }
    };
    Ok(if channels == 3 { rgb } else { grey(&rgb) })
}

fn to_rgb(frame: &openh264::decoder::DecodedYUV<'_>) -> Vec<u8> {
    let (w, h) = frame.dimensions();
    let mut rgb = vec![0u8; w * h * 3];
    frame.write_rgb8(&mut rgb);
    rgb
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{mean_abs_error, ramps};
    use super::*;

    #[test]
    fn quantiser_sets_the_rate_and_the_image_survives() {
        let side = 64u32;
        let pixels = ramps(side, 3, 2, 50);
        let coarse = encode(&pixels, side, 3, 45).unwrap();
        let fine = encode(&pixels, side, 3, 20).unwrap();
        assert!(coarse.len() < fine.len(), "{} vs {}", coarse.len(), fine.len());
        let back = decode(&fine, 3).unwrap();
        assert_eq!(back.len(), pixels.len());
        let err = mean_abs_error(&back, &pixels);
        assert!(err < 20.0, "mean absolute error {err}");
        let grey: Vec<u8> = (0..side * side).map(|i| (i % 200) as u8).collect();
        assert_eq!(
            decode(&encode(&grey, side, 1, 30).unwrap(), 1).unwrap().len(),
            grey.len()
        );
        assert!(decode(b"not h264", 3).is_err());
    }

    #[test]
    fn a_sequence_predicts_later_frames_from_earlier_ones() {
        // Slowly changing slices, as a volume's are.
        let (w, h) = (48usize, 32usize);
        let frames: Vec<Vec<u8>> = (0..6)
            .map(|z| {
                (0..w * h)
                    .map(|i| ((i % w) * 3 + (i / w) * 2 + z) as u8)
                    .collect()
            })
            .collect();
        let packets = encode_sequence(&frames, w, h, 30).unwrap();
        assert_eq!(packets.len(), 6);
        let later: usize = packets[1..].iter().map(Vec::len).sum::<usize>() / 5;
        assert!(
            later * 2 < packets[0].len(),
            "predicted frames {later} bytes, the first {}",
            packets[0].len()
        );
        let back = decode_sequence(&packets).unwrap();
        assert_eq!(back.len(), 6);
        for (a, b) in back.iter().zip(&frames) {
            assert!(mean_abs_error(a, b) < 10.0);
        }
        assert!(encode_sequence(&frames, 47, 32, 30).is_err(), "odd side");
    }
}
