//! TensorBoard's event files, written beside `metrics.jsonl`, so that `tensorboard --logdir` on
//! a store (or on one Experiment's folder in it) shows every trial's curves, one run per trial.
//!
//! The format is TensorFlow's record file of `Event` protocol buffers: each record is its length
//! (u64, little-endian), a masked CRC-32C of those 8 bytes, the bytes, and a masked CRC-32C of
//! the bytes. An `Event` holds `wall_time` (field 1, double), `step` (2, int64), and either
//! `file_version` (3, string; the first record of a file) or a `summary` (5) of `Value`s, each a
//! `tag` (1, string) and a `simple_value` (2, float). Those few fields are encoded here by hand
//! rather than through a protobuf code generator.
//!
//! Each run of a trial (its start, or a resume from a checkpoint) writes a file of its own, named
//! by the store's layout (`TrialKeys::events`) so that they sort in the order they were written; TensorBoard reads a folder's files in that
//! order and, when a later file goes back to an earlier step, drops what the earlier one held
//! from there on (its purge of orphaned data), which is what resuming from a checkpoint means.

use super::trainer::StepMetrics;
use crate::eval::Evaluation;

/// Seconds since the Unix epoch, as events carry them.
pub fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A training step's scalars: its losses, the learning rate, the critic's weight and the
/// step's throughput (images per second over all ranks).
pub fn step_scalars(m: &StepMetrics, images_per_second: f64) -> Vec<(&'static str, f64)> {
    let mut v = vec![("loss/seg", m.loss_seg)];
    v.extend(m.loss_dis.map(|x| ("loss/dis", x)));
    v.extend(m.loss_rate.map(|x| ("loss/rate", x)));
    v.extend(m.loss_critic.map(|x| ("loss/critic", x)));
    v.extend(m.loss_distill.map(|x| ("loss/distill", x)));
    v.extend(m.loss_reconstruction.map(|x| ("loss/reconstruction", x)));
    v.extend([
        ("train/lr", m.lr),
        ("train/w_dis", m.w_dis),
        ("train/images_per_second", images_per_second),
    ]);
    v
}

/// An evaluation's scalars on the held-out split: Dice and IoU, and for the variants that code,
/// the bits per pixel of the real bitstreams and the training estimate.
pub fn eval_scalars(e: &Evaluation) -> Vec<(&'static str, f64)> {
    let mut v = vec![("eval/dice", e.scores.dice), ("eval/iou", e.scores.iou)];
    if let Some(r) = &e.rate {
        v.extend(r.bpp.map(|b| ("eval/bpp", b)));
        v.push(("eval/bpp_estimate", r.bpp_estimate));
    }
    v
}

/// One run's event file, kept whole in memory and written to the store at each checkpoint (it
/// grows by about 40 bytes per scalar).
pub struct EventFile {
    bytes: Vec<u8>,
}

impl EventFile {
    /// A run starting at `wall_time` (seconds since the epoch) after `first_step` steps.
    pub fn new(wall_time: f64, first_step: u64) -> EventFile {
        let mut file = EventFile { bytes: Vec::new() };
        let mut event = Vec::new();
        event_header(&mut event, wall_time, first_step);
        bytes_field(&mut event, 3, b"brain.Event:2");
        record(&mut file.bytes, &event);
        file
    }

    /// One event of scalars at `step`; values that are not finite are left out (TensorBoard
    /// would plot them as gaps anyway, and NaN has no float32 that compares equal).
    pub fn scalars(&mut self, wall_time: f64, step: u64, values: &[(&str, f64)]) {
        let mut summary = Vec::new();
        for (tag, value) in values.iter().filter(|(_, v)| v.is_finite()) {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            v.push((2 << 3) | 5);
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        if summary.is_empty() {
            return;
        }
        let mut event = Vec::new();
        event_header(&mut event, wall_time, step);
        bytes_field(&mut event, 5, &summary);
        record(&mut self.bytes, &event);
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn event_header(out: &mut Vec<u8>, wall_time: f64, step: u64) {
    out.push((1 << 3) | 1);
    out.extend_from_slice(&wall_time.to_le_bytes());
    out.push(2 << 3);
    varint(out, step);
}

/// A length-delimited field (a string, bytes or an embedded message).
fn bytes_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// The record format's checksum: CRC-32C, rotated and offset (TensorFlow's `crc32c::Mask`).
fn masked_crc(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), a byte at a time from a table.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask_match_the_published_values() {
        // The CRC-32C check value (RFC 3720, appendix B.4) and 32 zero bytes.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(masked_crc(b""), 0xa282_ead8);
    }

    #[test]
    fn records_frame_events_with_checked_lengths() {
        let mut f = EventFile::new(1.5, 0);
        f.scalars(2.0, 300, &[("loss/seg", 0.25), ("skipped", f64::NAN)]);
        let b = f.bytes();
        // First record: the version event.
        let len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        assert_eq!(
            u32::from_le_bytes(b[8..12].try_into().unwrap()),
            masked_crc(&b[..8])
        );
        let event = &b[12..12 + len];
        assert_eq!(event[0], 0x09);
        assert_eq!(f64::from_le_bytes(event[1..9].try_into().unwrap()), 1.5);
        assert!(event.ends_with(b"brain.Event:2"));
        let crc = u32::from_le_bytes(b[12 + len..16 + len].try_into().unwrap());
        assert_eq!(crc, masked_crc(event));
        // Second record: step 300 as a varint (0xAC 0x02), one value, the NaN left out.
        let second = &b[16 + len..];
        let len2 = u64::from_le_bytes(second[..8].try_into().unwrap()) as usize;
        let event = &second[12..12 + len2];
        assert_eq!(&event[9..12], &[0x10, 0xAC, 0x02]);
        assert!(event.windows(8).any(|w| w == b"loss/seg"));
        assert!(!event.windows(7).any(|w| w == b"skipped"));
        assert!(event.ends_with(&0.25f32.to_le_bytes()));
        assert_eq!(second.len(), 16 + len2);
        // Nothing to say, no record.
        let before = f.bytes().len();
        f.scalars(3.0, 301, &[("x", f64::INFINITY)]);
        assert_eq!(f.bytes().len(), before);
    }
}
