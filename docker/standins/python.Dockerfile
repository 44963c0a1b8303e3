# Stand-in for python:3.11-slim (no registry here): Debian bookworm's Python 3.11 laid out the
# way the official image is used: `python` and `pip` on PATH, pip installing into the system
# environment. Built by scripts/docker-standins on the debootstrap stand-in of debian:bookworm-slim.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-pip python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip \
    && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf
LABEL org.entroll.standin="python:3.11-slim from Debian bookworm's python3 (3.11)"
CMD ["python3"]
