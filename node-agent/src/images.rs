//! Which local folder stands in for which container image: the agent pulls nothing, it runs the
//! container's command from the folder mapped to its image (`--image PATTERN=DIR`).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImageError {
    #[error("no folder is mapped to image {0} (orchestra-node-agent --image PATTERN=DIR)")]
    NotMapped(String),
    #[error("the container of image {0} has no command (the agent cannot read an image's entrypoint)")]
    NoCommand(String),
    #[error("{0} is not an executable file (image {1})")]
    NotExecutable(PathBuf, String),
}

/// `PATTERN=DIR` pairs, first match wins; a pattern is an image reference with `*` wildcards.
#[derive(Clone, Debug, Default)]
pub struct ImageMap {
    rules: Vec<(String, PathBuf)>,
}

impl ImageMap {
    pub fn parse(specs: &[String]) -> Result<ImageMap, String> {
        let rules = specs
            .iter()
            .map(|s| match s.split_once('=') {
                Some((p, d)) if !p.is_empty() && !d.is_empty() => Ok((p.to_string(), PathBuf::from(d))),
                _ => Err(format!("--image {s}: expected PATTERN=DIR")),
            })
            .collect::<Result<_, _>>()?;
        Ok(ImageMap { rules })
    }

    pub fn folder(&self, image: &str) -> Option<&Path> {
        self.rules
            .iter()
            .find(|(p, _)| glob_match(p, image))
            .map(|(_, d)| d.as_path())
    }

    /// The executable that runs `command[0]` of a container of `image`: a bare name or an
    /// absolute path inside the image is looked up by its file name in the image's folder.
    pub fn executable(&self, image: &str, command: &[String]) -> Result<PathBuf, ImageError> {
        let dir = self
            .folder(image)
            .ok_or_else(|| ImageError::NotMapped(image.to_string()))?;
        let first = command
            .first()
            .ok_or_else(|| ImageError::NoCommand(image.to_string()))?;
        let name = Path::new(first).file_name().unwrap_or_default();
        let path = dir.join(name);
        if !is_executable(&path) {
            return Err(ImageError::NotExecutable(path, image.to_string()));
        }
        Ok(path)
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `*` matches any run of characters (also none); everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(glob_match(
            "*orchestra-worker*",
            "ghcr.io/orchestra-dev/orchestra-worker:latest"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn commands_resolve_in_the_mapped_folder_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("orchestra-worker");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("data.txt"), "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let map = ImageMap::parse(&[format!("*worker*={}", dir.path().display())]).unwrap();
        let cmd = |c: &str| vec![c.to_string()];
        assert_eq!(
            map.executable("x/orchestra-worker:1", &cmd("orchestra-worker"))
                .unwrap(),
            exe
        );
        assert_eq!(
            map.executable("x/orchestra-worker:1", &cmd("/usr/local/bin/orchestra-worker"))
                .unwrap(),
            exe
        );
        assert_eq!(
            map.executable("busybox", &cmd("sh")),
            Err(ImageError::NotMapped("busybox".into()))
        );
        assert!(matches!(
            map.executable("worker", &cmd("data.txt")),
            Err(ImageError::NotExecutable(..))
        ));
        assert_eq!(
            map.executable("worker", &[]),
            Err(ImageError::NoCommand("worker".into()))
        );
        assert!(ImageMap::parse(&["nodir=".into()]).is_err());
    }
}
