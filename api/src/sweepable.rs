//! The hyperparameters a search may sweep, as one typed list: its name in `spec.search`,
//! whether its values are whole numbers, which variants it changes (from the variants' own
//! rules) and how a value is set on a trial. Validation, candidate generation and the trial
//! specs all read this list; the CRD's description of `spec.search` is checked against it.

use crate::{Hyper, ModelSpec, Variant};

/// One sweepable hyperparameter.
pub struct Sweepable {
    /// The key in `spec.search` (a `hyper` field in camelCase, or `model.<field>`).
    pub name: &'static str,
    /// Whether values must be whole numbers (then searched by `list` or `intRange` only).
    pub integer: bool,
    /// The largest value the field holds (an integer field's type bound).
    pub max: f64,
    affects: fn(Variant) -> bool,
    set: Setter,
}

impl Sweepable {
    /// Whether the parameter changes what `variant` trains (lambdaRate means nothing to D1-D3).
    pub fn affects(&self, variant: Variant) -> bool {
        (self.affects)(variant)
    }

    /// Sets `value` on a trial's model and hyperparameters (whole numbers for integer ones:
    /// validation has checked that they are).
    pub fn set(&self, model: &mut ModelSpec, hyper: &mut Hyper, value: f64) {
        (self.set)(model, hyper, value)
    }
}

impl std::fmt::Debug for Sweepable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweepable")
            .field("name", &self.name)
            .field("integer", &self.integer)
            .finish()
    }
}

fn every(_: Variant) -> bool {
    true
}

type Setter = fn(&mut ModelSpec, &mut Hyper, f64);

impl Sweepable {
    const fn real(name: &'static str, affects: fn(Variant) -> bool, set: Setter) -> Sweepable {
        Sweepable {
            name,
            integer: false,
            max: f64::MAX,
            affects,
            set,
        }
    }

    const fn integer(name: &'static str, max: u64, affects: fn(Variant) -> bool, set: Setter) -> Sweepable {
        Sweepable {
            name,
            integer: true,
            max: max as f64,
            affects,
            set,
        }
    }
}

/// The largest integer an f64 (a swept value) holds exactly: 2^53.
const MAX_EXACT_INTEGER: u64 = 1 << 53;
const U32: u64 = u32::MAX as u64;

/// Every parameter a search may sweep.
pub const SWEEPABLE: &[Sweepable] = &[
    Sweepable::real("lr", every, |_, h, v| h.lr = v),
    Sweepable::real("lrCritic", Variant::has_critic, |_, h, v| h.lr_critic = v),
    Sweepable::real("beta1", every, |_, h, v| h.beta1 = v),
    Sweepable::real("lrMinRatio", every, |_, h, v| h.lr_min_ratio = v),
    Sweepable::integer("batchSize", U32, every, |_, h, v| h.batch_size = v as u32),
    Sweepable::real("wDis", Variant::has_critic, |_, h, v| h.w_dis = v),
    Sweepable::integer(
        "disWarmupSteps",
        MAX_EXACT_INTEGER,
        Variant::has_critic,
        |_, h, v| h.dis_warmup_steps = v as u64,
    ),
    Sweepable::real("dClip", Variant::has_critic, |_, h, v| h.d_clip = v),
    Sweepable::real("lambdaRate", Variant::has_rate_loss, |_, h, v| h.lambda_rate = v),
    Sweepable::integer(
        "rateWarmupSteps",
        MAX_EXACT_INTEGER,
        Variant::has_rate_loss,
        |_, h, v| h.rate_warmup_steps = v as u64,
    ),
    Sweepable::integer(
        "codePretrainSteps",
        MAX_EXACT_INTEGER,
        Variant::has_compressor,
        |_, h, v| h.code_pretrain_steps = v as u64,
    ),
    Sweepable::real("reconstructionWeight", Variant::has_compressor, |_, h, v| {
        h.reconstruction_weight = v
    }),
    // Only with hyper.distill set (validation says so otherwise).
    Sweepable::real("distill.weight", Variant::has_compressor, |_, h, v| {
        if let Some(d) = h.distill.as_mut() {
            d.weight = v
        }
    }),
    Sweepable::real("lrBitModel", Variant::has_compressor, |_, h, v| {
        h.lr_bit_model = v
    }),
    Sweepable::integer("model.codeChannels", U32, Variant::has_compressor, |m, _, v| {
        m.code_channels = Some(v as u32)
    }),
    Sweepable::integer("model.downsample", U32, Variant::has_compressor, |m, _, v| {
        m.downsample = Some(v as u32)
    }),
    Sweepable::integer("model.decoderWidth", U32, Variant::has_compressor, |m, _, v| {
        m.decoder_width = Some(v as u32)
    }),
    Sweepable::integer("model.encoderWidth", U32, Variant::has_compressor, |m, _, v| {
        m.encoder_width = Some(v as u32)
    }),
];

/// The sweepable parameter called `name`.
pub fn sweepable(name: &str) -> Option<&'static Sweepable> {
    SWEEPABLE.iter().find(|s| s.name == name)
}

/// Whether `param` changes what `variant` trains (false for unknown parameters).
pub fn affects(param: &str, variant: Variant) -> bool {
    sweepable(param).is_some_and(|s| s.affects(variant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Preset;

    #[test]
    fn each_parameter_sets_the_field_it_names() {
        let base_model = ModelSpec::new(Preset::Small, 128, 2);
        let base_hyper = Hyper {
            distill: Some(crate::Distill {
                from: "trial:t-d1-000".into(),
                weight: 1.0,
                loss: crate::DistillLoss::SegLoss,
            }),
            ..Hyper::default()
        };
        for s in SWEEPABLE {
            let (mut m, mut h) = (base_model.clone(), base_hyper.clone());
            s.set(&mut m, &mut h, 4.0);
            // A dotted name is a path: model.<field> in the model, <field>.<sub> in hyper.
            let value = |model: &ModelSpec, hyper: &Hyper| match s.name.split_once('.') {
                Some(("model", f)) => serde_json::to_value(model).unwrap()[f].clone(),
                Some((f, sub)) => serde_json::to_value(hyper).unwrap()[f][sub].clone(),
                None => serde_json::to_value(hyper).unwrap()[s.name].clone(),
            };
            let (before, after) = (value(&base_model, &base_hyper), value(&m, &h));
            assert_ne!(before, after, "{} did not change its field", s.name);
            assert_eq!(after.as_f64(), Some(4.0), "{} set {after}", s.name);
        }
    }

    #[test]
    fn the_crd_describes_every_sweepable_parameter() {
        let schema = serde_json::to_value(schemars::schema_for!(crate::ExperimentSpec)).unwrap();
        let text = schema["properties"]["search"]["description"]
            .as_str()
            .expect("spec.search has a description")
            // One line: where the doc comment breaks its lines does not matter.
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for s in SWEEPABLE {
            assert!(
                text.contains(s.name),
                "the CRD's description of spec.search lacks {}",
                s.name
            );
        }
        let integers: Vec<&str> = SWEEPABLE
            .iter()
            .filter(|s| s.integer && !s.name.starts_with("model."))
            .map(|s| s.name)
            .collect();
        assert!(
            text.contains(&format!("integer ones, {}", integers.join(", "))),
            "the description names the integer parameters {integers:?}: {text}"
        );
    }

    #[test]
    fn the_variants_own_rules_decide_what_a_parameter_affects() {
        assert!(affects("lambdaRate", Variant::D4) && !affects("lambdaRate", Variant::D3));
        assert!(affects("lrCritic", Variant::D1) && !affects("lrCritic", Variant::D2));
        assert!(affects("model.downsample", Variant::D2) && !affects("model.downsample", Variant::D1));
        assert!(!affects("noSuchThing", Variant::D4));
    }
}
