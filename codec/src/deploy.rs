//! What a deployable model file holds, for its two readers: the worker (libtorch, writes and
//! reads it) and the edge (pure Rust, reads C and q). A safetensors file whose metadata holds
//! the network sizes and the variant; C's tensors under `c.`, q's logits as `q.logits`.
//!
//! Both sides build their entropy coder here from the same numbers (q's logits as stored, C's
//! weights as stored), so the coder's table and the model tag agree bit for bit: a stream from
//! the edge decodes in the cloud and a stream from another model is refused.

use crate::{quantize, tag_of, CodeShape, Codec, CodecError};

/// Metadata key of the network sizes (JSON).
pub const META_CONFIG: &str = "orchestra.config";
/// Metadata key of the variant the model was trained as (D2, D3, D4).
pub const META_VARIANT: &str = "orchestra.variant";
/// Metadata key of a volume model's scan preparation (JSON: intensity normalisation and the
/// whole factors scans are reduced by), which the edge must repeat before C.
pub const META_VOLUME: &str = "orchestra.volume";
/// Prefix of C's tensors.
pub const COMPRESSOR_PREFIX: &str = "c.";
/// q's logits of +1, (K, CONTEXTS).
pub const BIT_MODEL_LOGITS: &str = "q.logits";

/// q(+1 | channel, context) from q's logits, in f64 with Rust's own `exp`: the same numbers on
/// every machine and in every program that reads the file.
pub fn probabilities(logits: &[f32]) -> Vec<f64> {
    logits
        .iter()
        .map(|&l| 1.0 / (1.0 + (-(l as f64)).exp()))
        .collect()
}

/// The coder of a trained model: q's logits ([channel * CONTEXTS + context]) give the table;
/// the table and C's weights (each tensor's values, tensors in name order) give the tag.
pub fn codec_for_model<'a>(
    logits: &[f32],
    compressor_weights: impl IntoIterator<Item = &'a [f32]>,
    default_shape: CodeShape,
) -> Result<Codec, CodecError> {
    let table = quantize(&probabilities(logits));
    let mut tag_bytes: Vec<u8> = table.iter().flat_map(|p| p.to_le_bytes()).collect();
    for values in compressor_weights {
        tag_bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    Codec::new(table, tag_of(tag_bytes), default_shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CONTEXTS;

    fn shape() -> CodeShape {
        CodeShape {
            channels: 2,
            sides: vec![4, 4],
        }
    }

    #[test]
    fn zero_logits_are_even_odds() {
        let p = probabilities(&[0.0, 20.0, -20.0]);
        assert_eq!(p[0], 0.5);
        assert!(p[1] > 0.999_999 && p[2] < 1e-6);
    }

    #[test]
    fn the_tag_depends_on_the_table_and_on_the_compressor() {
        let logits = vec![0.3f32; 2 * CONTEXTS as usize];
        let w = [0.5f32, -0.25];
        let a = codec_for_model(&logits, [&w[..]], shape()).unwrap();
        let same = codec_for_model(&logits, [&w[..]], shape()).unwrap();
        assert_eq!(a.tag, same.tag);
        let other_w = [0.5f32, -0.5];
        let b = codec_for_model(&logits, [&other_w[..]], shape()).unwrap();
        let mut other_logits = logits.clone();
        other_logits[7] = 2.0;
        let c = codec_for_model(&other_logits, [&w[..]], shape()).unwrap();
        // An 8-bit tag collides for 1 in 256 pairs; these two inputs were checked not to.
        assert_ne!(a.tag, b.tag);
        assert_ne!(a.tag, c.tag);
    }

    #[test]
    fn a_table_of_the_wrong_size_is_refused() {
        let logits = vec![0.0f32; 5];
        assert!(matches!(
            codec_for_model(&logits, [], shape()),
            Err(CodecError::Coder(_))
        ));
    }
}
