# custody's container image: `docker build -t custody .` from the repository root.
#
# Two stages: the build (Rust toolchain, the whole source) and the runtime, which holds the
# custody binary and nothing else a shell or package manager would need: distroless "cc"
# (glibc, libgcc, CA certificates; no shell), run as the image's non-root user (uid 65532).
# The binary needs only libc, libm and libgcc_s (TLS is rustls, SQLite is compiled in).
# tests/e2e/deploy.rs checks this file's shape; no container runtime runs in CI.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cli \
    && install -D -m 0755 target/release/custody /out/usr/local/bin/custody \
    # The directories the server writes to, owned by the runtime user, so that volumes
    # mounted there (docker named volumes copy the image's ownership) are writable.
    && install -d -m 0700 /out/var/lib/custody /out/var/lib/custody.root /out/identity

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build --chown=65532:65532 /out/ /
USER 65532:65532
# 8443: the API (TLS). 9464: Prometheus metrics (plain HTTP; listen on 0.0.0.0 only where a
# network policy keeps it to the scraper, see deploy/kubernetes/).
EXPOSE 8443 9464
ENTRYPOINT ["/usr/local/bin/custody"]
CMD ["server", "--config", "/etc/custody/custody.toml"]
