//! Evaluation of a 2D trial on its validation images: each batch through the whole model
//! (inference mode), the predicted labels scored per image, and every image's code entropy
//! coded into a real bitstream whose size gives the rate.

use orchestra_api::RateScores;
use tch::{Device, Kind, Tensor};

use super::evaluation::Evaluation;
use super::scores::{dice_iou, summarise};
use crate::data::{batch, Sample};
use crate::nets::Model;

/// Evaluates `model` on `samples` in batches: Dice and IoU per image, the rate estimate, and
/// each image's real bitstream, decoded again to check the round trip.
pub fn evaluate_images(
    model: &Model,
    samples: &[Sample],
    channels: usize,
    size: u32,
    device: Device,
    batch_size: usize,
) -> Evaluation {
    let classes = model.config.classes;
    let mut dice_rows = Vec::new();
    let mut iou_rows = Vec::new();
    let mut code_bits = Vec::new();
    let codec = crate::codec::model_code::codec_for(model);
    let (mut stream_bytes, mut header_bytes, mut failures) = (Vec::new(), 0usize, 0u32);
    tch::no_grad(|| {
        for chunk in samples.chunks(batch_size.max(1)) {
            let refs: Vec<&Sample> = chunk.iter().collect();
            let (images, labels) = batch(&refs, channels, size, device);
            let fwd = model.forward(&images, false);
            let pred = model.labels(&fwd.probs);
            let (d, i) = dice_iou(&pred, &labels, classes);
            dice_rows.push(d);
            iou_rows.push(i);
            if let (Some(q), Some(bits)) = (&model.bit_model, &fwd.bits) {
                code_bits.push(q.code_length(bits));
            }
            // Real bitstreams of every evaluation image, each decoded again to check the round trip.
            if let (Some(codec), Some(bits)) = (&codec, &fwd.bits) {
                let shape = crate::codec::model_code::code_shape(bits);
                for row in crate::codec::model_code::code_rows(bits) {
                    match codec.encode(&shape, &row) {
                        Ok(stream) => {
                            if codec.decode(&stream).map(|(_, back)| back != row).unwrap_or(true) {
                                failures += 1;
                            }
                            header_bytes += codec.header_len(&stream).unwrap_or(0);
                            stream_bytes.push(stream.len());
                        }
                        Err(_) => failures += 1,
                    }
                }
            }
        }
    });
    let scores = summarise(&dice_rows, &iou_rows, samples.len());
    let rate = (!code_bits.is_empty()).then(|| {
        let c = &model.config;
        let estimate = Tensor::cat(&code_bits, 0).mean(Kind::Double).double_value(&[]);
        let pixels = c.pixels() as f64;
        let streams = stream_bytes.len().max(1) as f64;
        let total: usize = stream_bytes.iter().sum();
        let measured = !stream_bytes.is_empty();
        RateScores {
            code_bits: c.code_bits() as u64,
            bits_per_pixel_raw: c.code_bits() as f64 / pixels,
            bpp_estimate: estimate / pixels,
            bpp: measured.then(|| 8.0 * total as f64 / streams / pixels),
            bpp_no_header: measured.then(|| 8.0 * (total - header_bytes) as f64 / streams / pixels),
            mean_stream_bytes: measured.then(|| total as f64 / streams),
            round_trip_failures: failures,
        }
    });
    Evaluation { scores, rate }
}
