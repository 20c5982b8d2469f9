import { v7 as uuidv7 } from "uuid";

/**
 * A source of the current time. The ledger takes one as an argument instead of reading the
 * system clock, so tests can drive hold expiry deterministically.
 */
export type Clock = () => Date;

/** A source of new unique ids. Injected for the same reason as {@link Clock}. */
export type IdGenerator = () => string;

/** The system clock. */
export const systemClock: Clock = () => new Date();

/**
 * UUIDv7 ids: time-ordered, so journal rows inserted close in time land close together in
 * the primary key index, and "newest first" is an index scan on the id.
 */
export const uuidV7: IdGenerator = () => uuidv7();

/** A clock that only moves when told to; for tests. */
export function createManualClock(start: Date = new Date()): Clock & { advance(ms: number): void; set(at: Date): void } {
  let nowMs = start.getTime();
  const clock = (() => new Date(nowMs)) as Clock & { advance(ms: number): void; set(at: Date): void };
  clock.advance = (ms: number) => {
    nowMs += ms;
  };
  clock.set = (at: Date) => {
    nowMs = at.getTime();
  };
  return clock;
}
