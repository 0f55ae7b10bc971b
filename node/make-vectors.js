// Writes the vectors sessionkit's connect codec is checked against (tests/interop/vectors.json),
// produced by the real packages: cookie values signed by cookie-signature and serialized by
// `cookie`, what express-session reads out of a Cookie header, and documents written by
// connect-redis into a real Redis (with the TTLs it set).
//
// Run from the repository root, against any Redis you can write to (keys under "vectors:" are
// made and deleted):
//   REDIS_URL=redis://127.0.0.1:6379/0 node node/make-vectors.js > tests/interop/vectors.json
'use strict'

const signature = require('cookie-signature')
const cookie = require('cookie')
const session = require('express-session')
const { RedisStore } = require('connect-redis')
const { createClient } = require('redis')

const { Cookie, Session } = session
const SECRETS = ['n'.repeat(40), 'o'.repeat(40), 'keyboard cat']

// express-session's getcookie() and unsigncookie(), step for step, on the real packages.
function readCookie (header, secrets) {
  const raw = cookie.parse(header)['connect.sid']
  if (!raw || raw.substr(0, 2) !== 's:') return null
  for (const secret of secrets) {
    const id = signature.unsign(raw.slice(2), secret)
    if (id !== false) return id || null // an empty id is no id: express-session generates a new one
  }
  return null
}

function signatures () {
  const ids = ['p4zQ3nqjE0m6q9Y2r8Q1s5uW7xK0bZcD', 'a.b.c', '1e8f5a2c-0d3b-4f7e-9a61-2b8c4d6e0f13',
    'caf\u00e9 \u00fcber', 'with space+plus/slash=eq', '\u{1F600}']
  const out = []
  for (const secret of SECRETS) {
    for (const id of ids) {
      const signed = 's:' + signature.sign(id, secret)
      out.push({ id, secret, signed, header: cookie.serialize('connect.sid', signed) })
    }
  }
  return out
}

function reads () {
  const [secret, old] = SECRETS
  const good = cookie.serialize('connect.sid', 's:' + signature.sign('p4zQ3nqjE0m6q9Y2r8Q1s5uW7xK0bZcD', secret))
    .split('=').slice(1).join('=')
  const oldSigned = cookie.serialize('connect.sid', 's:' + signature.sign('oldOldOld', old)).split('=').slice(1).join('=')
  const dotted = encodeURIComponent('s:' + signature.sign('a.b.c', secret))
  const empty = encodeURIComponent('s:' + signature.sign('', secret))
  const headers = [
    `connect.sid=${good}`,
    `other=1; connect.sid=${good}; more=2`,
    `  connect.sid\t=\t${good}  `,
    `connect.sid="${good}"`,
    `connect.sid=${oldSigned}`,
    `connect.sid=${dotted}`,
    `connect.sid=${empty}`,
    `connect.sid=garbage; connect.sid=${good}`,
    `connect.sid=${good}; connect.sid=garbage`,
    `connect.sid=${good.slice(0, -1)}`,
    `connect.sid=${good}x`,
    `connect.sid=${good.replace('s%3A', 's:')}`,
    `connect.sid=${good.replace('s%3A', '')}`,
    `connect.sid=${good}%zz`,
    `connect.sid=${good}%E0%A4`,
    `connect.sid=${encodeURIComponent(decodeURIComponent(good))}`,
    `connect.sid=${encodeURIComponent(decodeURIComponent(good)).replace(/%2F/g, '%2f')}`,
    `connect.sid=${encodeURIComponent(encodeURIComponent(decodeURIComponent(good)))}`,
    `x;connect.sid=${good}`,
    `x=1;;connect.sid=${good}`,
    `connect.sid;x=1; connect.sid=${good}`,
    'connect.sid=',
    'connect.sid=s%3A',
    'connect.sid=s%3A.',
    `Connect.sid=${good}`,
    `connect.sid=${good.toLowerCase()}`,
    `connect.sid=s%3A\u00e9${good.slice(4)}`
  ]
  return headers.map((header) => ({ header, secrets: [secret, old], id: readCookie(header, [secret, old]) }))
}

const DATA = {
  user: 'ann',
  n: 1,
  ratio: 0.1,
  tiny: 1e-7,
  huge: 1e21,
  negativeZero: -0,
  safe: 9007199254740991,
  list: [1, 'a', null, true, [], {}],
  nested: { deep: { deeper: ['x'] }, empty: {} },
  text: 'caf\u00e9 \u2028\u2029 \u{1F600} "q" \\ \u0001\n\t\u007f </script>'
}

const COOKIES = [
  { name: 'one hour', options: { maxAge: 3600000 } },
  { name: 'browser session', options: {} },
  { name: 'every attribute', options: { maxAge: 86400000, secure: true, sameSite: 'strict', domain: 'example.com', path: '/app', httpOnly: false, partitioned: true, priority: 'high' } },
  { name: 'secure auto, resolved', options: { maxAge: 600000, secure: false, sameSite: 'lax' } }
]

async function documents (client) {
  const out = []
  const store = new RedisStore({ client, prefix: 'vectors:' })
  let n = 0
  const save = async (name, options, data, storeOptions) => {
    const target = storeOptions ? new RedisStore({ client, prefix: 'vectors:', ...storeOptions }) : store
    const sid = `vector${n++}`
    const req = { sessionID: sid, sessionStore: target }
    const sess = new Session(req)
    const before = Date.now()
    sess.cookie = new Cookie(options)
    Object.assign(sess, data)
    const now = Date.now()
    await target.set(sid, sess)
    const document = await client.get('vectors:' + sid)
    const pttl = await client.pTTL('vectors:' + sid)
    out.push({ name, sid, options, storeOptions: storeOptions || {}, cookieMadeAt: before, now, document, pttl })
    return { sid, sess, target }
  }
  for (const { name, options } of COOKIES) {
    await save(name, options, DATA)
  }
  // An expiry half a second past a whole number of seconds: the TTL connect-redis computes is exact.
  const { sess } = await save('explicit expires', { maxAge: 3600000 }, { user: 'bob' })
  sess.cookie.expires = new Date(Date.now() + 90500)
  const now = Date.now()
  await store.set(sess.id, sess)
  out.push({ name: 'explicit expires, saved again', sid: sess.id, options: {}, storeOptions: {}, cookieMadeAt: now, now,
    document: await client.get('vectors:' + sess.id), pttl: await client.pTTL('vectors:' + sess.id) })
  await save('store ttl option', {}, { user: 'cid' }, { ttl: 600 })
  await save('no time left', { maxAge: -1000 }, { user: 'dee' })
  // connect-redis's touch: the TTL follows the touched cookie, the stored expires does not (its #251).
  const touched = await save('touched by connect-redis', { maxAge: 3600000 }, { user: 'eve' })
  await new Promise((resolve) => setTimeout(resolve, 1100))
  touched.sess.touch()
  const touchedAt = Date.now()
  await store.touch(touched.sid, touched.sess)
  out.push({ name: 'after connect-redis touch', sid: touched.sid, options: {}, storeOptions: {}, cookieMadeAt: touchedAt,
    now: touchedAt, document: await client.get('vectors:' + touched.sid), pttl: await client.pTTL('vectors:' + touched.sid),
    touchedExpires: touched.sess.cookie.expires.toISOString() })
  for (const key of await client.keys('vectors:*')) await client.del(key)
  return out
}

async function main () {
  const client = createClient({ url: process.env.REDIS_URL })
  await client.connect()
  try {
    // The versions that made these vectors, from the lock (connect-redis exports no package.json).
    const lock = require('./package-lock.json').packages
    const versions = {}
    for (const name of ['express-session', 'connect-redis', 'cookie', 'cookie-signature', 'redis']) {
      versions[name] = lock[`node_modules/${name}`].version
    }
    const vectors = { versions, signatures: signatures(), reads: reads(), documents: await documents(client) }
    process.stdout.write(JSON.stringify(vectors, null, 1) + '\n')
  } finally {
    await client.quit()
  }
}

main().catch((err) => { console.error(err); process.exit(1) })
