// A Node.js HTTP/2 server for tests/http2.rs that answers every request as soon as its
// headers arrive and only then reads its body to the end, as servers that refuse an upload on
// its headers do (grpc-go for an unknown method). Node's own modules only.
//
//   node h2_early.js PORT              h2c (prior knowledge) on 127.0.0.1:PORT
//   node h2_early.js PORT KEY CERT     HTTP/2 over TLS (ALPN h2)
//
// Prints "ready", then "read METHOD PATH BYTES" when a request's body has ended (BYTES: what
// Node delivered of it); stops when stdin closes.
'use strict';

const fs = require('fs');
const http2 = require('http2');

const [port, key, cert] = process.argv.slice(2);
const server = key
  ? http2.createSecureServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) })
  : http2.createServer();

server.on('stream', (stream, headers) => {
  let bytes = 0;
  // The whole answer, END_STREAM included, before a byte of the body is read.
  stream.respond({ ':status': 200, 'content-type': 'text/plain', 'content-length': '6' });
  stream.end('early\n');
  stream.on('data', (chunk) => {
    bytes += chunk.length;
  });
  stream.on('end', () => {
    process.stdout.write(`read ${headers[':method']} ${headers[':path']} ${bytes}\n`);
  });
});

server.listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
