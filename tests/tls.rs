#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! HTTPS: certificates by SNI, HTTP/2 through ALPN, redirect and HSTS.

mod common;

use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Accepts any certificate and remembers the one presented.
#[derive(Debug, Default)]
struct Recorder(Mutex<Option<Vec<u8>>>);

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Handshakes with `server_name` and returns the certificate and ALPN protocol.
async fn handshake(
    addr: std::net::SocketAddr,
    server_name: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let recorder = Arc::new(Recorder::default());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| e.to_string())?
    .dangerous()
    .with_custom_certificate_verifier(recorder.clone())
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let cert = recorder.0.lock().unwrap().clone().ok_or("no certificate")?;
    Ok((cert, alpn))
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

struct TlsSetup {
    _origin: TestOrigin,
    proxy: Rempart,
    https: std::net::SocketAddr,
    shop_cert: Vec<u8>,
    other_cert: Vec<u8>,
}

async fn setup() -> TlsSetup {
    let origin = TestOrigin::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    for domain in [&["shop.test", "www.shop.test"][..], &["other.test"]] {
        let status = Command::new(binary())
            .args(["cert", "--dev"])
            .args(domain)
            .arg("--dir")
            .arg(&certs)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (listen, admin, https) = (free_addr(), free_addr(), free_addr());
    let extra = format!(
        "tls:\n  listen: [\"{https}\"]\n  certs_dir: certs\n  redirect_http: true\n  http2: true\n  hsts:\n    max_age: 180d\n    include_subdomains: true\nip_filter:\n  deny: [\"127.0.0.9\"]\n"
    );
    let proxy = Rempart::start_in(
        dir,
        &policy(listen, admin, &[origin.addr], &extra),
        listen,
        admin,
    )
    .await;
    let shop_cert = pem_der(&proxy.dir.path().join("certs/shop.test.crt"));
    let other_cert = pem_der(&proxy.dir.path().join("certs/other.test.crt"));
    TlsSetup {
        _origin: origin,
        proxy,
        https,
        shop_cert,
        other_cert,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_matching_certificate() {
    let t = setup().await;
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12][..];
    assert_eq!(
        handshake(t.https, "shop.test", all).await.unwrap().0,
        t.shop_cert
    );
    assert_eq!(
        handshake(t.https, "www.shop.test", all).await.unwrap().0,
        t.shop_cert
    );
    assert_eq!(
        handshake(t.https, "other.test", all).await.unwrap().0,
        t.other_cert
    );
    // TLS 1.2 is accepted too.
    assert_eq!(
        handshake(t.https, "other.test", &[&rustls::version::TLS12])
            .await
            .unwrap()
            .0,
        t.other_cert
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_is_negotiated_and_responses_carry_hsts() {
    let t = setup().await;
    let (_, alpn) = handshake(t.https, "shop.test", &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    let client = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .resolve("shop.test", t.https)
        .build()
        .unwrap();
    let r = client
        .get(format!("https://shop.test:{}/over-h2", t.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=15552000; includeSubDomains"
    );
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["path"], "/over-h2");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_redirected_to_https_without_hsts() {
    let t = setup().await;
    let r = client()
        .get(t.proxy.url("/product/beanie/?a=1"))
        .header("host", "shop.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://shop.test:{}/product/beanie/?a=1", t.https.port()).as_str()
    );
    assert!(r.headers().get("strict-transport-security").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn rempart_own_pages_over_https_carry_hsts_too() {
    let t = setup().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .local_address(std::net::IpAddr::from([127, 0, 0, 9]))
        .resolve("shop.test", t.https)
        .build()
        .unwrap();
    let r = client
        .get(format!("https://shop.test:{}/", t.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=15552000; includeSubDomains"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_certificate_folder_is_a_warning_for_check_and_an_error_for_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(
        &path,
        policy(
            free_addr(),
            free_addr(),
            &[free_addr()],
            "tls:\n  listen: [\"127.0.0.1:8443\"]\n  certs_dir: certs\n",
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "the policy itself is valid: {out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("p.yaml:")
            && text.contains("warning: the HTTPS listeners cannot start: no certificate found"),
        "{text}"
    );
    let out = Command::new(binary())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no usable certificate"));
}
