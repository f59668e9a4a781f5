//! Adam, written out so that its state (moments and step count) can be checkpointed and
//! restored exactly, and so that data-parallel training can average gradients between the
//! backward pass and the update.

use tch::Tensor;

pub struct Adam {
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    pub fn new(params: Vec<(String, Tensor)>, beta1: f64, beta2: f64) -> Adam {
        let m = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like()).collect();
        Adam {
            params,
            m,
            v,
            t: 0,
            beta1,
            beta2,
            eps: 1e-8,
        }
    }

    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    pub fn steps_taken(&self) -> i64 {
        self.t
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let m = &mut self.m[i];
                let v = &mut self.v[i];
                *m *= self.beta1;
                *m += &g * (1.0 - self.beta1);
                *v *= self.beta2;
                *v += &g * &g * (1.0 - self.beta2);
                let update = (&*m / bc1) / ((&*v / bc2).sqrt() + self.eps) * lr;
                *p -= update;
            }
        });
    }

    /// Moments as named tensors, `<prefix>.m.<param>` and `<prefix>.v.<param>`.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("{prefix}.m.{name}"), self.m[i].shallow_clone()));
            out.push((format!("{prefix}.v.{name}"), self.v[i].shallow_clone()));
        }
        out
    }

    /// Restores moments saved by `state` and the step count.
    pub fn load_state(&mut self, prefix: &str, saved: &[(String, Tensor)], t: i64) -> Result<(), String> {
        let find = |key: &str| saved.iter().find(|(n, _)| n == key).map(|(_, t)| t);
        tch::no_grad(|| {
            for (i, (name, p)) in self.params.iter().enumerate() {
                for (moment, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                    let key = format!("{prefix}.{moment}.{name}");
                    let src = find(&key).ok_or_else(|| format!("optimizer state lacks {key}"))?;
                    if src.size() != p.size() {
                        return Err(format!(
                            "{key}: shape {:?}, parameter has {:?}",
                            src.size(),
                            p.size()
                        ));
                    }
                    slot.copy_(&src.to_device(p.device()));
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
    use tch::Kind;

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
}
