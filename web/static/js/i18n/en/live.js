/** English strings of the live connection badge (live.js). */
export default {
  "live.live": "Live",
  "live.connecting": "Connecting…",
  "live.polling": {
    one: "Polling every {n} s (live updates unavailable)",
    other: "Polling every {n} s (live updates unavailable)",
  },
  "live.unavailable": "Live updates unavailable",
  "live.title.live": "Changes appear as they happen.",
  "live.title.connecting": "Opening the live update stream.",
  "live.title.polling": "The live update stream failed and is being retried; meanwhile the page reloads on a timer.",
};
