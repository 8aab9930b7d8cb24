# Build stage: Swift 6 toolchain, hiredis and libpq headers; release binaries.
FROM swift:6.0-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libhiredis-dev libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Plugins ./Plugins
COPY Tests ./Tests
COPY lua ./lua
COPY migrations ./migrations
RUN swift build -c release --product gateway && swift build -c release --product reconciler \
    && mkdir -p /out && cp "$(swift build -c release --show-bin-path)/gateway" "$(swift build -c release --show-bin-path)/reconciler" /out/

# Run stage: the binaries, the Swift runtime they link, and the hiredis and libpq runtimes.
FROM swift:6.0-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libhiredis0.14 libpq5 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 app
COPY --from=build /out/gateway /out/reconciler /usr/local/bin/
USER app
ENV GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8080
EXPOSE 8080
CMD ["gateway"]
