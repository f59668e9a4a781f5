//! The torchrun-compatible rendezvous variables (what the operator sets on every worker pod,
//! and what Kubeflow's PyTorchJob sets): `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`.

use super::DistError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendezvousEnv {
    pub master_addr: String,
    pub master_port: u16,
    pub world_size: usize,
    pub rank: usize,
}

impl RendezvousEnv {
    pub fn from_env() -> Result<RendezvousEnv, DistError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parses the variables from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<RendezvousEnv, DistError> {
        let var = |name: &'static str| {
            get(name).ok_or_else(|| DistError::Env {
                var: name,
                value: String::new(),
                reason: "is not set".into(),
            })
        };
        let number = |name: &'static str| -> Result<u64, DistError> {
            let v = var(name)?;
            v.trim().parse::<u64>().map_err(|e| DistError::Env {
                var: name,
                value: v.clone(),
                reason: format!("not a non-negative integer ({e})"),
            })
        };
        let master_addr = var("MASTER_ADDR")?;
        if master_addr.trim().is_empty() {
            return Err(DistError::Env {
                var: "MASTER_ADDR",
                value: master_addr,
                reason: "is empty".into(),
            });
        }
        let port = number("MASTER_PORT")?;
        let master_port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(DistError::Env {
                var: "MASTER_PORT",
                value: port.to_string(),
                reason: "must be a port number in 1..=65535".into(),
            })?;
        let world_size = number("WORLD_SIZE")? as usize;
        if world_size == 0 {
            return Err(DistError::Env {
                var: "WORLD_SIZE",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let rank = number("RANK")? as usize;
        if rank >= world_size {
            return Err(DistError::Env {
                var: "RANK",
                value: rank.to_string(),
                reason: format!("must be below WORLD_SIZE = {world_size}"),
            });
        }
        Ok(RendezvousEnv {
            master_addr: master_addr.trim().to_string(),
            master_port,
            world_size,
            rank,
        })
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.master_addr, self.master_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<RendezvousEnv, DistError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RendezvousEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn parses_and_names_the_bad_variable() {
        let ok = [
            ("MASTER_ADDR", "trial-0.trial"),
            ("MASTER_PORT", "29500"),
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
        ];
        let env = parse(&ok).unwrap();
        assert_eq!(env.address(), "trial-0.trial:29500");
        assert_eq!((env.world_size, env.rank), (4, 3));

        let err = parse(&ok[..3]).unwrap_err().to_string();
        assert!(err.contains("RANK") && err.contains("not set"), "{err}");
        let err = parse(&[ok[0], ok[1], ok[2], ("RANK", "4")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RANK") && err.contains("below WORLD_SIZE = 4"),
            "{err}"
        );
        let err = parse(&[ok[0], ("MASTER_PORT", "70000"), ok[2], ok[3]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_PORT") && err.contains("70000"), "{err}");
        let err = parse(&[ok[0], ok[1], ("WORLD_SIZE", "two"), ok[3]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WORLD_SIZE") && err.contains("\"two\""), "{err}");
    }
}
