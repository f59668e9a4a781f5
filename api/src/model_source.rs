//! Where a compressing trial takes trained weights from: its warm start (`hyper.warmStart`) or
//! its distillation teacher (`hyper.distill.from`). Either a trial of the same Experiment, which
//! the runners then finish before starting the trials that read it, or a finished trial in any
//! store, named by its folder's URI.

use std::fmt;

/// A finished trial whose latest checkpoint another trial reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// `trial:<name>`: a trial of the same Experiment, in its store.
    Trial(String),
    /// `<store URI>/<experiment>/<trial>`: a trial of any Experiment in any store the worker
    /// can read (the last two path segments name the Experiment and the trial).
    Stored {
        store: String,
        experiment: String,
        trial: String,
    },
}

/// The prefix of a same-Experiment source.
pub const TRIAL_PREFIX: &str = "trial:";

impl ModelSource {
    /// Parses a source as a spec writes it.
    pub fn parse(text: &str) -> Result<ModelSource, String> {
        if let Some(name) = text.strip_prefix(TRIAL_PREFIX) {
            return if is_dns_label(name) {
                Ok(ModelSource::Trial(name.to_string()))
            } else {
                Err(format!(
                    "{TRIAL_PREFIX} must be followed by a trial name of this Experiment (lowercase letters, digits and '-', like my-sweep-d1-000)"
                ))
            };
        }
        let form = "must be trial:<name> (a trial of this Experiment) or <store URI>/<experiment>/<trial> (file://, s3://)";
        let (scheme, rest) = text.split_once("://").ok_or_else(|| form.to_string())?;
        if !matches!(scheme, "file" | "s3" | "memory") {
            return Err(format!("scheme {scheme}:// {form}"));
        }
        let trimmed = rest.trim_end_matches('/');
        let mut parts = trimmed.rsplitn(3, '/');
        let (Some(trial), Some(experiment), Some(base)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(form.to_string());
        };
        if trial.is_empty() || experiment.is_empty() || (base.is_empty() && scheme != "file") {
            return Err(form.to_string());
        }
        Ok(ModelSource::Stored {
            store: format!("{scheme}://{base}"),
            experiment: experiment.to_string(),
            trial: trial.to_string(),
        })
    }

    /// The trial of the same Experiment this source names, if it names one.
    pub fn same_experiment_trial(&self) -> Option<&str> {
        match self {
            ModelSource::Trial(name) => Some(name),
            ModelSource::Stored { .. } => None,
        }
    }

    /// The store, Experiment and trial to read, with `store` and `experiment` those of the
    /// trial that reads it.
    pub fn locate<'a>(&'a self, store: &'a str, experiment: &'a str) -> (&'a str, &'a str, &'a str) {
        match self {
            ModelSource::Trial(name) => (store, experiment, name),
            ModelSource::Stored {
                store,
                experiment,
                trial,
            } => (store, experiment, trial),
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Trial(name) => write!(f, "{TRIAL_PREFIX}{name}"),
            ModelSource::Stored {
                store,
                experiment,
                trial,
            } => write!(f, "{}/{experiment}/{trial}", store.trim_end_matches('/')),
        }
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_sources_name_a_trial_of_the_experiment() {
        let s = ModelSource::parse("trial:isic-d1-000").unwrap();
        assert_eq!(s.same_experiment_trial(), Some("isic-d1-000"));
        assert_eq!(
            s.locate("file:///r", "isic"),
            ("file:///r", "isic", "isic-d1-000")
        );
        assert_eq!(s.to_string(), "trial:isic-d1-000");
        for bad in ["trial:", "trial:Upper", "trial:-x", "trial:a/b"] {
            assert!(ModelSource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_sources_split_into_store_experiment_and_trial() {
        let s = ModelSource::parse("s3://runs/prefix/isic/isic-d1-000/").unwrap();
        assert_eq!(
            s.locate("file:///mine", "other"),
            ("s3://runs/prefix", "isic", "isic-d1-000")
        );
        assert_eq!(s.same_experiment_trial(), None);
        assert_eq!(s.to_string(), "s3://runs/prefix/isic/isic-d1-000");
        let f = ModelSource::parse("file:///tmp/store/exp/exp-d1-000").unwrap();
        assert_eq!(f.locate("", ""), ("file:///tmp/store", "exp", "exp-d1-000"));
        for bad in [
            "isic-d1-000",
            "http://x/a/b/c",
            "s3://bucket/only",
            "s3:///a/b",
            "file://a",
        ] {
            assert!(ModelSource::parse(bad).is_err(), "{bad}");
        }
    }
}
