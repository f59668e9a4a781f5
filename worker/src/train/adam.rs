//! Adam over one parameter group held in flat buffers, written out so that its state (moments
//! and step count) can be checkpointed and restored exactly, and so that data-parallel training
//! can average gradients between the backward pass and the update.
//!
//! Every parameter of the group is a view into one contiguous buffer, and its gradient a view
//! into a second one laid out the same way. The update is then a handful of element-wise
//! operations over whole buffers (PyTorch's multi-tensor Adam does the same with its foreach
//! kernels) instead of several small kernels per tensor, zeroing the gradients is one fill, and
//! the gradients go to the all-reduce without being gathered into buckets and scattered back.
//! Each element sees the same operations in the same order as in a per-tensor Adam, so the
//! results are the same to the last bit (tested). Checkpoints keep the per-parameter layout:
//! `state` names views of the moments per parameter.
//!
//! Each parameter starts at a multiple of [`ALIGN_BYTES`] from the buffer's start, as a tensor
//! of its own would from the caching allocator: cuDNN's fp32 convolutions read their weights
//! with vector loads and fail with "misaligned address" on a weight packed right behind an
//! odd-sized bias (seen on an H200 with D1). The gaps between parameters are zeros with zero
//! gradients, which Adam, the clamp and the all-reduce leave at zero.

use tch::{Kind, Tensor};

/// Where each parameter may start in the flat buffers: the CUDA caching allocator's own
/// granularity, so a view is aligned as a fresh tensor would be.
pub const ALIGN_BYTES: i64 = 512;

pub struct Adam {
    params: Vec<(String, Tensor)>,
    /// (offset, elements) of each parameter in the buffers; offsets are aligned.
    spans: Vec<(i64, i64)>,
    /// The parameters' values end to end; each parameter is a view into it.
    data: Tensor,
    /// Their gradients, laid out as `data`; each parameter's gradient is a view into it.
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    t: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    /// Moves `params` (float tensors on one device) into flat buffers: their values are copied
    /// in and each tensor becomes a view of its slice, so whoever holds them (the model's
    /// variable store) sees the same values, now stored end to end.
    pub fn new(params: Vec<(String, Tensor)>, beta1: f64, beta2: f64) -> Adam {
        let (kind, device) = params
            .first()
            .map_or((Kind::Float, tch::Device::Cpu), |(_, p)| (p.kind(), p.device()));
        let align = (ALIGN_BYTES / kind.elt_size_in_bytes() as i64).max(1);
        let mut spans = Vec::with_capacity(params.len());
        let mut total = 0i64;
        for (name, p) in &params {
            assert!(
                p.kind() == kind && p.device() == device,
                "parameter {name}: every parameter of a group has one kind and device"
            );
            let n = p.numel() as i64;
            let offset = (total + align - 1) / align * align;
            spans.push((offset, n));
            total = offset + n;
        }
        let data = Tensor::zeros([total], (kind, device));
        let grad = Tensor::zeros([total], (kind, device));
        tch::no_grad(|| {
            for ((_, p), &(offset, n)) in params.iter().zip(&spans) {
                let view = data.narrow(0, offset, n).view(p.size().as_slice());
                view.shallow_clone().copy_(p);
                p.shallow_clone().set_data(&view);
            }
        });
        // Every parameter gets a gradient now (a zero one, from one backward pass through a sum
        // that ignores its values), which then becomes a view of its slice of `grad`. Autograd
        // accumulates into a defined gradient in place and `zero_grad` fills it in place, so the
        // views hold for the life of the optimiser.
        let trainable: Vec<Tensor> = params
            .iter()
            .filter(|(_, p)| p.requires_grad())
            .map(|(_, p)| (p * 0.0).sum(Kind::Float))
            .collect();
        if !trainable.is_empty() {
            Tensor::stack(&trainable, 0).sum(Kind::Float).backward();
        }
        tch::no_grad(|| {
            for ((name, p), &(offset, _)) in params.iter().zip(&spans) {
                let mut g = p.grad();
                if !g.defined() {
                    // A frozen parameter at construction: it gets no gradient and no update.
                    tracing::debug!(param = %name, "no gradient to bind");
                    continue;
                }
                // The parameter is already its slice of `data`: the gradient takes its shape
                // and strides at the same offset of `grad`.
                let _ = g.set_source_tensor_storage_offset_(&grad, offset, p.size(), p.stride());
            }
        });
        Adam {
            m: data.zeros_like(),
            v: data.zeros_like(),
            params,
            spans,
            data,
            grad,
            t: 0,
            beta1,
            beta2,
            eps: 1e-8,
        }
    }

    /// Every parameter's gradient, end to end (for the all-reduce).
    pub fn flat_grad(&self) -> &Tensor {
        &self.grad
    }

    pub fn steps_taken(&self) -> i64 {
        self.t
    }

    pub fn zero_grad(&mut self) {
        let _ = self.grad.zero_();
    }

    /// One update with learning rate `lr`, over the whole group at once.
    pub fn step(&mut self, lr: f64) {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        tch::no_grad(|| {
            let g = &self.grad;
            self.m *= self.beta1;
            self.m += g * (1.0 - self.beta1);
            self.v *= self.beta2;
            self.v += g * g * (1.0 - self.beta2);
            let update = (&self.m / bc1) / ((&self.v / bc2).sqrt() + self.eps) * lr;
            self.data -= update;
        });
    }

    /// Forgets the moments and the step count, keeping the parameters and their gradient
    /// bindings: the next update is the first of a new optimiser.
    pub fn reset(&mut self) {
        let _ = self.m.zero_();
        let _ = self.v.zero_();
        self.t = 0;
    }

    /// Clips every parameter to [-c, c] (SegAN's critic), in one operation.
    pub fn clamp(&mut self, c: f64) {
        tch::no_grad(|| {
            let _ = self.data.clamp_(-c, c);
        });
    }

    /// A moment's view for parameter `i`, shaped as the parameter.
    fn moment(&self, moment: &Tensor, i: usize) -> Tensor {
        let (offset, n) = self.spans[i];
        moment
            .narrow(0, offset, n)
            .view(self.params[i].1.size().as_slice())
    }

    /// Moments as named tensors, `<prefix>.m.<param>` and `<prefix>.v.<param>`.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("{prefix}.m.{name}"), self.moment(&self.m, i)));
            out.push((format!("{prefix}.v.{name}"), self.moment(&self.v, i)));
        }
        out
    }

    /// Restores moments saved by `state` and the step count.
    pub fn load_state(&mut self, prefix: &str, saved: &[(String, Tensor)], t: i64) -> Result<(), String> {
        let find = |key: &str| saved.iter().find(|(n, _)| n == key).map(|(_, t)| t);
        tch::no_grad(|| {
            for (i, (name, p)) in self.params.iter().enumerate() {
                for (moment, buffer) in [("m", &self.m), ("v", &self.v)] {
                    let key = format!("{prefix}.{moment}.{name}");
                    let src = find(&key).ok_or_else(|| format!("optimizer state lacks {key}"))?;
                    if src.size() != p.size() {
                        return Err(format!(
                            "{key}: shape {:?}, parameter has {:?}",
                            src.size(),
                            p.size()
                        ));
                    }
                    self.moment(buffer, i).copy_(&src.to_device(p.device()));
                }
            }
            Ok(())
        })?;
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::layers::{conv_block, Activation, Spatial};
    use tch::nn::{self, ModuleT};

    /// Adam written out tensor by tensor: the optimiser the flat one replaced, kept as its
    /// reference.
    struct PerTensorAdam {
        params: Vec<Tensor>,
        m: Vec<Tensor>,
        v: Vec<Tensor>,
        t: i64,
        beta1: f64,
        beta2: f64,
    }

    impl PerTensorAdam {
        fn step(&mut self, lr: f64) {
            self.t += 1;
            let bc1 = 1.0 - self.beta1.powi(self.t as i32);
            let bc2 = 1.0 - self.beta2.powi(self.t as i32);
            tch::no_grad(|| {
                for (i, p) in self.params.iter_mut().enumerate() {
                    let g = p.grad();
                    let (m, v) = (&mut self.m[i], &mut self.v[i]);
                    *m *= self.beta1;
                    *m += &g * (1.0 - self.beta1);
                    *v *= self.beta2;
                    *v += &g * &g * (1.0 - self.beta2);
                    let update = (&*m / bc1) / ((&*v / bc2).sqrt() + 1e-8) * lr;
                    *p -= update;
                }
            });
        }
    }

    #[test]
    fn minimises_a_quadratic_like_torch_adam() {
        // torch.optim.Adam([x], lr=0.1) on (x - 3)^2 from x = 0: after one step x = 0.1
        // (the first step moves every coordinate by lr), and it converges to 3.
        let x = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let mut opt = Adam::new(vec![("x".into(), x.shallow_clone())], 0.9, 0.999);
        for i in 0..500 {
            opt.zero_grad();
            (&x - 3.0).square().sum(Kind::Float).backward();
            opt.step(0.1);
            if i == 0 {
                assert!((x.double_value(&[0]) - 0.1).abs() < 1e-6);
            }
        }
        assert!(
            (x.double_value(&[0]) - 3.0).abs() < 1e-2,
            "{}",
            x.double_value(&[0])
        );
    }

    /// Two conv blocks with BatchNorm and a head, as the networks are built.
    fn network(vs: &nn::VarStore) -> impl Fn(&Tensor) -> Tensor {
        let p = vs.root();
        let a = conv_block(&p / "a", 3, 8, 3, 1, false, Activation::Leaky, Spatial::Two);
        let b = conv_block(&p / "b", 8, 16, 4, 2, true, Activation::Leaky, Spatial::Two);
        let head = conv_block(&p / "c", 16, 1, 3, 1, false, Activation::Relu, Spatial::Two);
        move |x| head.forward_t(&b.forward_t(&a.forward_t(x, true), true), true)
    }

    /// Every parameter lives in the flat buffer and its gradient in the gradient buffer, at the
    /// same offset, aligned as a tensor of its own would be (the head's 1-element bias would
    /// push every later parameter 4 bytes off if they were packed end to end).
    fn assert_views_in_aligned_buffers(flat: &Adam) {
        let span = |t: &Tensor| (t.data_ptr() as usize, t.data_ptr() as usize + 4 * t.numel());
        let ((lo, hi), (glo, ghi)) = (span(&flat.data), span(&flat.grad));
        for (name, p) in &flat.params {
            let (at, grad_at) = (p.data_ptr() as usize, p.grad().data_ptr() as usize);
            assert!((lo..hi).contains(&at), "{name} is not in the buffer");
            assert!((glo..ghi).contains(&grad_at), "{name}'s gradient is not");
            assert_eq!(
                (at - lo) % ALIGN_BYTES as usize,
                0,
                "{name} starts {} bytes in",
                at - lo
            );
            assert_eq!(
                at - lo,
                grad_at - glo,
                "{name}'s gradient is laid out as its value"
            );
        }
    }

    #[test]
    fn the_flat_optimiser_equals_the_per_tensor_one_to_the_last_bit() {
        let (flat_vs, ref_vs) = (
            nn::VarStore::new(tch::Device::Cpu),
            nn::VarStore::new(tch::Device::Cpu),
        );
        crate::nets::rng::reseed(4);
        let flat_net = network(&flat_vs);
        crate::nets::rng::reseed(4);
        let ref_net = network(&ref_vs);
        let named = |vs: &nn::VarStore| {
            // The trainable ones: BatchNorm's running statistics are buffers, not parameters.
            let mut v: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let mut flat = Adam::new(named(&flat_vs), 0.5, 0.999);
        // Every element of every parameter, and at most one alignment's worth of gap before each.
        let (elements, count) = (
            named(&flat_vs).iter().map(|(_, p)| p.numel()).sum::<usize>(),
            flat.params.len(),
        );
        let padded = flat.flat_grad().numel();
        assert!(padded >= elements && padded < elements + count * ALIGN_BYTES as usize / 4);
        assert_views_in_aligned_buffers(&flat);
        let reference_params: Vec<Tensor> = named(&ref_vs).into_iter().map(|(_, p)| p).collect();
        let mut reference = PerTensorAdam {
            m: reference_params.iter().map(Tensor::zeros_like).collect(),
            v: reference_params.iter().map(Tensor::zeros_like).collect(),
            params: reference_params,
            t: 0,
            beta1: 0.5,
            beta2: 0.999,
        };
        for step in 0..20 {
            let x = Tensor::rand([4, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
            let y = Tensor::rand([4, 1, 8, 8], (Kind::Float, tch::Device::Cpu));
            flat.zero_grad();
            for p in &mut reference.params {
                p.zero_grad();
            }
            (flat_net(&x) - &y).square().mean(Kind::Float).backward();
            (ref_net(&x) - &y).square().mean(Kind::Float).backward();
            flat.step(2e-3);
            reference.step(2e-3);
            for ((name, a), b) in flat.params.iter().zip(&reference.params) {
                assert!(a.equal(b), "step {step}: {name} differs");
            }
        }
        // The moments come out per parameter, under the checkpoint's names, and load back.
        let state = flat.state("main");
        assert_eq!(state.len(), 2 * flat.params.len());
        for ((name, t), i) in state.iter().step_by(2).zip(0..) {
            assert_eq!(name, &format!("main.m.{}", flat.params[i].0));
            assert!(t.equal(&reference.m[i]), "{name}");
        }
        let saved: Vec<(String, Tensor)> = state.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        let _ = flat.m.zero_();
        flat.load_state("main", &saved, 20).unwrap();
        assert!(flat.moment(&flat.m, 0).equal(&reference.m[0]));
    }
}
