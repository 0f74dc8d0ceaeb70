//! The baselines: a minimal static HTTPS file server (no encryption at rest, no authorization,
//! no audit), a client that fetches from it the way `custody fetch` fetches, and a plain
//! buffered file write with fsync.
//!
//! The server and the client run as hidden subcommands of this binary, in their own processes,
//! so the set-up matches the `custody` server and CLI: same TLS provider (ring, via
//! `crypto::tls`), same certificate type, same ALPN offer, same hyper accept loop, same reqwest
//! client configuration, same range size and concurrency.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use hyper::body::{Frame, SizeHint};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use wire::models::{FETCH_RANGES_AT_ONCE as RANGES_AT_ONCE, fetch_range_len};

/// Chunks the static server sends: 1 MiB, as the custody server sends 1 MiB segments.
const CHUNK: u64 = 1 << 20;

/// `custody-bench static-server`: serves one file at every path, with `Range` support.
pub fn static_server(file: &Path, listen: SocketAddr, cert_out: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(file, listen, cert_out))
}

async fn serve(path: &Path, listen: SocketAddr, cert_out: &Path) -> anyhow::Result<()> {
    let (cert_pem, key_pem) =
        crypto::tls::self_signed_server_cert(&["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    std::fs::write(cert_out, cert_pem.as_bytes())
        .with_context(|| format!("writing {}", cert_out.display()))?;
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parsing the key")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let file =
        Arc::new(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let len = file.metadata()?.len();
    let listener = TcpListener::bind(listen).await?;
    println!(
        "custody-bench: listening on https://{}",
        listener.local_addr()?
    );
    std::io::stdout().flush()?;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let file = file.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let file = file.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, file, len)) }
            });
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `bytes=START-END` or `bytes=START-` within a file of `len` bytes: `[start, end)`.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end = if end.is_empty() {
        len
    } else {
        end.parse::<u64>().ok()?.checked_add(1)?.min(len)
    };
    (start < end).then_some((start, end))
}

fn respond<B>(req: &Request<B>, file: Arc<std::fs::File>, len: u64) -> Response<FileBody> {
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len),
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(None) => (StatusCode::RANGE_NOT_SATISFIABLE, 0, 0),
    };
    let mut response = Response::new(FileBody::new(file, start, end));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, (end - start).into());
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = header::HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        headers.insert(header::CONTENT_RANGE, v);
    }
    response
}

/// A response body read from the file on a blocking thread, a few chunks ahead.
struct FileBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    remaining: u64,
}

impl FileBody {
    fn new(file: Arc<std::fs::File>, start: u64, end: u64) -> FileBody {
        let (tx, rx) = mpsc::channel(4);
        if start < end {
            tokio::task::spawn_blocking(move || {
                let mut offset = start;
                while offset < end {
                    let n = CHUNK.min(end - offset) as usize;
                    let mut buf = vec![0u8; n];
                    let read = file
                        .read_exact_at(&mut buf, offset)
                        .map(|()| Bytes::from(buf));
                    let failed = read.is_err();
                    if tx.blocking_send(read).is_err() || failed {
                        return;
                    }
                    offset += n as u64;
                }
            });
        }
        FileBody {
            rx,
            remaining: end - start,
        }
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.remaining = this.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::other(
                "the file reader stopped early",
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// `custody-bench plain-fetch`: downloads `size` bytes from `url` into `out` the way
/// `custody fetch` downloads a large file (same client, same ranges, fsync at the end), minus
/// what custody adds: no bearer token, no state file, no SHA-256 check.
pub fn plain_fetch(url: &str, ca: &Path, out: &Path, size: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(fetch(url, ca, out, size))
}

/// The HTTPS client exactly as `crates/cli/src/client.rs` builds it.
pub(crate) fn client(ca: &Path) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(crypto::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .connect_timeout(Duration::from_secs(20))
        .build()?)
}

async fn fetch(url: &str, ca: &Path, out_path: &Path, size: u64) -> anyhow::Result<()> {
    let http = client(ca)?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(out_path)
        .with_context(|| format!("creating {}", out_path.display()))?;
    out.set_len(size)?;
    let out = Arc::new(out);
    let range_len = fetch_range_len(size);
    let mut fetches = futures::stream::iter(0..size.div_ceil(range_len))
        .map(|i| {
            let (http, out) = (&http, out.clone());
            async move {
                let start = i * range_len;
                let end = (start + range_len).min(size);
                fetch_range(http, url, start, end, out).await
            }
        })
        .buffer_unordered(RANGES_AT_ONCE);
    while let Some(result) = fetches.next().await {
        result?;
    }
    out.sync_all()?;
    Ok(())
}

async fn fetch_range(
    http: &reqwest::Client,
    url: &str,
    start: u64,
    end: u64,
    out: Arc<std::fs::File>,
) -> anyhow::Result<()> {
    let response = http
        .get(url)
        .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1))
        .send()
        .await?;
    if response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        bail!("the static server answered {}", response.status());
    }
    let mut offset = start;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if offset + chunk.len() as u64 > end {
            bail!("the static server sent more bytes than asked for");
        }
        let out = out.clone();
        let len = chunk.len() as u64;
        tokio::task::spawn_blocking(move || out.write_all_at(&chunk, offset)).await??;
        offset += len;
    }
    if offset != end {
        bail!("range {start}-{end} ended after {} bytes", offset - start);
    }
    Ok(())
}

/// The plain write baseline: copies `src` to a new file `dst` through one 8 MiB buffer and
/// fsyncs it. Returns the time from opening to the end of the fsync.
pub fn plain_write(src: &Path, dst: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut input = std::fs::File::open(src)?;
    let mut output = std::fs::File::create(dst)?;
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = input.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        output.write_all(&buf[..filled])?;
    }
    output.sync_all()?;
    Ok(start.elapsed())
}
