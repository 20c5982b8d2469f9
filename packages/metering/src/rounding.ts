/**
 * Rounding of exact costs to the minor units a ledger moves. Costs are exact in billionths of a
 * minor unit (nano units); money moves in whole minor units. A hold rounds up, so it always
 * covers the charge of the same usage; a charge rounds down and carries the remainder to the
 * wallet's next charge, so that over any sequence of charges the total charged is never above
 * the exact cost and never a whole minor unit below it (docs/metering.md, "Rounding with
 * carry"). The SQL functions metering_hold_amount and metering_charge_with_carry
 * (db/migrations/0009_rate_cards.sql) compute the same.
 *
 * @module
 */

/** Nano units in one minor unit: costs are exact to a billionth of a cent. */
export const NANO_PER_MINOR_UNIT = 1_000_000_000n;

/** The largest int64, the bound of every amount and cost on the wire and in the database. */
export const INT64_MAX = 2n ** 63n - 1n;

/** What one charge takes from a wallet, and the remainder the wallet carries afterwards. */
export interface Charge {
  /** Whole minor units to charge now. */
  readonly amount: bigint;
  /** The sub-minor remainder to carry to the wallet's next charge: 0 <= carryNano < 1e9. */
  readonly carryNano: bigint;
}

/**
 * Splits a charge of `costNano` on a wallet that carries `carryNano` from earlier charges:
 * amount = floor((costNano + carryNano) / 1e9), and the rest is carried. Summed over charges,
 * amount + final carry = the exact cost of them all (plus the first carry), which is why the
 * total charged is never above the exact cost and never a whole minor unit below it.
 */
export function chargeWithCarry(costNano: bigint, carryNano: bigint): Charge {
  if (costNano < 0n) {
    throw new RangeError("costNano must not be negative");
  }
  if (carryNano < 0n || carryNano >= NANO_PER_MINOR_UNIT) {
    throw new RangeError("carryNano must be from 0 to 999999999");
  }
  const total = costNano + carryNano;
  return { amount: total / NANO_PER_MINOR_UNIT, carryNano: total % NANO_PER_MINOR_UNIT };
}

/**
 * The minor units a hold for a cost reserves: ceil(costNano / 1e9). Whatever the wallet
 * carries, a charge of the same cost takes at most this much, so capturing the estimate a hold
 * was made for never needs more than the hold.
 */
export function holdAmountFor(costNano: bigint): bigint {
  if (costNano < 0n) {
    throw new RangeError("costNano must not be negative");
  }
  return (costNano + NANO_PER_MINOR_UNIT - 1n) / NANO_PER_MINOR_UNIT;
}

/** The minor units a charge takes with nothing carried: floor(costNano / 1e9). */
export function chargeAmountFor(costNano: bigint): bigint {
  return chargeWithCarry(costNano, 0n).amount;
}
