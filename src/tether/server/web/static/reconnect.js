// The web client's reconnect schedule for its subscribe sockets (docs/protocol.md §13).
//
// A browser tab may sit in the background for hours, so unlike `tether attach` it never gives up
// on a server that is away; it follows the same close codes and the viewer's schedule, with jitter
// so that many tabs do not come back in step:
//
// * an ordinary drop (1006, 1011, a socket the page replaced, …): 2 s for 5 attempts, then doubling
//   (4, 8, 16 s), each ±20 %, never more than 30 s; a socket that opened starts the count over;
// * 1012 (the server announced a restart): the first attempt after 250 ms, then as above;
// * 4001 (session not found): 3 more attempts at 2 s × n (the count resets when a frame arrives,
//   not on open), then it stops: "Session not found";
// * 4003 (logged out, the login revoked, or a lower role): it stops at once.
//
// Pure: no timers, no sockets, the random source passed in. session.js and code.js own the timers.

export const SCHEDULE = Object.freeze({
  stepMs: 2000, // ordinary drops: the first attempts
  steadyTries: 5, // attempts at stepMs before doubling
  capMs: 30000,
  jitter: 0.2,
  restartMs: 250, // the first attempt after a 1012
  goneTries: 3, // 4001: attempts before "not found" is believed
});

export class ReconnectPolicy {
  constructor(schedule = SCHEDULE) {
    this.schedule = schedule;
    this.attempt = 0; // ordinary attempts since the last open
    this.goneTries = 0; // 4001s since the last frame
    this.stopped = null; // 'unauthorized' | 'gone' once it stopped for good
  }

  opened() {
    this.attempt = 0;
  }

  heard() {
    this.goneTries = 0;
  }

  // A retry that the page asks for itself (the tab came back, the network is back, "Retry now"):
  // false once the policy stopped; else the schedule starts over.
  retryNow() {
    if (this.stopped) return false;
    this.attempt = 0;
    return true;
  }

  // The socket closed with `code`: {retry: true, delayMs, attempt, why} or {retry: false, why}.
  closed(code, random = Math.random) {
    const s = this.schedule;
    if (this.stopped) return { retry: false, why: this.stopped };
    if (code === 4003) {
      this.stopped = 'unauthorized';
      return { retry: false, why: this.stopped };
    }
    if (code === 4001) {
      this.goneTries += 1;
      if (this.goneTries > s.goneTries) {
        this.stopped = 'gone';
        return { retry: false, why: this.stopped };
      }
      return { retry: true, delayMs: s.stepMs * this.goneTries, attempt: this.goneTries, why: 'not_found' };
    }
    const n = this.attempt;
    this.attempt += 1;
    let base;
    if (code === 1012 && n === 0) base = s.restartMs;
    else if (n < s.steadyTries) base = s.stepMs;
    else base = Math.min(s.capMs, s.stepMs * 2 ** (n - s.steadyTries + 1));
    const delayMs = Math.min(s.capMs, Math.round(base * (1 - s.jitter + 2 * s.jitter * random())));
    return { retry: true, delayMs, attempt: n + 1, why: code === 1012 ? 'restart' : 'dropped' };
  }
}
