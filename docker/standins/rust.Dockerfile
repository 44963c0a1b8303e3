# Stand-in for rust:1.95-bookworm (no registry here): Debian bookworm with the C toolchain the
# official image's buildpack-deps base carries, plus the host's own Rust 1.95 toolchain (the
# build context holds it: rustc, cargo, the standard library) and the host's download cache of
# crates (checksummed by Cargo.lock, so reusing it is sound). Built by scripts/docker-standins.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        gcc g++ make libc6-dev pkg-config libssl-dev git curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY toolchain /usr/local/rust
COPY registry /usr/local/cargo/registry
RUN rustc --version && cargo --version
LABEL org.entroll.standin="rust:1.95-bookworm from Debian bookworm and the host's Rust toolchain"
CMD ["bash"]
