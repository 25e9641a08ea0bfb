#!/usr/bin/env node
// Local Kinesis emulator for pipeline_ingest tests.
// kinesalite's own CLI binds all interfaces; this wrapper binds 127.0.0.1 only.
// By default the store is in memory (leveldown's native addon is never loaded) and streams do
// not survive a restart of this process. With --path DIR (kinesalite's own option) the store is
// a LevelDB database in DIR: streams, records and sequence numbers survive a restart, which the
// outage tests need (stop kinesalite, start it again on the same port with the same data).
//
// Usage: node kinesalite.js [--path DIR] [port] [host]   run the server (defaults 24567 127.0.0.1)
//        node kinesalite.js --probe [port] [host]         exit 0 iff a ListStreams call succeeds
'use strict'

const args = process.argv.slice(2)
const probe = args[0] === '--probe'
if (probe) args.shift()
let dbPath = null
const pathAt = args.indexOf('--path')
if (pathAt >= 0) {
  dbPath = args[pathAt + 1]
  if (!dbPath) {
    console.error('kinesalite: --path needs a directory')
    process.exit(2)
  }
  args.splice(pathAt, 2)
}
const port = parseInt(args[0] || process.env.KINESIS_PORT || '24567', 10)
const host = args[1] || process.env.KINESIS_HOST || '127.0.0.1'

if (probe) {
  // kinesalite checks that a SigV4-shaped Authorization header is present, not its signature.
  const req = require('http').request({
    host, port, method: 'POST', path: '/', timeout: 3000,
    headers: {
      'Content-Type': 'application/x-amz-json-1.1',
      'X-Amz-Target': 'Kinesis_20131202.ListStreams',
      'X-Amz-Date': '20200101T000000Z',
      'Authorization': 'AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/kinesis/aws4_request, ' +
        'SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0',
    },
  }, (res) => {
    let body = ''
    res.on('data', (c) => { body += c })
    res.on('end', () => {
      const ok = res.statusCode === 200 && /StreamNames/.test(body)
      if (!ok) console.error(`probe: HTTP ${res.statusCode} ${body}`)
      process.exit(ok ? 0 : 1)
    })
  })
  req.on('timeout', () => { req.destroy(new Error('timeout')) })
  req.on('error', (e) => { console.error(`probe: ${e.message}`); process.exit(1) })
  req.end('{}')
  return
}

const kinesalite = require('kinesalite')

if (dbPath) require('fs').mkdirSync(dbPath, { recursive: true })

const server = kinesalite({
  path: dbPath || undefined,
  createStreamMs: 0,
  deleteStreamMs: 0,
  updateStreamMs: 0,
  shardLimit: 100,
})

server.on('error', (err) => {
  console.error(`kinesalite: server error: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
})

server.listen(port, host, () => {
  const store = dbPath ? `LevelDB store in ${dbPath}` : 'in-memory store'
  console.log(`kinesalite listening on http://${host}:${port} (pid ${process.pid}, ${store})`)
})

function shutdown(sig) {
  console.log(`kinesalite: ${sig}, shutting down`)
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
