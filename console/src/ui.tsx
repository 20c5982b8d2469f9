/**
 * The pieces every page uses: loading, empty and error states that say what to do next, a
 * pager over page tokens, a two-step button for actions that move money or revoke access, and
 * a hook that loads data and reloads it on demand.
 *
 * @module
 */
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { describeError } from "./format.js";

/** The state of one load: its data once it arrived, or the error it failed with. */
export interface Loaded<T> {
  readonly data: T | undefined;
  readonly error: unknown;
  readonly loading: boolean;
  /** Loads again; the data on screen stays until the new one arrives. */
  readonly reload: () => void;
}

/**
 * Runs `load` now, again whenever `deps` change or `reload()` is called. An answer that arrives
 * after a newer load started is dropped, so a slow old answer never overwrites a newer one.
 */
export function useLoad<T>(load: () => Promise<T>, deps: readonly unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data: T | undefined; error: unknown; loading: boolean }>({ data: undefined, error: undefined, loading: true });
  const [round, setRound] = useState(0);
  const latest = useRef(0);
  useEffect(() => {
    const mine = ++latest.current;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => mine === latest.current && setState({ data, error: undefined, loading: false }),
      (error: unknown) => mine === latest.current && setState((s) => ({ data: s.data, error, loading: false })),
    );
  }, [...deps, round]);
  const reload = useCallback(() => setRound((r) => r + 1), []);
  return { ...state, reload };
}

/** The current time, ticking once a second, for countdowns. */
export function useNow(): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  return now;
}

export function Loading({ what }: { what: string }) {
  return <p class="state loading" role="status">Loading {what}…</p>;
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <div class="state empty">{children}</div>;
}

/** A failure, what to do about it, and a retry when one makes sense. */
export function ErrorBox({ error, retry }: { error: unknown; retry?: () => void }) {
  const problem = describeError(error);
  return (
    <div class="state error" role="alert" data-reason={problem.reason}>
      <strong>{problem.message}</strong>
      <span>{problem.hint}</span>
      {retry && (
        <button type="button" class="secondary" onClick={retry}>
          Retry
        </button>
      )}
    </div>
  );
}

/** A titled block of a page. */
export function Section({ title, actions, children, testId }: { title: string; actions?: ComponentChildren; children: ComponentChildren; testId?: string }) {
  return (
    <section class="card" data-testid={testId}>
      <header class="card-head">
        <h2>{title}</h2>
        {actions}
      </header>
      {children}
    </section>
  );
}

/** Page tokens seen so far, so that "Previous" goes back without the API paging backwards. */
export function usePager(deps: readonly unknown[]) {
  const [tokens, setTokens] = useState<string[]>([""]);
  useEffect(() => setTokens([""]), deps);
  const token = tokens[tokens.length - 1] ?? "";
  return {
    token,
    page: tokens.length,
    next: (nextToken: string) => setTokens((t) => [...t, nextToken]),
    previous: () => setTokens((t) => (t.length > 1 ? t.slice(0, -1) : t)),
  };
}

export function Pager({ page, nextToken, onNext, onPrevious }: { page: number; nextToken: string; onNext: () => void; onPrevious: () => void }) {
  if (page === 1 && nextToken === "") return null;
  return (
    <nav class="pager" aria-label="pages">
      <button type="button" class="secondary" disabled={page === 1} onClick={onPrevious}>
        ← Previous
      </button>
      <span>Page {page}</span>
      <button type="button" class="secondary" disabled={nextToken === ""} onClick={onNext}>
        Next →
      </button>
    </nav>
  );
}

/**
 * A button that asks once more before it acts, in place (no browser dialog), then shows the
 * action's failure under it if there is one.
 */
export function ConfirmButton({ label, confirm, action, onDone, testId, danger }: {
  label: string;
  confirm: string;
  action: () => Promise<unknown>;
  onDone?: () => void;
  testId?: string;
  danger?: boolean;
}) {
  const [stage, setStage] = useState<"idle" | "confirm" | "busy">("idle");
  const [error, setError] = useState<unknown>(undefined);
  const run = async () => {
    setStage("busy");
    setError(undefined);
    try {
      await action();
      setStage("idle");
      onDone?.();
    } catch (e) {
      setError(e);
      setStage("idle");
    }
  };
  return (
    <span class="confirm">
      {stage === "idle" && (
        <button type="button" class={danger ? "danger" : "secondary"} data-testid={testId} onClick={() => setStage("confirm")}>
          {label}
        </button>
      )}
      {stage !== "idle" && (
        <>
          <button type="button" class="danger" data-testid={testId && `${testId}-confirm`} disabled={stage === "busy"} onClick={run}>
            {stage === "busy" ? "Working…" : confirm}
          </button>
          <button type="button" class="link" disabled={stage === "busy"} onClick={() => setStage("idle")}>
            Cancel
          </button>
        </>
      )}
      {error !== undefined && <InlineError error={error} />}
    </span>
  );
}

export function InlineError({ error }: { error: unknown }) {
  const problem = describeError(error);
  return (
    <span class="inline-error" role="alert" data-reason={problem.reason}>
      {problem.message}
    </span>
  );
}
