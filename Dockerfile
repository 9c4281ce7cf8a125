# Multi-stage build of a small static image: the broker binary on distroless/static.
# The image has no PostgreSQL server, so it always needs DATABASE_URL (fly.toml's secrets).
#
#   docker build --build-arg GIT_SHA=$(git rev-parse --short HEAD) -t meshbroker .

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY . .
ARG GIT_SHA=unknown
ARG VERSION=0.1.0
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/meshbroker/meshbroker/internal/buildinfo.Version=${VERSION} -X github.com/meshbroker/meshbroker/internal/buildinfo.gitSHA=${GIT_SHA}" \
      -o /out/broker ./cmd/broker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/broker /usr/local/bin/broker
USER nonroot:nonroot
EXPOSE 7900 9091
# No ENTRYPOINT, so fly.toml's release_command ("broker migrate up") runs as written.
CMD ["broker", "serve"]
