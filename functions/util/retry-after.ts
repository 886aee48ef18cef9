// Retry-After (RFC 9110 10.2.3) as a client reads it: delay-seconds or an HTTP-date, turned into
// the seconds to wait. The edge's inference client (inference/remote.ts) and the browser SDK
// (sdk/index.ts) both read it here, so this module imports nothing: the SDK bundle takes it whole.

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = `(${MONTHS.join('|')})`;
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';
// HTTP-date (RFC 9110 5.6.7) is case-sensitive; a recipient must accept all three forms.
const IMF_FIXDATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`);
const RFC850_DATE = new RegExp(`^(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`);
const ASCTIME_DATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ${MONTH} ( \\d|\\d{2}) ${TIME} (\\d{4})$`);

/**
 * The seconds a Retry-After value asks to wait: its delay-seconds, or the time from `nowMs` to its
 * HTTP-date rounded up to whole seconds, 0 for a date already past. undefined for no value, or
 * one that is neither (a negative or fractional number, a malformed date): the caller's own
 * backoff applies, as with no header.
 */
export function retryAfterSeconds(value: string | null | undefined, nowMs: number = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) {
    const s = Number(v);
    return Number.isSafeInteger(s) ? s : undefined;
  }
  const at = httpDate(v, nowMs);
  return at === undefined ? undefined : Math.max(0, Math.ceil((at - nowMs) / 1000));
}

/** An HTTP-date in ms since the epoch; undefined when `s` is none, or names no real day or time. */
function httpDate(s: string, nowMs: number): number | undefined {
  let m = IMF_FIXDATE.exec(s);
  if (m) return utc(Number(m[3]), m[2], Number(m[1]), m.slice(4, 7));
  m = ASCTIME_DATE.exec(s);
  if (m) return utc(Number(m[6]), m[1], Number(m[2]), m.slice(3, 6));
  m = RFC850_DATE.exec(s);
  if (!m) return undefined;
  // A two-digit year more than 50 years ahead is the latest past year with those digits (5.6.7).
  const thisYear = new Date(nowMs).getUTCFullYear();
  let year = thisYear - (thisYear % 100) + Number(m[3]);
  if (year > thisYear + 50) year -= 100;
  return utc(year, m[2], Number(m[1]), m.slice(4, 7));
}

function utc(year: number, month: string, day: number, hms: string[]): number | undefined {
  const [h, min, sec] = hms.map(Number);
  // setUTCFullYear, not Date.UTC, which reads years 0-99 as 1900-1999
  const d = new Date(0);
  d.setUTCFullYear(year, MONTHS.indexOf(month), day);
  // 31 Feb would roll over into March: not a date (second 60 is a leap second)
  if (d.getUTCDate() !== day || h > 23 || min > 59 || sec > 60) return undefined;
  return d.getTime() + ((h * 60 + min) * 60 + sec) * 1000;
}
