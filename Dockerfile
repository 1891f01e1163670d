# Backvault API image. The MongoDB database tools are built from their Go module,
# as scripts/services does for development.
FROM golang:1.24-bookworm AS tools
ARG MONGO_TOOLS_VERSION=v0.0.0-20250715155915-887641268977
WORKDIR /build
RUN go mod init tools \
 && GONOSUMDB=github.com/mongodb/mongo-tools go get \
      github.com/mongodb/mongo-tools/mongodump/main@${MONGO_TOOLS_VERSION} \
 && CGO_ENABLED=0 go build -trimpath -o /out/mongodump github.com/mongodb/mongo-tools/mongodump/main \
 && CGO_ENABLED=0 go build -trimpath -o /out/mongorestore github.com/mongodb/mongo-tools/mongorestore/main

# The console's htmx, pinned by package-lock.json, served from the package itself.
FROM node:20-bookworm-slim AS console
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts

FROM python:3.12-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client age zstd \
 && rm -rf /var/lib/apt/lists/*
COPY --from=tools /out/ /usr/local/bin/
RUN useradd --system --create-home backvault
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY --from=console /build/node_modules/htmx.org/dist/htmx.min.js \
     /build/node_modules/htmx.org/dist/htmx.min.js.gz ./app/console/static/vendor/
RUN pip install --no-cache-dir .
USER backvault
ENV BACKUP_SYSTEM__HOST=0.0.0.0 BACKUP_SYSTEM__ENVIRONMENT=production
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["backvault", "serve"]
