// An Express service with express-session and connect-redis, as a Node team runs it:
// the other side of sessionkit's interop tests (tests/interop/) and of docs/interop.md.
//
// Configured by the environment:
//   PORT         port to listen on (127.0.0.1), or the first argument
//   REDIS_URL    the Redis both sides share (redis://127.0.0.1:6379/0)
//   SECRETS      comma-separated secrets, newest first (express-session's `secret` array)
//   MAX_AGE_MS   cookie.maxAge in ms; empty for a cookie that ends with the browser
//   ROLLING      "1" for express-session's rolling option
//   PREFIX       connect-redis's key prefix (default sess:)
'use strict'

const express = require('express')
const session = require('express-session')
const { RedisStore } = require('connect-redis')
const { createClient } = require('redis')

const client = createClient({ url: process.env.REDIS_URL })
client.on('error', (err) => console.error('redis:', err.message))

const maxAge = process.env.MAX_AGE_MS ? Number(process.env.MAX_AGE_MS) : undefined
const app = express()
app.use(express.json())
app.get('/health', (req, res) => res.send('ok'))
app.use(session({
  store: new RedisStore({ client, prefix: process.env.PREFIX || 'sess:' }),
  secret: (process.env.SECRETS || '').split(',').filter(Boolean),
  resave: false,
  saveUninitialized: false,
  rolling: process.env.ROLLING === '1',
  cookie: { maxAge, sameSite: 'lax' }
}))

// Log in: a new id (fixation defence), then the user.
app.post('/login', (req, res, next) => {
  req.session.regenerate((err) => {
    if (err) return next(err)
    req.session.user = req.query.user || 'ann'
    res.json({ id: req.sessionID })
  })
})

// Everything in the session, as Node sees it (read-only: express-session only touches it).
app.get('/session', (req, res) => {
  res.json({ id: req.sessionID, data: req.session, hasUser: 'user' in req.session })
})

// Set keys from the JSON body.
app.post('/set', (req, res) => {
  Object.assign(req.session, req.body)
  res.json({ id: req.sessionID })
})

app.post('/increment', (req, res) => {
  req.session.count = (req.session.count || 0) + 1
  res.json({ count: req.session.count })
})

app.post('/logout', (req, res, next) => {
  req.session.destroy((err) => {
    if (err) return next(err)
    res.clearCookie('connect.sid')
    res.json({ ok: true })
  })
})

client.connect().then(() => {
  app.listen(Number(process.argv[2] || process.env.PORT), '127.0.0.1')
})
