//! Rate against accuracy on volumes (the paper's Table 1 at volume scale): standard codecs that
//! are fair to a volume coder compress each held-out scan, the D1 model segments the decoded
//! scan by the same sliding window as everything else, and Dice per structure is scored on the
//! scan's own voxels; bpp is every byte the codec wrote over those voxels.
//!
//! Both codecs see the scan as C does (prepared: normalised and reduced), quantised to 8 bits
//! between the volume's own minimum and maximum (the two numbers, 8 bytes, are counted):
//! - JPEG-2000 per slice, each slice its own codestream;
//! - H.264 over the slice sequence with inter prediction (the first slice intra, every later
//!   one predicted), since a volume is a video and intra-only coding would flatter the learned
//!   coder. Slices are padded to even sides by repeating the last row and column.

use super::rate_point::RatePoint;
use super::{h264, jpeg2000};
use crate::data::volumes::VolumePreprocessing;
use crate::data::VolumeSample;
use crate::eval::scores::summarise;
use crate::eval::volumes::{evaluate_volumes, predict_volume, score_volume};
use crate::nets::Model;
use tch::Device;

/// Bytes of the quantisation range sent with every volume (two f32).
const RANGE_BYTES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VolumeCodec {
    /// JPEG-2000 per slice at a target rate in bits per (8-bit) pixel.
    Jpeg2000Slices(f64),
    /// H.264 over the slices at a quantiser (0-51).
    H264Sequence(u8),
}

impl VolumeCodec {
    pub fn method(&self) -> &'static str {
        match self {
            VolumeCodec::Jpeg2000Slices(_) => "JPEG-2000 per slice",
            VolumeCodec::H264Sequence(_) => "H.264 over slices (inter)",
        }
    }

    pub fn label(&self) -> String {
        match self {
            VolumeCodec::Jpeg2000Slices(b) => format!("target {b} bpp"),
            VolumeCodec::H264Sequence(qp) => format!("QP {qp}"),
        }
    }

    /// Bytes written for a volume and the volume as decoded.
    pub fn round_trip(&self, voxels: &[f32], sides: [usize; 3]) -> Result<(usize, Vec<f32>), String> {
        let (lo, hi) = voxels
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
        let bytes: Vec<u8> = voxels.iter().map(|&v| ((v - lo) * scale).round() as u8).collect();
        let [depth, h, w] = sides;
        let slices: Vec<&[u8]> = bytes.chunks_exact(h * w).collect();
        let (written, decoded) = match *self {
            VolumeCodec::Jpeg2000Slices(bpp) => {
                let (mut written, mut decoded) = (0, Vec::with_capacity(bytes.len()));
                for s in &slices {
                    let file = jpeg2000::encode_rect(s, w as u32, h as u32, 1, bpp)?;
                    written += file.len();
                    decoded.extend(jpeg2000::decode(&file, 1)?);
                }
                (written, decoded)
            }
            VolumeCodec::H264Sequence(qp) => {
                let (ew, eh) = (w + w % 2, h + h % 2);
                let frames: Vec<Vec<u8>> = slices.iter().map(|s| pad_even(s, w, h)).collect();
                let packets = h264::encode_sequence(&frames, ew, eh, qp)?;
                let written = packets.iter().map(Vec::len).sum();
                let mut decoded = Vec::with_capacity(bytes.len());
                for f in h264::decode_sequence(&packets)? {
                    for y in 0..h {
                        decoded.extend_from_slice(&f[y * ew..y * ew + w]);
                    }
                }
                (written, decoded)
            }
        };
        if decoded.len() != depth * h * w {
            return Err(format!(
                "{}: decoded {} voxels of {}",
                self.method(),
                decoded.len(),
                depth * h * w
            ));
        }
        let back = decoded
            .iter()
            .map(|&b| if scale > 0.0 { b as f32 / scale + lo } else { lo })
            .collect();
        Ok((written + RANGE_BYTES, back))
    }
}

/// A slice padded to even sides by repeating its last column and row.
fn pad_even(slice: &[u8], w: usize, h: usize) -> Vec<u8> {
    let (ew, eh) = (w + w % 2, h + h % 2);
    let mut out = Vec::with_capacity(ew * eh);
    for y in 0..eh {
        let row = &slice[y.min(h - 1) * w..y.min(h - 1) * w + w];
        out.extend_from_slice(row);
        if ew > w {
            out.push(row[w - 1]);
        }
    }
    out
}

/// One point per codec setting: the D1 model segments every decoded held-out volume.
pub fn volume_codec_curve(
    d1: &Model,
    volumes: &[VolumeSample],
    prep: &VolumePreprocessing,
    settings: &[VolumeCodec],
    window_batch: usize,
) -> Result<Vec<RatePoint>, String> {
    let device = d1.vs.device();
    let classes = d1.config.classes;
    let mut points = Vec::with_capacity(settings.len());
    for setting in settings {
        let (mut bits, mut voxels) = (0f64, 0f64);
        let (mut dice_rows, mut iou_rows) = (Vec::new(), Vec::new());
        for vol in volumes {
            let (bytes, decoded) = setting.round_trip(&vol.voxels, vol.sides)?;
            let p = predict_volume(d1, None, &decoded, vol.sides, device, window_batch);
            let (d, i) = score_volume(p.labels, vol, prep, classes);
            dice_rows.push(d);
            iou_rows.push(i);
            bits += 8.0 * bytes as f64;
            voxels += vol.source_voxels() as f64;
        }
        let scores = summarise(&dice_rows, &iou_rows, volumes.len());
        let label = setting.label();
        let measured = (scores.dice, scores.iou);
        points.push(RatePoint::codec(
            setting.method(),
            label,
            bits,
            voxels,
            measured,
            volumes.len(),
        ));
    }
    Ok(points)
}

/// A learned model's point: its real volume streams and whole-volume scores.
pub fn volume_learned_point(
    name: &str,
    model: &Model,
    volumes: &[VolumeSample],
    prep: &VolumePreprocessing,
) -> Result<RatePoint, String> {
    let e = evaluate_volumes(model, volumes, prep, Device::Cpu, 4);
    RatePoint::learned(name, model, e, volumes.len(), "volume")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(sides: [usize; 3]) -> Vec<f32> {
        let [d, h, w] = sides;
        (0..d * h * w)
            .map(|i| {
                let (z, y, x) = (i / (h * w), (i / w) % h, i % w);
                ((x as f32 / 7.0).sin() + (y as f32 / 5.0).cos()) * 2.0 + z as f32 * 0.1 - 1.0
            })
            .collect()
    }

    #[test]
    fn both_codecs_round_trip_odd_slices_and_rate_follows_the_knob() {
        // Odd sides (H.264 pads them); slices big enough that headers do not dominate.
        let sides = [4, 47, 62];
        let v = volume(sides);
        let range = 2.0 * 4.0 + 0.5;
        for (coarse, fine) in [
            (VolumeCodec::Jpeg2000Slices(0.2), VolumeCodec::Jpeg2000Slices(4.0)),
            (VolumeCodec::H264Sequence(46), VolumeCodec::H264Sequence(20)),
        ] {
            let (small, _) = coarse.round_trip(&v, sides).unwrap();
            let (large, back) = fine.round_trip(&v, sides).unwrap();
            assert!(small < large, "{coarse:?}: {small} vs {large} bytes");
            assert_eq!(back.len(), v.len());
            let err = back.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum::<f32>() / v.len() as f32;
            assert!(err < 0.05 * range, "{fine:?}: mean error {err}");
        }
        assert_eq!(pad_even(&[1, 2, 3, 4, 5, 6], 3, 2), vec![1, 2, 3, 3, 4, 5, 6, 6]);
    }
}
