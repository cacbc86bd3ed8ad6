# The abusepipe image: the `abusepipe` command, run by docker-compose.yml as intake, store consumer and console.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY abusepipe ./abusepipe
COPY schemas ./schemas
COPY parsers ./parsers
COPY ingest ./ingest
COPY sinks ./sinks
COPY web ./web
COPY blocklist ./blocklist
COPY notify ./notify
RUN pip install . && useradd --system --uid 10001 --home-dir /var/lib/abusepipe --create-home abusepipe \
    && mkdir /zones && chown abusepipe /zones

USER abusepipe
ENV ABUSEPIPE_DATA_DIR=/var/lib/abusepipe
ENTRYPOINT ["abusepipe"]
CMD ["--help"]
