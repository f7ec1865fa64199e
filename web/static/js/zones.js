/*
 * IANA time zone arithmetic for the date-time pickers, DST-safe, done with
 * Intl.DateTimeFormat only. Times are handled as ms; a "wall" is the UTC ms
 * of a zone's wall-clock fields (so it can be read back with getUTC*).
 */
import { t } from "./i18n.js";

function pad(n) { return String(n).padStart(2, "0"); }

/** The browser's IANA time zone ("UTC" when the browser does not say). */
export function browserZone() { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; }

const zoneFormats = new Map(); // IANA zone -> its numeric Intl.DateTimeFormat, null when unknown

/** The cached numeric formatter of an IANA zone; null when this browser does not know the zone. */
export function zoneFormat(zone) {
  if (!zoneFormats.has(zone)) {
    let f = null;
    try {
      // Read back as numbers only: the locale does not matter, "en-US" gives plain digits.
      f = new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "numeric",
        day: "numeric", hour: "numeric", minute: "numeric", second: "numeric" });
    } catch (e) { /* a RangeError: not a zone this browser knows */ }
    zoneFormats.set(zone, f);
  }
  return zoneFormats.get(zone);
}

/** The wall clock of an IANA zone at an instant (ms), as the UTC ms of the same fields. */
export function zoneWall(ms, zone) {
  const f = zoneFormat(zone);
  if (!f) throw new Error(t("core.zone.unknown", { zone }));
  const p = {};
  for (const x of f.formatToParts(new Date(ms))) p[x.type] = Number(x.value);
  return Date.UTC(p.year, p.month - 1, p.day, p.hour % 24, p.minute, p.second);
}

/** A zone's UTC offset at an instant (ms), in minutes: Europe/Samara gives 240. */
export function zoneOffset(ms, zone) {
  const whole = ms - (((ms % 1000) + 1000) % 1000); // the formatter has no milliseconds
  return Math.round((zoneWall(whole, zone) - whole) / 60000);
}

/** A zone's UTC offset as RFC 3339 text ("+04:00") at an instant (ms; default: now). */
export function zoneOffsetText(zone, ms) {
  const min = zoneOffset(ms ?? Date.now(), zone), a = Math.abs(min);
  return `${min < 0 ? "-" : "+"}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

/** A datetime-local value ("2026-12-03T02:00") as the UTC ms of the same fields; throws when invalid. */
export function wallOf(value) {
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d))?$/.exec(value || "");
  const wall = m ? Date.UTC(+m[1], m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0)) : NaN;
  if (isNaN(wall) || new Date(wall).toISOString().slice(0, 16) !== value.slice(0, 16)) throw new Error(t("core.zone.invalid_time"));
  return wall;
}

/** The instants (ms, earliest first) at which a zone's clocks show a wall time
 *  (the UTC ms of its fields): one; two in the hour a DST change repeats; none
 *  in the hour it skips. Tries the offsets around it (a day before, at, after). */
export function zoneInstants(wall, zone) {
  const offsets = new Set([-86400000, 0, 86400000].map((d) => zoneOffset(wall + d, zone)));
  const at = [...offsets].map((o) => wall - o * 60000).filter((x) => zoneWall(x, zone) === wall);
  return [...new Set(at)].sort((a, b) => a - b);
}

/** The instant (ms) of a datetime-local value read as wall-clock time in an
 *  IANA zone, DST-safe; throws when invalid. As the coordinator does for
 *  windows: a time a DST change skips moves forward by the gap, a repeated
 *  one is its first occurrence. */
export function zoneInstant(value, zone) {
  const wall = wallOf(value);
  const at = zoneInstants(wall, zone);
  // Skipped: the offset from before the change puts it past the gap.
  return at.length ? at[0] : wall - zoneOffset(wall - 86400000, zone) * 60000;
}

/** An instant (ms) as RFC 3339 in an IANA zone, with the zone's offset then: "2026-12-03T02:00:00+04:00". */
export function zoneRfc3339(ms, zone) {
  return new Date(zoneWall(ms, zone)).toISOString().slice(0, 19) + zoneOffsetText(zone, ms);
}

/** A datetime-local value read in an IANA zone, as RFC 3339 with the zone's offset at that instant. */
export function zoneToRfc3339(value, zone) { return zoneRfc3339(zoneInstant(value, zone), zone); }

/** datetime-local value for the next 02:00 in an IANA zone (the seed: update at night). */
export function nextNight(zone) {
  const now = Date.now(), today = new Date(zoneWall(now, zone));
  const at2 = (d) => new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() + d, 2)).toISOString().slice(0, 16);
  return zoneInstant(at2(0), zone) > now ? at2(0) : at2(1);
}

/** An RFC 3339 text as written, without seconds: "2026-12-02 01:00 +03:00" (Z: "UTC"). */
export function wallTime(s) {
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)(?::\d\d(?:\.\d+)?)?(.*)$/.exec(s || "");
  if (!m) return s || "–";
  return `${m[1]} ${m[2]} ${m[3] === "Z" || m[3] === "" ? "UTC" : m[3]}`;
}
