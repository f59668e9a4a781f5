//! An S3 server (moto) on the address both the tests and the pods reach, for the end-to-end
//! tests' stores.

use orchestra_store::moto::{create_bucket_at, point_at_endpoint, start_moto_on, Moto};

use super::cluster::Cluster;

/// An S3 server (moto) where both this process and the pods reach it, with a bucket, and its
/// credentials as the namespace's `orchestra-store` Secret.
pub struct S3 {
    moto: Moto,
}

impl S3 {
    pub fn start(c: &Cluster, ns: &str, bucket: &str) -> S3 {
        let moto = start_moto_on(c.host_address());
        create_bucket_at(&moto.host, moto.port, bucket);
        let s3 = S3 { moto };
        let mut secret = vec!["-n", ns, "create", "secret", "generic", "orchestra-store"];
        let literals: Vec<String> = s3
            .creds()
            .iter()
            .map(|(k, v)| format!("--from-literal={k}={v}"))
            .collect();
        secret.extend(literals.iter().map(String::as_str));
        c.kubectl_ok(&secret);
        s3
    }

    pub fn creds(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.moto.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// A store of this process on the server. S3 settings are process-wide variables: the
    /// guard keeps the other tests' stores out while it lives.
    pub fn store(&self, uri: &str) -> (std::sync::MutexGuard<'static, ()>, orchestra_store::Store) {
        let guard = orchestra_store::moto::SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        point_at_endpoint(&self.moto.endpoint());
        (guard, orchestra_store::Store::open(uri).unwrap())
    }
}
