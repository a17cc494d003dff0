//! TLS identity for the mesh: each node presents a self-signed X.509
//! certificate for its ed25519 node key, and both sides of a connection
//! verify the other's with [`PeerVerifier`], which accepts any such
//! certificate and yields the key in it.
//!
//! There is no CA yet. Whether a certificate admits a node is decided by a
//! [`ClusterAdmission`]; [`AdmitSelfSigned`] admits every well-formed
//! self-signed ed25519 certificate. Cluster CA admission will be another
//! implementation of that trait, plugged in through
//! `TransportConfig::admission`.
//!
//! Invariants this module keeps:
//! - The certificate's subject public key *is* the node key, so the key TLS
//!   authenticates (by the peer's CertificateVerify signature) is the node
//!   id; [`node_id_of`] reads it back and `check_identity` compares it with
//!   the handshake.
//! - Only ed25519 is offered and accepted, only TLS 1.3 (QUIC requires
//!   it), only the aws-lc-rs provider. Session resumption is off in the
//!   configs built from here (see `endpoint.rs`), so every connection
//!   presents a certificate.

use std::fmt;
use std::sync::{Arc, Once};

use libp2p::identity::Keypair;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use shoal_proto::wire::NodeId;

use super::error::{CertError, TlsError};

/// PKCS#8 v1 header of an ed25519 private key (RFC 8410): the 32-byte seed
/// follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// SubjectPublicKeyInfo header of an ed25519 key (RFC 8410): the 32-byte
/// key follows, and nothing else.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The one signature algorithm of the mesh, for certificates and for the
/// TLS handshake signature.
static ED25519_ONLY: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[webpki::aws_lc_rs::ED25519],
    mapping: &[(SignatureScheme::ED25519, &[webpki::aws_lc_rs::ED25519])],
};

/// Installs aws-lc-rs as rustls's process-wide crypto provider. Idempotent;
/// call it at start-up. The configs built here name aws-lc-rs explicitly
/// as well, so they do not depend on the order of start-up.
///
/// It also warms aws-lc-rs up on a side thread: the library initialises
/// itself on first use, and the first key exchange of a process took 30 ms
/// here against 9 µs for the next (far more when eight nodes start at once
/// on two cores). Left to the first dial, that time sits between learning
/// a peer and sending it the first packet; started here, it overlaps the
/// rest of start-up (opening the database, announcing).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let warm = provider.kx_groups.first().copied();
        // An error means a provider is already installed: rustls is built
        // with aws-lc-rs only, so it is one of ours and nothing is lost.
        let _ = provider.install_default();
        if let Some(group) = warm {
            // Best effort: without the thread the first dial pays instead.
            let _ = std::thread::Builder::new()
                .name("tls-warm-up".into())
                .spawn(move || drop(group.start()));
        }
    });
}

/// The aws-lc-rs provider the mesh configs are built with.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    install_crypto_provider();
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A node's TLS credentials: a self-signed certificate whose key is the
/// node key, and that key in PKCS#8.
pub struct NodeCert {
    node_id: NodeId,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCert")
            .field("node_id", &hex(&self.node_id))
            .finish_non_exhaustive()
    }
}

impl NodeCert {
    /// Makes the self-signed certificate for `keypair`, which must be
    /// ed25519 (the node key of `identity.rs`).
    pub fn self_signed(keypair: &Keypair) -> Result<NodeCert, TlsError> {
        let ed = keypair
            .clone()
            .try_into_ed25519()
            .map_err(|_| TlsError::NotEd25519Key)?;
        let node_id = ed.public().to_bytes();
        let secret = ed.secret();
        let mut der = Vec::with_capacity(ED25519_PKCS8_PREFIX.len() + 32);
        der.extend_from_slice(&ED25519_PKCS8_PREFIX);
        der.extend_from_slice(secret.as_ref());
        let key = PrivatePkcs8KeyDer::from(der);
        let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)
            .map_err(TlsError::Certificate)?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Certificate)?;
        let mut name = rcgen::DistinguishedName::new();
        name.push(
            rcgen::DnType::CommonName,
            format!("shoal node {}", hex(&node_id)),
        );
        params.distinguished_name = name;
        let cert = params.self_signed(&signer).map_err(TlsError::Certificate)?;
        let cert = cert.der().clone();
        if node_id_of(&cert).ok() != Some(node_id) {
            return Err(TlsError::KeyMismatch);
        }
        Ok(NodeCert { node_id, cert, key })
    }

    /// The node id the certificate carries.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The certificate, DER.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub(crate) fn key(&self) -> PrivatePkcs8KeyDer<'static> {
        self.key.clone_key()
    }
}

/// The ed25519 key a certificate carries: the node id it proves, once TLS
/// has checked the peer's signature with it.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, CertError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(CertError::Malformed)?;
    let spki = parsed.subject_public_key_info();
    let key = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or(CertError::NotEd25519)?;
    key.try_into().map_err(|_| CertError::NotEd25519)
}

/// The peer's node id on an established connection: the key of the
/// certificate TLS verified.
pub fn peer_node_id(conn: &quinn::Connection) -> Result<NodeId, CertError> {
    let identity = conn.peer_identity().ok_or(CertError::Missing)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| CertError::Missing)?;
    node_id_of(chain.first().ok_or(CertError::Missing)?)
}

/// Which end of the connection presented a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer dialed us (a TLS client certificate).
    Dialer,
    /// We dialed the peer (a TLS server certificate).
    Listener,
}

/// A peer's certificate, for [`ClusterAdmission::admit`].
#[derive(Debug, Clone, Copy)]
pub struct PeerCert<'a> {
    /// The key in the certificate: the peer's node id.
    pub node_id: NodeId,
    /// The certificate, DER.
    pub end_entity: &'a CertificateDer<'a>,
    /// Any further certificates the peer sent.
    pub intermediates: &'a [CertificateDer<'a>],
    /// Which end the peer is.
    pub role: PeerRole,
    /// The time to check validity against.
    pub now: UnixTime,
}

/// Decides whether a certificate admits its node to the mesh. This is the
/// hook for cluster CA admission: an implementation that requires a chain to
/// the cluster's CA replaces [`AdmitSelfSigned`]. It runs inside the TLS
/// handshake, before any shoal byte is exchanged.
pub trait ClusterAdmission: fmt::Debug + Send + Sync + 'static {
    /// `Ok` admits the peer; an error fails the TLS handshake.
    fn admit(&self, peer: &PeerCert<'_>) -> Result<(), CertError>;
}

/// Today's admission: any well-formed, currently valid ed25519 certificate
/// that is signed by its own key, with nothing else in the chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitSelfSigned;

impl ClusterAdmission for AdmitSelfSigned {
    fn admit(&self, peer: &PeerCert<'_>) -> Result<(), CertError> {
        if !peer.intermediates.is_empty() {
            return Err(CertError::UnexpectedChain(peer.intermediates.len()));
        }
        // The certificate is its own trust anchor: this checks its
        // signature with its own key, its validity period, and that it is
        // an end-entity certificate fit for the role.
        let anchor =
            webpki::anchor_from_trusted_cert(peer.end_entity).map_err(CertError::Malformed)?;
        let cert =
            webpki::EndEntityCert::try_from(peer.end_entity).map_err(CertError::Malformed)?;
        let usage = match peer.role {
            PeerRole::Dialer => webpki::KeyUsage::client_auth(),
            PeerRole::Listener => webpki::KeyUsage::server_auth(),
        };
        cert.verify_for_usage(
            ED25519_ONLY.all,
            &[anchor],
            &[],
            peer.now,
            usage,
            None,
            None,
        )
        .map(|_| ())
        .map_err(CertError::NotSelfSigned)
    }
}

/// The rustls verifier on both sides: takes the node key out of the peer's
/// certificate, asks the [`ClusterAdmission`], and checks the handshake
/// signature with that key. The server name is ignored: peers are named by
/// key, not by DNS.
#[derive(Debug)]
pub(crate) struct PeerVerifier {
    admission: Arc<dyn ClusterAdmission>,
}

impl PeerVerifier {
    pub(crate) fn new(admission: Arc<dyn ClusterAdmission>) -> PeerVerifier {
        PeerVerifier { admission }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: PeerRole,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let node_id = node_id_of(end_entity).map_err(cert_error)?;
        let peer = PeerCert {
            node_id,
            end_entity,
            intermediates,
            role,
            now,
        };
        self.admission.admit(&peer).map_err(cert_error)
    }

    fn verify13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &ED25519_ONLY)
    }
}

fn cert_error(e: CertError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

fn no_tls12() -> rustls::Error {
    rustls::Error::General("the mesh speaks TLS 1.3 only".into())
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, PeerRole::Listener, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, PeerRole::Dialer, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Lower-case hex, for names and logs.
pub(crate) use shoal_proto::infohash::hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_node_key() {
        let key = Keypair::generate_ed25519();
        let id = key.public().try_into_ed25519().expect("ed25519").to_bytes();
        let cert = NodeCert::self_signed(&key).expect("certificate");
        assert_eq!(cert.node_id(), id);
        assert_eq!(node_id_of(cert.cert()).expect("parse"), id);
        for role in [PeerRole::Dialer, PeerRole::Listener] {
            let peer = PeerCert {
                node_id: id,
                end_entity: cert.cert(),
                intermediates: &[],
                role,
                now: UnixTime::now(),
            };
            AdmitSelfSigned
                .admit(&peer)
                .expect("self-signed is admitted");
        }
    }

    #[test]
    fn refuses_what_is_not_a_self_signed_ed25519_cert() {
        let a = NodeCert::self_signed(&Keypair::generate_ed25519()).expect("a");
        let b = NodeCert::self_signed(&Keypair::generate_ed25519()).expect("b");
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(node_id_of(&garbage), Err(CertError::Malformed(_))));
        let peer = PeerCert {
            node_id: a.node_id(),
            end_entity: a.cert(),
            intermediates: std::slice::from_ref(b.cert()),
            role: PeerRole::Listener,
            now: UnixTime::now(),
        };
        assert!(matches!(
            AdmitSelfSigned.admit(&peer),
            Err(CertError::UnexpectedChain(1))
        ));
        // A certificate whose signature does not verify with its own key.
        let mut forged = a.cert().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged = CertificateDer::from(forged);
        let peer = PeerCert {
            end_entity: &forged,
            intermediates: &[],
            ..peer
        };
        assert!(matches!(
            AdmitSelfSigned.admit(&peer),
            Err(CertError::NotSelfSigned(_))
        ));
    }

    #[test]
    fn install_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
