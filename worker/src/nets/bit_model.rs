//! q, the learned probability model of the code bits, and the rate loss it defines.
//!
//! Context model: the probability that bit (k, position) is +1 depends on its channel k and on
//! four already-coded neighbours, each -1, +1 or "absent" (outside the code): the previous
//! bit along the last axis, along the second-to-last axis, the diagonal of those two (2D) or the
//! previous slice (3D), and the same position in channel k - 1. With the coding order
//! channel-major then raster, every context bit is known to the decoder before the bit it
//! conditions, so the same table drives the real entropy coder.

use tch::{nn, Kind, Tensor};

use super::layers::Spatial;

/// Number of neighbour states: absent, -1, +1.
const STATES: i64 = 3;
/// Neighbours in a context.
const NEIGHBOURS: u32 = 4;
/// Contexts per channel: 3^4, as the codec's tables have them.
pub const CONTEXTS: i64 = STATES.pow(NEIGHBOURS);
const _: () = assert!(
    CONTEXTS == orchestra_codec::CONTEXTS,
    "the codec's tables need one entry per context"
);

#[derive(Debug)]
pub struct BitModel {
    /// Logit of q(+1) for each (channel, context).
    logits: Tensor,
    spatial: Spatial,
}

impl BitModel {
    pub fn new(p: nn::Path, code_channels: i64, spatial: Spatial) -> BitModel {
        BitModel {
            logits: p.var("logits", &[code_channels, CONTEXTS], nn::Init::Const(0.0)),
            spatial,
        }
    }

    /// q's logits of +1, [channel * CONTEXTS + context], as stored: the coder's table is built
    /// from them (`orchestra_codec::deploy`) in the same way on the edge and in the cloud.
    pub fn logit_values(&self) -> Vec<f32> {
        let l = self
            .logits
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float);
        Vec::<f32>::try_from(l.flatten(0, -1)).expect("a flat float tensor")
    }

    /// Context index (int64, same shape as `bits`) of every bit of a code (N, K, spatial...)
    /// holding -1 and +1.
    pub fn contexts(&self, bits: &Tensor) -> Tensor {
        let bits = bits.detach().to_kind(Kind::Float);
        let nd = bits.dim() as i64;
        // State of a shifted neighbour: bits + 1 maps -1 -> 0, +1 -> 2; the zero padding of an
        // absent neighbour maps to 1.
        let shifted = |dims: &[i64]| -> Tensor {
            let mut t = bits.shallow_clone();
            for &d in dims {
                let len = t.size()[d as usize];
                let mut pad = vec![0i64; 2 * (nd - d) as usize];
                // constant_pad_nd lists (before, after) pairs from the last dimension backwards.
                let slot = 2 * (nd - 1 - d) as usize;
                pad[slot] = 1;
                t = t.constant_pad_nd(pad.as_slice()).narrow(d, 0, len);
            }
            t + 1.0
        };
        let last = nd - 1;
        let third = match self.spatial {
            Spatial::Two => shifted(&[last, last - 1]),
            Spatial::Three => shifted(&[last - 2]),
        };
        let ctx = shifted(&[last]) + shifted(&[last - 1]) * 3.0 + third * 9.0 + shifted(&[1]) * 27.0;
        ctx.to_kind(Kind::Int64)
    }

    /// Logit of q(+1 | context) for every bit.
    pub fn bit_logits(&self, bits: &Tensor) -> Tensor {
        let ctx = self.contexts(bits);
        let k = bits.size()[1];
        let mut channel_shape = vec![1i64; bits.dim()];
        channel_shape[1] = k;
        let channel = Tensor::arange(k, (Kind::Int64, bits.device())).view(channel_shape.as_slice());
        let flat = (ctx + channel * CONTEXTS).flatten(0, -1);
        self.logits
            .view([-1])
            .index_select(0, &flat)
            .view(bits.size().as_slice())
    }

    /// Expected code length in bits of each bit, differentiable in `x` and in q:
    /// (1+x)/2 * -log2 q(+1) + (1-x)/2 * -log2 q(-1), an upper bound on the coded length
    /// (Theis et al. 2017). `x` are the pre-binarization activations, `bits` the sampled code
    /// that gives the contexts.
    pub fn expected_bits(&self, x: &Tensor, bits: &Tensor, detach_model: bool) -> Tensor {
        let mut logits = self.bit_logits(bits);
        if detach_model {
            logits = logits.detach();
        }
        let ln2 = std::f64::consts::LN_2;
        let nlog2_plus = -logits.log_sigmoid() / ln2;
        let nlog2_minus = -(-&logits).log_sigmoid() / ln2;
        (x + 1.0) / 2.0 * nlog2_plus + (1.0 - x) / 2.0 * nlog2_minus
    }

    /// Ideal code length in bits of each image (N) of a hard code under q.
    pub fn code_length(&self, bits: &Tensor) -> Tensor {
        let logits = self.bit_logits(bits);
        // -log2 q(b) = -log_sigmoid(b * logit) / ln 2 for b in {-1, +1}.
        let per_bit = -(bits * logits).log_sigmoid() / std::f64::consts::LN_2;
        per_bit.flatten(1, -1).sum_dim_intlist(1, false, Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn contexts_read_only_causal_neighbours() {
        let vs = VarStore::new(Device::Cpu);
        let q = BitModel::new(vs.root(), 2, Spatial::Two);
        // Channel 0: [[+1, -1], [-1, +1]]; channel 1 all -1.
        let bits = Tensor::from_slice(&[1.0f32, -1.0, -1.0, 1.0, -1.0, -1.0, -1.0, -1.0]).view([1, 2, 2, 2]);
        let ctx: Vec<i64> = Vec::try_from(q.contexts(&bits).flatten(0, -1)).unwrap();
        // state: absent 1, -1 -> 0, +1 -> 2; ctx = left + 3 up + 9 diag + 27 prev-channel.
        assert_eq!(ctx[0], 1 + 3 + 9 + 27, "first bit has no neighbours");
        assert_eq!(ctx[1], 2 + 3 + 9 + 27, "left of (0,1) is +1");
        assert_eq!(ctx[2], 1 + 3 * 2 + 9 + 27, "up of (1,0) is +1");
        // (1,1): left -1 (0), up -1 (0), diagonal +1 (2), previous channel absent (1).
        assert_eq!(ctx[3], 9 * 2 + 27, "diag of (1,1) is +1");
        assert_eq!(ctx[4], 1 + 3 + 9 + 27 * 2, "channel 1 sees channel 0's +1");
    }

    #[test]
    fn uniform_model_costs_one_bit_per_bit() {
        let vs = VarStore::new(Device::Cpu);
        let q = BitModel::new(vs.root(), 3, Spatial::Two);
        let bits = Tensor::ones([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let len: Vec<f32> = Vec::try_from(q.code_length(&bits)).unwrap();
        assert!(len.iter().all(|&l| (l - 48.0).abs() < 1e-4), "{len:?}");
        let x = Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let e = q
            .expected_bits(&x, &bits, false)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((e - 1.0).abs() < 1e-6);
    }
}
