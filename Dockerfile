# Smooth's image: the chat server (the default command: gunicorn with the gevent worker,
# gunicorn.conf.py) and the presence server (`python -m app.tcp_presence`), as deploy/compose.yaml
# runs them. Not built or run in this repository's CI: no container runtime is reachable there;
# tests/unit/test_deploy_files.py checks this file against the Makefile instead.

# 1. Python dependencies, pinned (requirements.txt), into a venv copied whole into the last stage.
FROM python:3.11-slim AS python-deps
RUN python -m venv /venv
COPY requirements.txt /build/requirements.txt
RUN /venv/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir -r /build/requirements.txt

# 2. The browser scripts the chat server serves itself (static/package.json: sockjs-client for
#    SockJS's iframe.html, @stomp/stompjs for the demo), from npm, as `make` installs them.
FROM node:20-slim AS static-deps
WORKDIR /build/static
COPY static/package.json static/package-lock.json ./
RUN npm install --no-audit --no-fund --loglevel=error

# 3. The runtime: no compiler, no npm, a user without a shell or a home of its own.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin smooth
WORKDIR /srv/smooth
COPY --from=python-deps /venv /venv
COPY --from=static-deps /build/static/node_modules static/node_modules
COPY app app
COPY workers workers
COPY gunicorn.conf.py ./
USER smooth
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BIND_HOST=0.0.0.0
# chat HTTP/WebSocket, presence TCP, presence HTTP
EXPOSE 8080 10001 8088
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
