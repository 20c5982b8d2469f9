/**
 * The API keys page (admin keys): the tenant's keys with their role, scope and use, a form
 * that creates one and shows its secret once (only a hash is stored), and revocation.
 *
 * @module
 */
import { useState } from "preact/hooks";
import { Role, type ApiKey } from "@holdfast/client";
import { enumLabel, formatTime } from "./format.js";
import type { Session } from "./session.js";
import { ConfirmButton, Empty, ErrorBox, InlineError, Loading, Pager, Section, useLoad, usePager } from "./ui.js";

const PAGE_SIZE = 20;

export function ApiKeysPage({ session }: { session: Session }) {
  const pager = usePager([]);
  const keys = useLoad(() => session.hf.admin.listApiKeys({ pageSize: PAGE_SIZE, pageToken: pager.token }), [pager.token]);
  const ownKeyId = keyIdOf(session.apiKey);
  return (
    <div class="page">
      <CreateKey session={session} onCreated={keys.reload} />
      <Section title="API keys" testId="api-keys">
        {keys.error !== undefined && <ErrorBox error={keys.error} retry={keys.reload} />}
        {keys.data === undefined && keys.error === undefined && <Loading what="API keys" />}
        {keys.data !== undefined && keys.data.apiKeys.length === 0 && (
          <Empty>
            <p>No keys on this page.</p>
          </Empty>
        )}
        {keys.data !== undefined && keys.data.apiKeys.length > 0 && (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Role</th>
                  <th class="opt">Wallet</th>
                  <th class="opt">Last used</th>
                  <th>State</th>
                  <th>Actions</th>
                </tr>
              </thead>
              <tbody>
                {keys.data.apiKeys.map((key) => (
                  <KeyRow key={key.keyId} session={session} apiKey={key} own={key.keyId === ownKeyId} onRevoked={keys.reload} />
                ))}
              </tbody>
            </table>
          </div>
        )}
        {keys.data !== undefined && <Pager page={pager.page} nextToken={keys.data.nextPageToken} onNext={() => pager.next(keys.data!.nextPageToken)} onPrevious={pager.previous} />}
      </Section>
    </div>
  );
}

/** The public id inside a key (`hf_<key_id>_<secret>`), to mark the key signed in with. */
function keyIdOf(apiKey: string): string | undefined {
  return /^hf_([^_]+)_/.exec(apiKey)?.[1];
}

function KeyRow({ session, apiKey, own, onRevoked }: { session: Session; apiKey: ApiKey; own: boolean; onRevoked: () => void }) {
  const revoked = apiKey.revokedAt !== undefined;
  const expired = apiKey.expiresAt !== undefined && Number(apiKey.expiresAt.seconds) * 1000 <= Date.now();
  const state = revoked ? "revoked" : expired ? "expired" : "active";
  return (
    <tr data-testid={`key-${apiKey.keyId}`}>
      <td>
        <div>{apiKey.name}{own && <span class="badge">this session</span>}</div>
        <code class="muted">{apiKey.keyId}</code>
      </td>
      <td>{enumLabel(Role, apiKey.role, "")}</td>
      <td class="opt">{apiKey.walletId === "" ? "any" : <code>{apiKey.walletId}</code>}</td>
      <td class="opt nowrap">{apiKey.lastUsedAt === undefined ? "never" : formatTime(apiKey.lastUsedAt)}</td>
      <td>
        <span class={`badge status-${state}`} title={revoked ? `revoked ${formatTime(apiKey.revokedAt)}` : apiKey.expiresAt ? `expires ${formatTime(apiKey.expiresAt)}` : ""}>{state}</span>
      </td>
      <td>
        {!revoked && (
          <ConfirmButton
            label="Revoke"
            confirm={own ? "Revoke this session's key" : "Confirm revoke"}
            danger
            testId="revoke"
            action={() => session.hf.admin.revokeApiKey({ keyId: apiKey.keyId })}
            onDone={onRevoked}
          />
        )}
      </td>
    </tr>
  );
}

function CreateKey({ session, onCreated }: { session: Session; onCreated: () => void }) {
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>(Role.READER);
  const [walletId, setWalletId] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [secret, setSecret] = useState<{ name: string; secret: string } | undefined>(undefined);
  const [copied, setCopied] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    setCopied(false);
    try {
      const created = await session.hf.admin.createApiKey({ name: name.trim(), role, walletId: walletId.trim() });
      setSecret({ name: created.apiKey?.name ?? name, secret: created.secret });
      setName("");
      setWalletId("");
      onCreated();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const copy = async () => {
    if (secret === undefined) return;
    await navigator.clipboard?.writeText(secret.secret).then(() => setCopied(true), () => setCopied(false));
  };
  return (
    <Section title="Create a key" testId="create-key">
      <form class="form-row" onSubmit={submit}>
        <label>
          Name
          <input name="name" required maxLength={128} value={name} placeholder="billing backend" onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Role
          <select name="role" value={String(role)} onChange={(e) => setRole(Number(e.currentTarget.value) as Role)}>
            <option value={String(Role.READER)}>reader</option>
            <option value={String(Role.WRITER)}>writer</option>
            <option value={String(Role.ADMIN)}>admin</option>
          </select>
        </label>
        <label>
          Wallet (optional)
          <input name="wallet" value={walletId} placeholder="any wallet" disabled={role === Role.ADMIN} onInput={(e) => setWalletId(e.currentTarget.value)} />
        </label>
        <button type="submit" disabled={busy}>{busy ? "Creating…" : "Create key"}</button>
      </form>
      {error !== undefined && <InlineError error={error} />}
      {secret !== undefined && (
        <div class="secret" role="status" data-testid="new-secret">
          <p>
            <strong>Key “{secret.name}” created.</strong> Copy its secret now: it is shown once and cannot be read again.
          </p>
          <code data-testid="secret-value">{secret.secret}</code>
          <div class="actions">
            <button type="button" class="secondary" onClick={copy}>{copied ? "Copied" : "Copy"}</button>
            <button type="button" class="link" onClick={() => setSecret(undefined)}>I saved it, hide it</button>
          </div>
        </div>
      )}
    </Section>
  );
}
