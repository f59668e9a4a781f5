//! Validation errors that say exactly what is wrong: the field's path, its value and why.

use std::fmt;

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, for example `hyper.batch_size`.
    pub field: String,
    /// The offending value as written.
    pub value: String,
    pub reason: String,
}

/// Every problem found in one document (a file, a resource).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// Where the document came from: a file path, `namespace/name`.
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if p.value.is_empty() {
                write!(f, "{}: {}", p.field, p.reason)?;
            } else {
                write!(f, "{} = {}: {}", p.field, p.value, p.reason)?;
            }
        }
        Ok(())
    }
}

/// Collects problems while a document is checked, so that all of them are reported at once.
#[derive(Default, Debug)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Problems found so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn push(&mut self, field: &str, value: impl fmt::Display, reason: impl Into<String>) {
        self.0.push(Problem {
            field: field.to_string(),
            // Values are quoted back to the user: never with a credential in them.
            value: crate::redact(&value.to_string()),
            reason: reason.into(),
        });
    }

    pub fn problems(&self) -> &[Problem] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self, origin: &str) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                origin: origin.to_string(),
                problems: self.0,
            })
        }
    }
}

/// Parses YAML (or JSON) into `T`, reporting a syntax or type error as a one-problem
/// `ValidationError` that names the line and column.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T, ValidationError> {
    serde_yaml::from_str(text).map_err(|e| ValidationError {
        origin: origin.to_string(),
        problems: vec![Problem {
            field: e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "document".into()),
            value: String::new(),
            reason: e.to_string(),
        }],
    })
}
