# tokenwatt: the exporter and the NVML bindings (energy sources nvml, dcgm_exporter, simulated).
# The DCGM bindings ship with DCGM, not on PyPI: for `source: dcgm` build FROM this image and add
# `datacenter-gpu-manager-4-core` of the host engine's version (see docs/configuration.md).
#
#   docker build -t tokenwatt:0.1.0 .       (BuildKit: the default since Docker 23; DOCKER_BUILDKIT=1 before)
#   docker run --rm -p 9839:9839 -v "$PWD/tokenwatt.yml:/etc/tokenwatt/tokenwatt.yml:ro" tokenwatt:0.1.0

# Both stages use the same base (change both together): the virtual environment built in the first
# is copied whole into the second, so the interpreter it points to must be the same there.
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# pip compiles the bytecode at build time, as the chart runs tokenwatt on a read-only root filesystem.
# Where outbound TLS is re-signed by a local CA, pass that CA's bundle as the build secret `ca-bundle`
# (`docker build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt .`): it is mounted for
# this step only and never written to a layer. pip and setuptools leave the environment once it is
# built: the exporter never installs anything.
RUN --mount=type=secret,id=ca-bundle \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && python -m venv /opt/tokenwatt \
    && /opt/tokenwatt/bin/pip install ".[nvml]" \
    && /opt/tokenwatt/bin/pip uninstall --yes pip setuptools

FROM python:3.11.13-slim-bookworm
LABEL org.opencontainers.image.title="tokenwatt" \
      org.opencontainers.image.description="Prometheus exporter for the energy cost of LLM tokens" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric UID above 10000, so Kubernetes can check runAsNonRoot without a passwd lookup and
# the user never collides with one of the node's own.
# The base interpreter's own packages (pip, setuptools, wheel) and the wheels that ensurepip puts
# into new virtual environments (python.org builds keep them in ensurepip/_bundled, Debian's python3
# in /usr/share/python-wheels) go too: tokenwatt runs from its own environment and installs nothing.
RUN groupadd --system --gid 10001 tokenwatt \
    && useradd --system --uid 10001 --gid tokenwatt --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin tokenwatt \
    && mkdir -p /etc/tokenwatt \
    && rm -rf /usr/local/bin/pip* /usr/local/lib/python3.11/site-packages/* \
       /usr/local/lib/python3.11/ensurepip/_bundled /usr/share/python-wheels
COPY --from=build /opt/tokenwatt /opt/tokenwatt
ENV PATH=/opt/tokenwatt/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=utility
USER 10001:10001
EXPOSE 9839
# No curl or wget in a slim image: the interpreter that is already there makes the request. The
# address is the default `listen`; with TLS or another port, probe in the orchestrator instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9839/healthz', timeout=4)"]
ENTRYPOINT ["tokenwatt"]
CMD ["run", "--config", "/etc/tokenwatt/tokenwatt.yml"]
