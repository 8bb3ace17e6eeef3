//! TLS material from the configuration: the gRPC server's, and the cluster port's (mutual TLS
//! between nodes, every node presenting a certificate signed by the cluster CA).
//!
//! One crypto provider, aws-lc-rs, is used explicitly everywhere (ractor_cluster's
//! tokio-rustls uses it too; a second provider would make rustls panic).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use gridmesh_actors::cluster::ClusterTls;
use gridmesh_config::TlsConfig;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Makes aws-lc-rs the process's rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    // The error names the file only: a key's bytes never go into a message.
    PrivateKeyDer::from_pem_file(path)
        .map_err(|_| anyhow::anyhow!("{} holds no usable PEM private key", path.display()))
}

/// The gRPC server's TLS settings, when configured.
pub fn grpc_server(tls: &TlsConfig) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    if !tls.grpc_enabled() {
        return Ok(None);
    }
    let cert = read(&tls.grpc_cert_file, "gRPC certificate")?;
    let key = read(&tls.grpc_key_file, "gRPC private key")?;
    let mut config = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key));
    if !tls.grpc_client_ca_file.as_os_str().is_empty() {
        let ca = read(&tls.grpc_client_ca_file, "gRPC client CA")?;
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
    }
    Ok(Some(config))
}

/// The cluster port's TLS (acceptor and connector), when configured.
pub fn cluster(tls: &TlsConfig) -> anyhow::Result<Option<ClusterTls>> {
    if !tls.cluster_enabled() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certs(&tls.cluster_cert_file)?;
    let private = key(&tls.cluster_key_file)?;
    let mut roots = RootCertStore::empty();
    for ca in certs(&tls.cluster_ca_file)? {
        roots
            .add(ca)
            .with_context(|| format!("CA certificate in {}", tls.cluster_ca_file.display()))?;
    }
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .context("building the cluster client-certificate verifier")?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), private.clone_key())
        .context("the cluster certificate and key do not match")?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private)
        .context("the cluster certificate and key do not match")?;
    Ok(Some(ClusterTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        server_name: (!tls.cluster_server_name.is_empty()).then(|| tls.cluster_server_name.clone()),
        handshake_timeout: tls.handshake_timeout,
    }))
}
