# miniexchange: the same command as `make run`, as a non-root user.
# Build: docker build -t miniexchange .
# Run:   docker run -p 8080:8080 -v mx-data:/app/data miniexchange
# Stop with a deadline above SHUTDOWN_TIMEOUT (+5 s margin), e.g. `docker stop -t 20`.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080 \
    DATABASE_PATH=/app/data/miniexchange.db

WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY miniexchange ./miniexchange
COPY config ./config
# Runtime dependencies only (no dev extra), at exactly the tested versions.
RUN pip install -c constraints.txt . \
 && useradd --system --uid 10001 --no-create-home --home-dir /app app \
 && mkdir -p /app/data \
 && chown app:app /app/data

USER app
VOLUME ["/app/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${PORT:-8080}/healthz', timeout=2)"
# Exec form: gunicorn is PID 1 and receives SIGTERM directly.
CMD ["gunicorn", "-c", "config/gunicorn.conf.py"]
