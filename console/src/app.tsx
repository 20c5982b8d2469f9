/**
 * The console's frame: sign-in, the navigation the key's role allows, and the page the URL's
 * hash names (`#/wallets/user_123`, `#/webhooks`, `#/keys`, `#/rate-cards`). Hash routes keep
 * the ledger's static handler to one page: every route is `/console/` itself.
 *
 * @module
 */
import { useEffect, useState } from "preact/hooks";
import { ApiKeysPage } from "./api-keys.js";
import { RateCardsPage } from "./rate-cards.js";
import { resume, signIn, signOut, type ConsoleRole, type Session } from "./session.js";
import { ErrorBox, Loading } from "./ui.js";
import { WalletsPage } from "./wallets.js";
import { WebhooksPage } from "./webhooks.js";

type Route = { page: "wallets"; walletId?: string } | { page: "webhooks" } | { page: "keys" } | { page: "rate-cards" };

const NAV: readonly { page: Route["page"]; label: string; roles: readonly ConsoleRole[] }[] = [
  { page: "wallets", label: "Wallets", roles: ["reader", "writer", "admin"] },
  { page: "webhooks", label: "Webhooks", roles: ["admin"] },
  { page: "keys", label: "API keys", roles: ["admin"] },
  { page: "rate-cards", label: "Rate cards", roles: ["reader", "writer", "admin"] },
];

function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/");
  switch (parts[0]) {
    case "webhooks":
      return { page: "webhooks" };
    case "keys":
      return { page: "keys" };
    case "rate-cards":
      return { page: "rate-cards" };
    default: {
      const id = parts[0] === "wallets" && parts[1] ? safeDecode(parts.slice(1).join("/")) : undefined;
      return { page: "wallets", walletId: id };
    }
  }
}

function safeDecode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

function useRoute(): Route {
  const [route, setRoute] = useState(parseRoute(window.location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

export function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  useEffect(() => {
    void resume().then(setSession);
  }, []);
  if (session === undefined) return <Loading what="the console" />;
  if (session === null) return <SignIn onSignedIn={setSession} />;
  return (
    <Shell
      session={session}
      onSignOut={() => {
        signOut(session);
        setSession(null);
      }}
    />
  );
}

function Shell({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const route = useRoute();
  const allowed = NAV.filter((item) => item.roles.includes(session.role));
  const page = allowed.some((item) => item.page === route.page) ? route : ({ page: "wallets" } as Route);
  return (
    <div class="shell">
      <header class="top">
        <a class="brand" href="#/wallets">Holdfast</a>
        <nav aria-label="pages">
          {allowed.map((item) => (
            <a key={item.page} href={`#/${item.page}`} class={page.page === item.page ? "active" : ""} aria-current={page.page === item.page ? "page" : undefined}>
              {item.label}
            </a>
          ))}
        </nav>
        <span class="who">
          <span class={`badge role-${session.role}`} data-testid="role">{session.role}</span>
          <button type="button" class="link" onClick={onSignOut}>Sign out</button>
        </span>
      </header>
      <main>
        {page.page === "wallets" && <WalletsPage session={session} walletId={page.walletId} />}
        {page.page === "webhooks" && <WebhooksPage session={session} />}
        {page.page === "keys" && <ApiKeysPage session={session} />}
        {page.page === "rate-cards" && <RateCardsPage session={session} />}
      </main>
    </div>
  );
}

function SignIn({ onSignedIn }: { onSignedIn: (session: Session) => void }) {
  const [key, setKey] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      onSignedIn(await signIn(key));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="sign-in">
      <form class="card" onSubmit={submit}>
        <h1>Holdfast console</h1>
        <p class="muted">Sign in with an API key of this ledger's tenant. The key stays in this tab only (sessionStorage) and is sent only to this ledger.</p>
        <label for="api-key">API key</label>
        <input id="api-key" name="api-key" type="password" autoComplete="off" required value={key} placeholder="hf_…" onInput={(e) => setKey(e.currentTarget.value)} />
        <button type="submit" disabled={busy || key.trim() === ""}>{busy ? "Checking…" : "Sign in"}</button>
        {error !== undefined && <ErrorBox error={error} />}
        <p class="muted small">
          A development stack prints its admin key (<code>npm start</code>, also in <code>.holdfast/dev-admin-key</code>). Create others with <code>holdfast key create</code>. Reader keys see balances and history; writer keys also capture, release and refund; admin keys also manage webhooks and keys.
        </p>
      </form>
    </main>
  );
}
