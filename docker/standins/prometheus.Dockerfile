# Stand-in for prom/prometheus:v2.53.0 (no registry here): Debian bookworm's Prometheus package
# (2.42) with the official image's entry point, working directory and user. Debian's build
# keeps its data in /var/lib/prometheus/metrics2 by default, the official one in the working
# directory: both are /prometheus here.
# Built by scripts/docker-standins.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus \
    && rm -rf /var/lib/prometheus/metrics2 && ln -s /prometheus /var/lib/prometheus/metrics2
USER nobody
WORKDIR /prometheus
EXPOSE 9090
LABEL org.entroll.standin="prom/prometheus:v2.53.0 from Debian bookworm's prometheus package"
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
