/*
 * sessionkit push client: tells the page the moment its session ends.
 * Plain JavaScript, no build step, no dependency. Served by PushEndpoint and
 * StatusEndpoint at <mount>/client.js.
 *
 *   <script src="/session-events/client.js"></script>
 *   <script>
 *     const watcher = SessionKitPush.watch({
 *       url: "/session-events",              // where the endpoint is mounted
 *       onInvalidated(reason) { showSignedOut(reason); },
 *     });
 *     // watcher.stop() when the page no longer cares
 *   </script>
 *
 * Transports, in order: WebSocket, then Server-Sent Events, then polling
 * <url>/status. A transport that fails twice without ever connecting gives
 * way to the next one (a proxy that blocks WebSockets, a network that buffers
 * event streams). Every reconnect waits a random time between 0 and
 * min(maxDelay, minDelay * 2^attempt) ("full jitter"): after a deploy or a
 * Redis failover, thousands of pages come back spread over seconds instead of
 * all in the same instant. The session is named by its cookie only; after
 * each reconnect the server checks it again, so an end that happened while the
 * page was disconnected is reported on reconnect.
 *
 * onInvalidated(reason) is called once, with one of: "logout", "evicted"
 * (signed in elsewhere past the per-user limit), "revoked" ("log out
 * everywhere", a device removed), "expired", "emptied", "invalid" (the cookie
 * names no live session). A "regenerated" session (a new id at login) is not an
 * end: the client reconnects with the new cookie.
 */
(function (global) {
  "use strict";

  var CLOSE_SESSION_ENDED = 4401;
  var CLOSE_FORBIDDEN_ORIGIN = 4403;

  function watch(options) {
    var base = (options.url || "/session-events").replace(/\/+$/, "");
    var transports = options.transports || ["websocket", "sse", "poll"];
    var onInvalidated = options.onInvalidated || function () {};
    var onState = options.onState || function () {};
    var minDelay = options.minDelay || 500;
    var maxDelay = options.maxDelay || 30000;
    var pollInterval = options.pollInterval || 5000;
    var index = 0;          // current transport
    var attempt = 0;        // consecutive failed connections (backoff exponent)
    var neverOpened = 0;    // failures of this transport without a single open
    var stopped = false;
    var current = null;     // {close()} of the live connection
    var timer = null;

    function usable(name) {
      if (name === "websocket") return typeof global.WebSocket === "function";
      if (name === "sse") return typeof global.EventSource === "function";
      return typeof global.fetch === "function";
    }

    function delay() {
      var ceiling = Math.min(maxDelay, minDelay * Math.pow(2, attempt));
      return Math.floor(Math.random() * ceiling);
    }

    function finish(reason) {
      if (stopped) return;
      stopped = true;
      cleanup();
      onState(transports[index], "invalidated");
      onInvalidated(reason);
    }

    function cleanup() {
      if (timer !== null) { clearTimeout(timer); timer = null; }
      if (current !== null) { var c = current; current = null; c.close(); }
    }

    function schedule(wait) {
      cleanup();
      if (stopped) return;
      timer = setTimeout(function () { timer = null; connect(); }, wait);
    }

    function opened() {
      attempt = 0;
      neverOpened = -1;  // this transport works: never give it up for a later failure
      onState(transports[index], "open");
    }

    function failed(wasOpen) {
      if (stopped) return;
      onState(transports[index], "retrying");
      if (!wasOpen && neverOpened >= 0) {
        neverOpened += 1;
        if (neverOpened >= 2 && index < transports.length - 1) {
          index += 1;
          neverOpened = 0;
          attempt = 0;
          schedule(0);
          return;
        }
      }
      attempt += 1;
      schedule(delay());
    }

    function message(text, reconnectNow) {
      var data;
      try { data = JSON.parse(text); } catch (e) { return; }
      if (!data || data.event !== "sessionInvalidated") return;
      if (data.reason === "regenerated") { reconnectNow(); return; }
      finish(data.reason || "invalid");
    }

    function connect() {
      if (stopped) return;
      while (!usable(transports[index]) && index < transports.length - 1) index += 1;
      var name = transports[index];
      onState(name, "connecting");
      if (name === "websocket") connectSocket();
      else if (name === "sse") connectEvents();
      else poll();
    }

    function connectSocket() {
      var location = global.location;
      var scheme = location.protocol === "https:" ? "wss:" : "ws:";
      var socket = new global.WebSocket(scheme + "//" + location.host + base + "/ws");
      var isOpen = false;
      var done = false;
      current = { close: function () { done = true; try { socket.close(); } catch (e) { /* closing */ } } };
      socket.onmessage = function (event) {
        if (!isOpen) { isOpen = true; opened(); }
        message(event.data, function () { done = true; schedule(0); });
      };
      socket.onopen = function () { isOpen = true; opened(); };
      socket.onclose = function (event) {
        if (done || stopped) return;
        done = true;
        current = null;
        if (event.code === CLOSE_SESSION_ENDED) { finish("invalid"); return; }
        if (event.code === CLOSE_FORBIDDEN_ORIGIN) { neverOpened = 1; }
        failed(isOpen);
      };
    }

    function connectEvents() {
      var source = new global.EventSource(base + "/events", { withCredentials: true });
      var isOpen = false;
      current = { close: function () { source.close(); } };
      source.onopen = function () { isOpen = true; opened(); };
      source.addEventListener("sessionInvalidated", function (event) {
        message(event.data, function () { schedule(0); });
      });
      source.onerror = function () {
        if (stopped) return;
        source.close();
        current = null;
        failed(isOpen);
      };
    }

    function poll() {
      var aborted = false;
      current = { close: function () { aborted = true; } };
      global.fetch(base + "/status", { credentials: "same-origin", cache: "no-store" }).then(function (response) {
        if (aborted || stopped) return;
        current = null;
        if (response.status === 401) { finish("invalid"); return; }
        if (!response.ok) { failed(false); return; }
        opened();
        schedule(pollInterval * (0.8 + Math.random() * 0.4));
      }, function () {
        if (aborted || stopped) return;
        current = null;
        failed(false);
      });
    }

    // A page coming back to the foreground or online checks at once (timers sleep in background tabs).
    function wake() {
      if (stopped || (global.document && global.document.visibilityState === "hidden")) return;
      if (timer !== null) schedule(0);
    }
    if (global.addEventListener) global.addEventListener("online", wake);
    if (global.document && global.document.addEventListener) global.document.addEventListener("visibilitychange", wake);

    connect();
    return {
      stop: function () { stopped = true; cleanup(); },
      get transport() { return transports[index]; },
    };
  }

  global.SessionKitPush = { watch: watch, CLOSE_SESSION_ENDED: CLOSE_SESSION_ENDED };
})(typeof window !== "undefined" ? window : this);
