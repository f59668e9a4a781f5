//! Pod networking, as a CNI bridge plugin and the kubelet do it: each pod gets its own network
//! namespace with a veth on the cluster's bridge and an address of this node's range, its own
//! host name (a UTS namespace), and the kubelet's `/etc/resolv.conf` (the cluster DNS, the
//! pod's search path, `ndots:5`) and `/etc/hosts` bind-mounted in a mount namespace of its own.
//! So a gang's ranks reach each other by their headless Service's names, resolved by CoreDNS
//! from the EndpointSlices, exactly as in a cluster. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN
//! (root); without a bridge the pods share the node's address, as before.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error("--pod-ips {0}: expected FIRST-LAST inside --pod-subnet (e.g. 10.200.3.10-10.200.3.49)")]
    Range(String),
    #[error("--pod-subnet {0}: expected an IPv4 network with its prefix (e.g. 10.200.3.0/24)")]
    Subnet(String),
    #[error("no free pod address left in {first}-{last} (every one is taken by a running pod)")]
    Exhausted { first: Ipv4Addr, last: Ipv4Addr },
    #[error("`ip {args}` failed: {reason}")]
    Ip { args: String, reason: String },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// The node's share of the cluster's pod network (from the agent's flags).
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The cluster's bridge (made by `scripts/cluster.sh`), shared by every node of the cluster.
    pub bridge: String,
    /// The bridge's subnet and its gateway (the bridge's own address, on the host).
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// This node's addresses, both ends included.
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    /// The cluster DNS server and domain.
    pub dns: Ipv4Addr,
    pub domain: String,
}

impl NetworkConfig {
    pub fn parse(
        bridge: &str,
        subnet: &str,
        range: &str,
        dns: Ipv4Addr,
        domain: &str,
    ) -> Result<NetworkConfig, NetworkError> {
        let (net, prefix) = subnet
            .split_once('/')
            .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u8>().ok()?)))
            .filter(|(_, p)| (8..=30).contains(p))
            .ok_or_else(|| NetworkError::Subnet(subnet.into()))?;
        let mask = u32::MAX << (32 - prefix);
        let (first, last) = range
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<Ipv4Addr>().ok()?, b.parse::<Ipv4Addr>().ok()?)))
            .ok_or_else(|| NetworkError::Range(range.into()))?;
        let inside = |ip: Ipv4Addr| u32::from(ip) & mask == u32::from(net) & mask;
        let host_part = |ip: Ipv4Addr| u32::from(ip) & !mask;
        // Neither the network's own address, nor its broadcast, nor the gateway (.1).
        let usable = |ip: Ipv4Addr| inside(ip) && host_part(ip) > 1 && host_part(ip) < !mask;
        if !(usable(first) && usable(last) && first <= last) {
            return Err(NetworkError::Range(range.into()));
        }
        Ok(NetworkConfig {
            bridge: bridge.into(),
            subnet: Ipv4Addr::from(u32::from(net) & mask),
            prefix,
            first,
            last,
            dns,
            domain: domain.into(),
        })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }
}

/// What the pod's resolver reads: the cluster DNS, searched from the pod's namespace outwards,
/// with the kubelet's `ndots:5` (so `job-0.service` is tried under the namespace first).
pub fn resolv_conf(namespace: &str, domain: &str, dns: Ipv4Addr) -> String {
    format!("search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {dns}\noptions ndots:5\n")
}

/// The kubelet's hosts file: loopback, and the pod's own name (its FQDN first when the pod
/// names a subdomain).
pub fn hosts_file(ip: Ipv4Addr, hostname: &str, fqdn: Option<&str>) -> String {
    let own = match fqdn {
        Some(f) => format!("{ip}\t{f}\t{hostname}"),
        None => format!("{ip}\t{hostname}"),
    };
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\n"
    )
}

/// The pod's host name as the kubelet sets it: `spec.hostname`, else the pod's name, cut to
/// 63 characters without a trailing `-` or `.`; and its FQDN under `spec.subdomain`.
pub fn pod_hostname(
    name: &str,
    hostname: Option<&str>,
    subdomain: Option<&str>,
    namespace: &str,
    domain: &str,
) -> (String, Option<String>) {
    let mut h: String = hostname.unwrap_or(name).chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    let fqdn = subdomain.map(|s| format!("{h}.{s}.{namespace}.svc.{domain}"));
    (h, fqdn)
}

/// The node's pod network: the addresses in use, the sandboxes' names.
pub struct PodNetwork {
    pub config: NetworkConfig,
    node: String,
    in_use: Mutex<BTreeSet<Ipv4Addr>>,
    last_given: Mutex<Option<u32>>,
}

/// One pod's network namespace, address and resolver files; [`PodNetwork::destroy`] removes it.
pub struct Sandbox {
    pub netns: String,
    pub ip: Ipv4Addr,
    /// Held open so that the containers' processes can enter it (setns).
    ns_file: File,
    hostname: String,
    resolv: PathBuf,
    hosts: PathBuf,
}

async fn ip(args: &[&str]) -> Result<(), NetworkError> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| NetworkError::Ip {
            args: args.join(" "),
            reason: format!("{e} (iproute2's `ip` is needed for pod networking)"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Ip {
            args: args.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn write(path: &Path, text: &str) -> Result<(), NetworkError> {
    std::fs::write(path, text).map_err(|e| NetworkError::File {
        path: path.into(),
        reason: e.to_string(),
    })
}

impl PodNetwork {
    pub fn new(config: NetworkConfig, node: &str) -> PodNetwork {
        PodNetwork {
            config,
            node: node.into(),
            in_use: Mutex::new(BTreeSet::new()),
            last_given: Mutex::new(None),
        }
    }

    /// The prefix of this node's namespaces (`<bridge>.<node>.`), unique on the machine.
    fn prefix(&self) -> String {
        format!("{}.{}.", self.config.bridge, self.node)
    }

    /// Removes the namespaces an earlier run of this node left (it was killed).
    pub async fn clean_stale(&self) {
        let Ok(out) = tokio::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .await
        else {
            return;
        };
        let prefix = self.prefix();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&prefix) {
                tracing::info!(
                    netns = name,
                    "removing a pod network namespace left by an earlier run"
                );
                let _ = ip(&["netns", "del", name]).await;
            }
        }
    }

    /// The next free address after the last one handed out, wrapping around (as CNI's
    /// host-local IPAM does): an address just freed is not given to the next pod, whose peers
    /// or the host may still hold the old pod's neighbour entry or connections for it. A gang
    /// restarted at once used to get its predecessor's addresses back, swapped between ranks.
    fn take_address(&self) -> Result<Ipv4Addr, NetworkError> {
        let mut used = self.in_use.lock().expect("addresses");
        let mut last = self.last_given.lock().expect("addresses");
        let (first, end) = (u32::from(self.config.first), u32::from(self.config.last));
        let start = last.map_or(first, |l| if l >= end { first } else { l + 1 });
        let free = (start..=end)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|a| !used.contains(a))
            .ok_or(NetworkError::Exhausted {
                first: self.config.first,
                last: self.config.last,
            })?;
        used.insert(free);
        *last = Some(u32::from(free));
        Ok(free)
    }

    /// The pod's sandbox: namespace, veth on the bridge, address, default route through the
    /// gateway, and its resolver files in `dir`.
    pub async fn create(
        &self,
        uid: &str,
        namespace: &str,
        hostname: &str,
        fqdn: Option<&str>,
        dir: &Path,
    ) -> Result<Sandbox, NetworkError> {
        let short: String = uid.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
        let netns = format!("{}{short}", self.prefix());
        // Interface names are at most 15 bytes.
        let veth = format!("v{short}");
        let address = self.take_address()?;
        let made = self.configure(&netns, &veth, address).await;
        if let Err(e) = made {
            let _ = ip(&["netns", "del", &netns]).await;
            self.in_use.lock().expect("addresses").remove(&address);
            return Err(e);
        }
        let net_dir = dir.join("network");
        std::fs::create_dir_all(&net_dir).map_err(|e| NetworkError::File {
            path: net_dir.clone(),
            reason: e.to_string(),
        })?;
        let resolv = net_dir.join("resolv.conf");
        let hosts = net_dir.join("hosts");
        write(
            &resolv,
            &resolv_conf(namespace, &self.config.domain, self.config.dns),
        )?;
        write(&hosts, &hosts_file(address, hostname, fqdn))?;
        let ns_path = PathBuf::from("/run/netns").join(&netns);
        let ns_file = File::open(&ns_path).map_err(|e| NetworkError::File {
            path: ns_path,
            reason: e.to_string(),
        })?;
        Ok(Sandbox {
            netns,
            ip: address,
            ns_file,
            hostname: hostname.into(),
            resolv,
            hosts,
        })
    }

    async fn configure(&self, netns: &str, veth: &str, address: Ipv4Addr) -> Result<(), NetworkError> {
        let cidr = format!("{address}/{}", self.config.prefix);
        let gateway = self.config.gateway().to_string();
        ip(&["netns", "add", netns]).await?;
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ])
        .await?;
        ip(&["link", "set", veth, "master", &self.config.bridge, "up"]).await?;
        ip(&["-n", netns, "addr", "add", &cidr, "dev", "eth0"]).await?;
        ip(&["-n", netns, "link", "set", "lo", "up"]).await?;
        ip(&["-n", netns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", netns, "route", "add", "default", "via", &gateway]).await
    }

    /// Removes the pod's namespace (its veth goes with it) and frees its address.
    pub async fn destroy(&self, sandbox: Sandbox) {
        if let Err(e) = ip(&["netns", "del", &sandbox.netns]).await {
            tracing::warn!(netns = %sandbox.netns, error = %e, "removing the pod's network namespace failed");
        }
        self.in_use.lock().expect("addresses").remove(&sandbox.ip);
    }
}

impl Sandbox {
    /// Makes `cmd`'s process start inside the sandbox: its network namespace, a UTS namespace
    /// with the pod's host name, and a mount namespace where the pod's resolver files cover the
    /// node's.
    pub fn enter(&self, cmd: &mut tokio::process::Command) -> Result<(), NetworkError> {
        let cstr = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| NetworkError::File {
                path: p.into(),
                reason: e.to_string(),
            })
        };
        let fd: RawFd = self.ns_file.as_raw_fd();
        let host = self.hostname.clone().into_bytes();
        let binds = [
            (cstr(&self.resolv)?, cstr(Path::new("/etc/resolv.conf"))?),
            (cstr(&self.hosts)?, cstr(Path::new("/etc/hosts"))?),
        ];
        let root = cstr(Path::new("/"))?;
        // SAFETY: only async-signal-safe system calls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let check = |rc: libc::c_int| {
                    if rc == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                check(libc::setns(fd, libc::CLONE_NEWNET))?;
                check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
                // Mounts made here stay in the pod's namespace.
                check(libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                for (src, dst) in &binds {
                    check(libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?;
                }
                check(libc::sethostname(
                    host.as_ptr() as *const libc::c_char,
                    host.len(),
                ))
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(subnet: &str, range: &str) -> Result<NetworkConfig, NetworkError> {
        NetworkConfig::parse(
            "orcbr3",
            subnet,
            range,
            Ipv4Addr::new(10, 200, 3, 1),
            "cluster.local",
        )
    }

    #[test]
    fn a_range_must_lie_inside_the_subnet_and_spare_the_gateway() {
        let ok = cfg("10.200.3.0/24", "10.200.3.10-10.200.3.49").unwrap();
        assert_eq!(ok.gateway(), Ipv4Addr::new(10, 200, 3, 1));
        assert_eq!(ok.prefix, 24);
        for bad in [
            "10.200.3.1-10.200.3.9",
            "10.200.3.10-10.200.4.9",
            "10.200.3.49-10.200.3.10",
            "10.200.3.10-10.200.3.255",
            "10.200.3.10",
            "a-b",
        ] {
            let err = cfg("10.200.3.0/24", bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        for bad in ["10.200.3.0", "10.200.3.0/33", "10.200.3.0/31", "x/24"] {
            let err = cfg(bad, "10.200.3.10-10.200.3.49").unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn addresses_are_handed_out_once_until_exhausted() {
        let net = PodNetwork::new(cfg("10.200.3.0/24", "10.200.3.10-10.200.3.11").unwrap(), "n1");
        let a = net.take_address().unwrap();
        let b = net.take_address().unwrap();
        assert_ne!(a, b);
        let err = net.take_address().unwrap_err().to_string();
        assert!(err.contains("10.200.3.10-10.200.3.11"), "{err}");
        net.in_use.lock().unwrap().remove(&a);
        assert_eq!(net.take_address().unwrap(), a);
    }

    #[test]
    fn an_address_just_freed_is_not_handed_out_next() {
        let net = PodNetwork::new(cfg("10.200.3.0/24", "10.200.3.10-10.200.3.13").unwrap(), "n1");
        let a = net.take_address().unwrap();
        let b = net.take_address().unwrap();
        net.in_use.lock().unwrap().remove(&a);
        net.in_use.lock().unwrap().remove(&b);
        let next: Vec<Ipv4Addr> = (0..2).map(|_| net.take_address().unwrap()).collect();
        assert_eq!(
            next,
            [Ipv4Addr::new(10, 200, 3, 12), Ipv4Addr::new(10, 200, 3, 13)]
        );
        assert_eq!(net.take_address().unwrap(), a, "then around again");
    }

    #[test]
    fn the_resolver_searches_the_pods_namespace_first() {
        let r = resolv_conf("e2e-gang", "cluster.local", Ipv4Addr::new(10, 200, 3, 1));
        assert_eq!(
            r,
            "search e2e-gang.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.200.3.1\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_names_follow_the_kubelet() {
        let (h, fqdn) = pod_hostname("t-a0-0-xyz", Some("t-a0-0"), Some("t"), "ns", "cluster.local");
        assert_eq!(h, "t-a0-0");
        assert_eq!(fqdn.as_deref(), Some("t-a0-0.t.ns.svc.cluster.local"));
        let long = format!("{}-{}", "a".repeat(62), "b");
        let (h, fqdn) = pod_hostname(&long, None, None, "ns", "cluster.local");
        assert_eq!(h, "a".repeat(62));
        assert_eq!(fqdn, None);
        let hosts = hosts_file(
            Ipv4Addr::new(10, 200, 3, 10),
            "t-a0-0",
            Some("t-a0-0.t.ns.svc.cluster.local"),
        );
        assert!(
            hosts.ends_with("10.200.3.10\tt-a0-0.t.ns.svc.cluster.local\tt-a0-0\n"),
            "{hosts}"
        );
    }
}
