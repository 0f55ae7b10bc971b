// The Express service: express-session with connect-redis, the stack most Node
// services already run. nginx sends it everything under /node/:
//
//   /node/login?user=NAME  regenerate the session and store the user
//   /node/increment        bump the counter (403 before login)
//   /node/logout           destroy the session (the Redis key is deleted)
//   /node/                 show the user and the counter, whoever wrote them
//   /node/health           answers without touching a session
//
// It reads the same two variables as the Python services: SESSIONKIT_URL (a
// redis:// or rediss:// URL; ?prefix= is the key prefix, `sess:` by default)
// and SESSIONKIT_SECRET_KEYS (comma-separated, newest first: the first signs,
// all verify, as express-session's `secret` array). PORT and HOST say where
// to listen. Run: node examples/shared-login/express_service.js
"use strict";

const path = require("node:path");
const { createRequire } = require("node:module");

// The packages are the repository's pinned ones (npm ci --prefix node).
const requirePinned = createRequire(path.join(__dirname, "..", "..", "node", "package.json"));
const express = requirePinned("express");
const session = requirePinned("express-session");
const { RedisStore } = requirePinned("connect-redis");
const { createClient } = requirePinned("redis");

const COOKIE_NAME = "connect.sid";
const MAX_USER_CHARS = 64;

function settings(env) {
  const keys = (env.SESSIONKIT_SECRET_KEYS || "").split(",").map((key) => key.trim()).filter(Boolean);
  if (keys.length === 0) {
    throw new Error("SESSIONKIT_SECRET_KEYS is not set (comma-separated keys, newest first)");
  }
  const url = new URL(env.SESSIONKIT_URL || "redis://127.0.0.1:6379/0");
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    throw new Error(`this service speaks redis:// and rediss:// only, not ${url.protocol}//`);
  }
  const prefix = url.searchParams.get("prefix") ?? "sess:";
  url.search = ""; // the other options are sessionkit's, not node-redis's
  return { keys, prefix, redisUrl: url.toString() };
}

function validUser(name) {
  return typeof name === "string" && name.length > 0 && name.length <= MAX_USER_CHARS
    && name.trim() === name && !/[\p{C}]/u.test(name);
}

async function main() {
  const { keys, prefix, redisUrl } = settings(process.env);
  const client = createClient({ url: redisUrl });
  client.on("error", (error) => console.error(`express: redis: ${error.message}`));
  await client.connect();

  const app = express();
  app.set("trust proxy", "loopback"); // nginx, on this host, says whether the browser used https
  app.get("/node/health", (req, res) => res.json({ ok: true }));
  app.use(session({
    name: COOKIE_NAME,
    secret: keys,
    store: new RedisStore({ client, prefix }),
    resave: false, // a request that changed nothing writes nothing
    saveUninitialized: false, // no session stored, no cookie set, before there is something in it
    cookie: { path: "/", httpOnly: true, sameSite: "lax", secure: "auto" },
  }));

  const reply = (fields) => ({ ...fields, service: "express", pid: process.pid });

  app.get("/node/login", (req, res, next) => {
    const user = req.query.user ?? "alice";
    if (!validUser(user)) {
      res.status(400).json({ error: `user must be 1-${MAX_USER_CHARS} printable characters` });
      return;
    }
    req.session.regenerate((error) => { // a new id at every login
      if (error) return next(error);
      req.session.user = user;
      res.json(reply({ logged_in: user }));
    });
  });

  app.get("/node/increment", (req, res) => {
    if (!req.session.user) {
      res.status(403).json({ error: "not logged in", login: "/node/login" });
      return;
    }
    req.session.count = (req.session.count || 0) + 1;
    res.json(reply({ user: req.session.user, count: req.session.count }));
  });

  app.get("/node/logout", (req, res, next) => {
    req.session.destroy((error) => { // deletes the key: every service sees no session
      if (error) return next(error);
      res.clearCookie(COOKIE_NAME, { path: "/" });
      res.json(reply({ logged_out: true }));
    });
  });

  app.get("/node/", (req, res) => {
    if (!req.session.user) {
      res.status(403).json({ error: "not logged in", login: "/node/login" });
      return;
    }
    res.json(reply({ user: req.session.user, count: req.session.count || 0 }));
  });

  const server = app.listen(Number(process.env.PORT || 3000), process.env.HOST || "127.0.0.1", () => {
    const { address, port } = server.address();
    console.log(`express: serving on http://${address}:${port} (pid ${process.pid})`);
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    client.quit().finally(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  console.error(`express: ${error.message}`);
  process.exit(1);
});
