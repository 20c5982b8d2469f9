/**
 * Where webhooks may be sent. An endpoint must be https on public addresses, unless its host
 * lies in a network the operator trusts (HOLDFAST_WEBHOOK_ALLOWED_NETWORKS): there it may also be
 * private, loopback or link-local, and plain http.
 *
 * Without this a tenant's admin could make the worker POST into the operator's own network
 * (cloud metadata at 169.254.169.254, a database on 10.x) and read the answer back through
 * ListDeliveries. The URL is checked when it is saved (with a DNS lookup, so the caller hears
 * INVALID_ARGUMENT at once) and again at every connection (see {@link UrlPolicy.addressProblem}),
 * because a DNS name can be pointed elsewhere after it was saved.
 *
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

/** Longest accepted URL. */
export const URL_LENGTH_MAX = 2048;
/** How long the save-time DNS lookup may take. */
const LOOKUP_TIMEOUT_MS = 5000;
/** The only range ipaddr.js gives to ordinary public addresses. */
const PUBLIC_RANGE = "unicast";
/**
 * IPv6 global unicast (RFC 4291 section 2.4). ipaddr.js calls every IPv6 address it has no name
 * for "unicast", including IPv4-compatible ones (`::/96`, `[::127.0.0.1]` is `::7f00:1`), which
 * some stacks route to the IPv4 address inside: a public IPv6 address must also lie in here.
 */
const IPV6_GLOBAL_UNICAST = ipaddr.parseCIDR("2000::/3");

export interface UrlPolicy {
  /**
   * Why the worker must not connect to `address`, or null when it may. `forHttp` asks for the
   * stricter rule of plain-http URLs: only trusted networks.
   */
  addressProblem(address: string, forHttp: boolean): string | null;
  /** Checks a URL as CreateEndpoint and UpdateEndpoint do; resolves the host name. */
  checkUrl(url: string): Promise<UrlCheck>;
}

export type UrlCheck = { ok: true; url: URL } | { ok: false; why: string };

/** How a host name is resolved; tests pass a fake to name hosts that resolve anywhere. */
export type Resolver = (host: string) => Promise<string[]>;

/** The policy for the given trusted networks (normalised CIDRs, as readAllowedNetworks in settings.ts returns them). */
export function createUrlPolicy(allowedNetworks: readonly string[], resolve: Resolver = resolveHost): UrlPolicy {
  const trusted = allowedNetworks.map((cidr) => ipaddr.parseCIDR(cidr));
  const isTrusted = (address: ipaddr.IPv4 | ipaddr.IPv6) =>
    trusted.some(([network, bits]) => network.kind() === address.kind() && address.match(network, bits));

  function addressProblem(address: string, forHttp: boolean): string | null {
    if (!ipaddr.isValid(address)) {
      return `"${address}" is not an IP address`;
    }
    // process() turns an IPv4-mapped IPv6 address (::ffff:10.0.0.1) into the IPv4 one.
    const parsed = ipaddr.process(address);
    if (isTrusted(parsed)) {
      return null;
    }
    if (parsed.range() !== PUBLIC_RANGE) {
      return `resolves to a ${parsed.range()} address (${parsed.toString()}); only public addresses and HOLDFAST_WEBHOOK_ALLOWED_NETWORKS are allowed`;
    }
    if (parsed.kind() === "ipv6" && !parsed.match(IPV6_GLOBAL_UNICAST)) {
      return `resolves to an IPv6 address outside global unicast 2000::/3 (${parsed.toString()}), such as an IPv4-compatible ::/96 one; only public addresses and HOLDFAST_WEBHOOK_ALLOWED_NETWORKS are allowed`;
    }
    if (forHttp) {
      return "must be https (plain http is allowed only to HOLDFAST_WEBHOOK_ALLOWED_NETWORKS)";
    }
    return null;
  }

  async function checkUrl(raw: string): Promise<UrlCheck> {
    const parsed = parseEndpointUrl(raw);
    if (!parsed.ok) {
      return parsed;
    }
    const host = hostOf(parsed.url);
    let addresses: string[];
    try {
      addresses = isIP(host) === 0 ? await resolve(host) : [host];
    } catch {
      return { ok: false, why: `host ${host.slice(0, 253)} does not resolve` };
    }
    if (addresses.length === 0) {
      return { ok: false, why: `host ${host.slice(0, 253)} does not resolve` };
    }
    const forHttp = parsed.url.protocol === "http:";
    for (const address of addresses) {
      const problem = addressProblem(address, forHttp);
      if (problem !== null) {
        return { ok: false, why: problem };
      }
    }
    return parsed;
  }

  return { addressProblem, checkUrl };
}

/** The URL's shape alone: absolute http(s), no user info, no fragment, bounded length. */
export function parseEndpointUrl(raw: string): UrlCheck {
  if (raw.length === 0) {
    return { ok: false, why: "is required" };
  }
  if (raw.length > URL_LENGTH_MAX) {
    return { ok: false, why: `must be at most ${URL_LENGTH_MAX} characters` };
  }
  if (!URL.canParse(raw)) {
    return { ok: false, why: "must be an absolute URL" };
  }
  const url = new URL(raw);
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return { ok: false, why: "must be an https URL" };
  }
  if (url.username !== "" || url.password !== "") {
    return { ok: false, why: "must not carry user info (put credentials in the receiver's verification instead)" };
  }
  if (url.hash !== "") {
    return { ok: false, why: "must not have a fragment" };
  }
  return { ok: true, url };
}

/** The URL's host without the brackets of an IPv6 literal. */
export function hostOf(url: URL): string {
  return url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
}

async function resolveHost(host: string): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("DNS lookup timed out")), LOOKUP_TIMEOUT_MS);
  });
  try {
    const found = await Promise.race([lookup(host, { all: true, verbatim: true }), timeout]);
    return found.map((entry) => entry.address);
  } finally {
    clearTimeout(timer);
  }
}
