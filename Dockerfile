# SBT service image: slim Python, non-root, migrates then serves.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 SBT_DATA_DIR=/data

WORKDIR /srv/sbt
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
# gcc and the OpenSSL and SQLite headers build the compiled audit check (setup.py), then go again.
COPY setup.py ./
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev libsqlite3-dev \
    && pip install -c constraints.txt -e . \
    && apt-get purge -y --auto-remove gcc libc6-dev libssl-dev libsqlite3-dev && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /srv/sbt sbt \
    && mkdir -p /data && chown sbt /data

USER sbt
EXPOSE 8000
VOLUME ["/data"]

HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"

# `keys generate` never overwrites: it makes a key in /data on first start and is a no-op afterwards (with
# SBT_ENV=production the key file must be given explicitly and exist, so nothing is generated there).
CMD ["sh", "-c", "sbt db upgrade && sbt keys generate && sbt serve --host 0.0.0.0 --port 8000"]
