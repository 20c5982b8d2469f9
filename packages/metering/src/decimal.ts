/**
 * Exact conversion of decimal prices, as price lists publish them ("0.15" dollars per million
 * tokens), to integer nano units. A price that does not come out as a whole number of nano
 * units, or does not fit int64, is refused rather than rounded: a rate card either holds the
 * published price exactly or is not made.
 *
 * @module
 */
import { INT64_MAX } from "./rounding.js";

/** Decimal digits between a minor unit and a nano unit. */
export const NANO_DIGITS = 9;

/** The longest decimal text read; published prices are a dozen characters. */
const DECIMAL_LENGTH_MAX = 64;
/** The largest exponent magnitude read, far beyond any price and small enough to compute. */
const EXPONENT_ABS_MAX = 400;
/** A non-negative decimal with an optional exponent: "15", "0.15", ".5", "1.5e-7". */
const DECIMAL_PATTERN = /^(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?$/;

/** A decimal that is malformed, negative, inexact at the wanted scale, or beyond int64. */
export class DecimalConversionError extends RangeError {
  override readonly name: string = "DecimalConversionError";

  constructor(
    readonly text: string,
    why: string,
  ) {
    super(`${JSON.stringify(text)} ${why}`);
  }
}

/**
 * The integer `text × 10^scaleDigits`, exactly: decimalToScaled("0.15", 11) is 15000000000n.
 * Throws {@link DecimalConversionError} when the product is not an integer (the text has more
 * significant fractional digits than the scale keeps), does not fit int64, or the text is not a
 * non-negative decimal.
 */
export function decimalToScaled(text: string, scaleDigits: number): bigint {
  if (!Number.isSafeInteger(scaleDigits) || scaleDigits < 0 || scaleDigits > EXPONENT_ABS_MAX) {
    throw new RangeError(`scaleDigits must be an integer from 0 to ${EXPONENT_ABS_MAX}`);
  }
  const match = text.length <= DECIMAL_LENGTH_MAX ? DECIMAL_PATTERN.exec(text) : null;
  if (match === null) {
    throw new DecimalConversionError(text, "is not a non-negative decimal number");
  }
  const [whole = "", fraction = ""] = match[1]!.split(".");
  const exponent = Number(match[2] ?? "0");
  if (Math.abs(exponent) > EXPONENT_ABS_MAX) {
    throw new DecimalConversionError(text, `has an exponent beyond ±${EXPONENT_ABS_MAX}`);
  }
  const digits = BigInt(`${whole}${fraction}` || "0");
  // text = digits × 10^(exponent − fraction.length), so text × 10^scale = digits × 10^shift.
  const shift = exponent - fraction.length + scaleDigits;
  let scaled: bigint;
  if (shift >= 0) {
    scaled = digits * 10n ** BigInt(shift);
  } else {
    const divisor = 10n ** BigInt(-shift);
    if (digits % divisor !== 0n) {
      throw new DecimalConversionError(text, `is not exact at ${scaleDigits} decimal places`);
    }
    scaled = digits / divisor;
  }
  if (scaled > INT64_MAX) {
    throw new DecimalConversionError(text, `times 10^${scaleDigits} does not fit in int64`);
  }
  return scaled;
}

/**
 * A price per million tokens in major units (dollars) as nano minor units per million tokens:
 * with 2 minor-unit digits (cents), "0.15" becomes 15 cents, 15000000000 nano-cents.
 */
export function nanoPerMtokFromDecimal(text: string, minorUnitDigits: number): bigint {
  return decimalToScaled(text, minorUnitDigits + NANO_DIGITS);
}

/**
 * The decimal text of a number read from JSON or JavaScript: the shortest text that reads back
 * as the same number (what `String` gives), so 0.15 is "0.15", not its binary expansion. A
 * number that is the float result of arithmetic (0.30000000000000004) keeps all its digits and
 * fails an exact conversion, as it should.
 */
export function numberToDecimal(value: number): string {
  if (!Number.isFinite(value) || value < 0) {
    throw new DecimalConversionError(String(value), "is not a finite non-negative number");
  }
  return String(value);
}

/** `value / 10^scaleDigits` as exact decimal text without trailing zeros: (15000000000n, 11) is "0.15". */
export function formatScaled(value: bigint, scaleDigits: number): string {
  const negative = value < 0n;
  const digits = (negative ? -value : value).toString().padStart(scaleDigits + 1, "0");
  const whole = digits.slice(0, digits.length - scaleDigits);
  const fraction = digits.slice(digits.length - scaleDigits).replace(/0+$/, "");
  return `${negative ? "-" : ""}${whole}${fraction === "" ? "" : `.${fraction}`}`;
}
