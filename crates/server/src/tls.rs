//! The accept loop: TLS by rustls, HTTP/1.1 and HTTP/2 by hyper, routing by axum.
//!
//! Written out instead of using a TLS-serving crate so the peer's certificate chain can be
//! put into each request's extensions (exclusive servers authenticate with client
//! certificates).

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::PeerCertificate;

pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(30),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // The client certificate, if any, already chains to the host CA (rustls checked it
            // in the handshake); each request carries its hash so authentication can look the
            // host up, enrolled or revoked, at that moment.
            let peer_cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| PeerCertificate(crypto::host_ca::cert_sha256_hex(cert)));
            let service =
                router.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    if let Some(cert) = &peer_cert {
                        request.extensions_mut().insert(cert.clone());
                    }
                    request
                });
            let service = TowerToHyperService::new(service);
            if let Err(e) = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = ?e, "connection ended with an error");
            }
        });
    }
}
