//! Experiment files on disk: `${NAME}` and `${NAME:-default}` are replaced from the
//! environment before parsing, and `${EXPERIMENT_DIR}` is the file's own folder, so that a
//! committed file names its data relative to the repository (or through a variable), never by a
//! machine's absolute path. Resources applied to a cluster are not expanded: the API server
//! stores what it is given.

use std::path::Path;

use crate::validation::{Problem, ValidationError};
use crate::{Experiment, ExperimentSpec};

/// The built-in variable: the absolute folder of the file being read.
pub const EXPERIMENT_DIR: &str = "EXPERIMENT_DIR";

/// `text` with every `${NAME}` / `${NAME:-default}` replaced by `lookup(NAME)` (or the default);
/// `$$` is a literal `$`. A variable that is neither set nor defaulted is a problem naming it.
pub fn expand(
    text: &str,
    origin: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ValidationError> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            problems.push(Problem {
                field: "(file)".into(),
                value: format!("${{{}", body.lines().next().unwrap_or_default()),
                reason: "a variable reference without its closing }".into(),
            });
            rest = "";
            break;
        };
        let inner = &body[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match (valid, lookup(name).filter(|v| !v.is_empty()), default) {
            (false, _, _) => problems.push(Problem {
                field: "(file)".into(),
                value: format!("${{{inner}}}"),
                reason: "variable names are letters, digits and _".into(),
            }),
            (true, Some(v), _) => out.push_str(&v),
            (true, None, Some(d)) => out.push_str(d),
            (true, None, None) => problems.push(Problem {
                field: "(file)".into(),
                value: format!("${{{name}}}"),
                reason: format!(
                    "the environment variable {name} is not set (and the file gives no ${{{name}:-default}})"
                ),
            }),
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ValidationError {
            origin: origin.to_string(),
            problems,
        })
    }
}

/// Reads, expands, parses and validates an Experiment file.
pub fn load(path: &Path) -> Result<Experiment, LoadError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read(origin.clone(), e))?;
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let expanded = expand(&text, &origin, |name| {
        if name == EXPERIMENT_DIR {
            Some(dir.display().to_string())
        } else {
            std::env::var(name).ok()
        }
    })?;
    Ok(ExperimentSpec::parse_resource(&expanded, &origin)?)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "EXPERIMENT_DIR" => Some("/repo/experiments".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_defaults_and_literal_dollars() {
        let e = |t: &str| expand(t, "f.yaml", vars);
        assert_eq!(
            e("file://${EXPERIMENT_DIR}/../../shared/data/acdc?val=4").unwrap(),
            "file:///repo/experiments/../../shared/data/acdc?val=4"
        );
        assert_eq!(e("${DATA:-/data}/x").unwrap(), "/data/x");
        assert_eq!(e("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(e("cost: $$5 and $HOME").unwrap(), "cost: $5 and $HOME");
    }

    #[test]
    fn unset_or_malformed_references_are_named() {
        let err = expand("a: ${NOPE}\nb: ${bad name}\n", "f.yaml", vars).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("f.yaml: "), "{text}");
        assert!(
            text.contains("${NOPE}") && text.contains("NOPE is not set"),
            "{text}"
        );
        assert!(text.contains("${bad name}"), "{text}");
        let open = expand("x: ${UNCLOSED\n", "f.yaml", vars).unwrap_err();
        assert!(open.to_string().contains("closing }"), "{open}");
    }
}
