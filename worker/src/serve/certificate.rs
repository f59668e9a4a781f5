//! The server certificate is checked at start-up, so that a service never runs with one every
//! client will refuse: a CA certificate (basicConstraints CA:TRUE) used as the server's own,
//! one outside its validity period, or a file with no certificate in it.

use std::path::Path;

use super::ServeError;

/// Checks the first certificate of a PEM chain (the server's own).
pub fn check_server_certificate(path: &Path) -> Result<(), ServeError> {
    let err = |reason: String| ServeError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let der = first_certificate_der(&pem).map_err(err)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| err(format!("the first certificate is not valid X.509: {e}")))?;
    let subject = cert.subject().to_string();
    if cert.is_ca() {
        return Err(err(format!(
            "the first certificate ({subject}) is a CA certificate (basicConstraints CA:TRUE); \
             clients refuse it as a server's certificate: give the server's own certificate, \
             signed by this CA, first in the file"
        )));
    }
    let validity = cert.validity();
    if !validity.is_valid() {
        return Err(err(format!(
            "the certificate ({subject}) is valid from {} to {}, not now",
            validity.not_before, validity.not_after
        )));
    }
    Ok(())
}

/// The DER bytes of the first CERTIFICATE block of a PEM file.
fn first_certificate_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("not a PEM file: {e}"))?;
        if block.label == "CERTIFICATE" {
            return Ok(block.contents);
        }
    }
    Err("holds no CERTIFICATE block".into())
}
