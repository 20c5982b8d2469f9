/**
 * TLS on the server's one port: the handshake offers ALPN `h2` and `http/1.1`, so gRPC,
 * Connect and gRPC-Web all work over it, and the server hands each connection to its HTTP/2 or
 * HTTP/1.1 server by the protocol the client chose. The certificate and key (and the client CA,
 * for mTLS) are read from files and read again on SIGHUP or when a file changes, so a renewed
 * certificate is served without a restart; connections already open keep the old one.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { unwatchFile, watchFile, type Stats } from "node:fs";
import { X509Certificate } from "node:crypto";
import type net from "node:net";
import tls from "node:tls";

import type { Logger } from "pino";

/** The TLS settings of {@link createServer}. */
export interface TlsOptions {
  /** PEM certificate chain served to clients, leaf first. */
  readonly certFile: string;
  /** PEM private key of the certificate. */
  readonly keyFile: string;
  /**
   * PEM CA certificates that sign client certificates. When set, every client must present a
   * certificate signed by one of them (mTLS); when unset, clients present none.
   */
  readonly clientCaFile?: string | null;
  /** How often the files are checked for changes; 0 turns the check off. */
  readonly watchIntervalMs?: number;
  /** The signal that reloads the files; null leaves signals alone. */
  readonly reloadSignal?: NodeJS.Signals | null;
}

/** The protocols offered in the handshake, the preferred first. */
export const TLS_ALPN_PROTOCOLS: readonly string[] = ["h2", "http/1.1"];
/** How often certificate files are checked for changes unless told otherwise. */
export const TLS_WATCH_INTERVAL_MS_DEFAULT = 10_000;
/** Bounds of `watchIntervalMs` (besides 0, which turns the check off). */
export const TLS_WATCH_INTERVAL_MS_MIN = 100;
export const TLS_WATCH_INTERVAL_MS_MAX = 60 * 60_000;
/** The signal that reloads the files unless told otherwise. */
export const TLS_RELOAD_SIGNAL_DEFAULT: NodeJS.Signals = "SIGHUP";
/** TLS 1.0 and 1.1 are broken; nothing that speaks gRPC needs them. */
const TLS_VERSION_MIN = "TLSv1.2";

/** The TLS side of the server's port. */
export interface TlsTerminator {
  /** Reads the files and starts watching them; the server calls it before it listens. */
  start(): Promise<void>;
  /** Runs the handshake on a new connection; `onSecure` gets it once it is secure. */
  accept(socket: net.Socket): void;
  /** Reads the files again; on failure keeps the current certificate and rejects. */
  reload(): Promise<void>;
  /** Stops watching the files and the signal. */
  close(): void;
}

/** The protocol a secured connection speaks, chosen by ALPN; no ALPN means HTTP/1.1. */
export type SecureProtocol = "h2" | "http1";

/** Options of {@link createTlsTerminator}. */
export interface TlsTerminatorOptions {
  readonly tls: TlsOptions;
  /** A handshake not finished within this time is dropped. */
  readonly handshakeTimeoutMs: number;
  readonly logger: Logger;
  /** Receives each connection once secure, with the plain socket it runs on. */
  readonly onSecure: (secure: tls.TLSSocket, plain: net.Socket | undefined, protocol: SecureProtocol) => void;
}

/** Creates the terminator; nothing is read until `start()`. */
export function createTlsTerminator(options: TlsTerminatorOptions): TlsTerminator {
  const { tls: settings, logger } = options;
  const mutual = settings.clientCaFile !== undefined && settings.clientCaFile !== null;
  const watchIntervalMs = checkWatchInterval(settings.watchIntervalMs ?? TLS_WATCH_INTERVAL_MS_DEFAULT);
  const server = tls.createServer({
    ALPNProtocols: [...TLS_ALPN_PROTOCOLS],
    handshakeTimeout: options.handshakeTimeoutMs,
    minVersion: TLS_VERSION_MIN,
    requestCert: mutual,
    rejectUnauthorized: mutual,
  });
  // A secured socket is matched to its plain one by the peer's address and port, which no
  // other open connection to this port shares.
  const handshaking = new Map<string, net.Socket>();
  server.on("secureConnection", (secure: tls.TLSSocket) => {
    const key = peerKey(secure);
    const plain = handshaking.get(key);
    handshaking.delete(key);
    options.onSecure(secure, plain, secure.alpnProtocol === "h2" ? "h2" : "http1");
  });
  server.on("tlsClientError", (err) => logger.debug({ err }, "TLS handshake failed"));
  const files = [settings.certFile, settings.keyFile, ...(mutual ? [settings.clientCaFile] : [])];
  const reload = async (): Promise<void> => {
    const context = await readContext(settings);
    server.setSecureContext(context);
    logCertificate(logger, context.cert as Buffer);
  };
  const onSignal = (): void => {
    reload().catch((err: unknown) => logger.error({ err }, "TLS reload failed; the current certificate stays"));
  };
  const onFileChange = (now: Stats, before: Stats): void => {
    if (now.mtimeMs !== before.mtimeMs || now.ino !== before.ino || now.size !== before.size) {
      onSignal();
    }
  };
  return {
    async start() {
      await reload();
      if (watchIntervalMs > 0) {
        for (const file of files) {
          watchFile(file, { interval: watchIntervalMs, persistent: false }, onFileChange);
        }
      }
      const signal = settings.reloadSignal === undefined ? TLS_RELOAD_SIGNAL_DEFAULT : settings.reloadSignal;
      if (signal !== null) {
        process.on(signal, onSignal);
      }
    },
    accept(socket) {
      const key = peerKey(socket);
      handshaking.set(key, socket);
      socket.once("close", () => {
        if (handshaking.get(key) === socket) {
          handshaking.delete(key);
        }
      });
      server.emit("connection", socket);
    },
    reload,
    close() {
      for (const file of files) {
        unwatchFile(file, onFileChange);
      }
      const signal = settings.reloadSignal === undefined ? TLS_RELOAD_SIGNAL_DEFAULT : settings.reloadSignal;
      if (signal !== null) {
        process.off(signal, onSignal);
      }
    },
  };
}

/** Reads the files into secure-context options; throws if the key does not fit the certificate. */
async function readContext(settings: TlsOptions): Promise<tls.SecureContextOptions> {
  const [cert, key, ca] = await Promise.all([
    readFile(settings.certFile),
    readFile(settings.keyFile),
    settings.clientCaFile === undefined || settings.clientCaFile === null ? undefined : readFile(settings.clientCaFile),
  ]);
  const context: tls.SecureContextOptions = { cert, key, ...(ca === undefined ? {} : { ca }) };
  // Building the context checks that the key matches the certificate before anything is swapped.
  tls.createSecureContext(context);
  return context;
}

/** Logs which certificate is now served and until when, so a renewal shows in the log. */
function logCertificate(logger: Logger, pem: Buffer): void {
  const leaf = new X509Certificate(pem);
  logger.info({ subject: leaf.subject, validTo: leaf.validTo, fingerprint256: leaf.fingerprint256 }, "TLS certificate loaded");
}

function peerKey(socket: net.Socket): string {
  return `${socket.remoteAddress ?? ""}|${socket.remotePort ?? ""}`;
}

function checkWatchInterval(value: number): number {
  const valid = value === 0 || (Number.isSafeInteger(value) && value >= TLS_WATCH_INTERVAL_MS_MIN && value <= TLS_WATCH_INTERVAL_MS_MAX);
  if (!valid) {
    throw new RangeError(
      `TLS option watchIntervalMs must be 0 or an integer from ${TLS_WATCH_INTERVAL_MS_MIN} to ${TLS_WATCH_INTERVAL_MS_MAX}, got ${value}`,
    );
  }
  return value;
}
