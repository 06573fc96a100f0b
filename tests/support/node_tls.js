// A Node.js HTTPS peer for tests/tls.rs, using only Node's own modules (its OpenSSL is inside
// the `node` executable).
//
//   node node_tls.js server KEY CERT PORT   serves HTTP/1.1 and HTTP/2 (by ALPN) on
//                                            127.0.0.1:PORT; prints "ready", then one line
//                                            "METHOD TARGET STATUS VERSION" per answer;
//                                            stops when stdin closes
//   node node_tls.js client CA PORT         makes the requests below, one at a time, and
//                                            prints one line "METHOD TARGET STATUS BYTES" per
//                                            response it read whole
'use strict';

const fs = require('fs');
const http2 = require('http2');
const https = require('https');

const [mode, ...args] = process.argv.slice(2);

function body(target) {
  return target === '/missing' ? 'no such thing\n' : `answer to ${target}\n`;
}

if (mode === 'server') {
  const [key, cert, port] = args;
  const server = http2.createSecureServer(
    { key: fs.readFileSync(key), cert: fs.readFileSync(cert), allowHTTP1: true },
    (req, res) => {
      // Read the request body whole before answering.
      req.resume();
      req.on('end', () => {
        const status = req.url === '/missing' ? 404 : 200;
        const text = body(req.url);
        res.writeHead(status, {
          'content-type': 'text/plain',
          'content-length': Buffer.byteLength(text),
        });
        res.end(text);
        console.log(`${req.method} ${req.url} ${status} ${req.httpVersion}`);
      });
    },
  );
  server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
  // Gone with the test: when its stdin closes (the test ended, or failed), so does the server.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
} else if (mode === 'client') {
  const [caPath, port] = args;
  const ca = fs.readFileSync(caPath);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });

  const http1 = (method, target, payload) =>
    new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: Number(port),
          method,
          path: target,
          agent,
          ALPNProtocols: ['http/1.1'],
          headers: payload ? { 'content-length': Buffer.byteLength(payload) } : {},
        },
        (res) => {
          let bytes = 0;
          res.on('data', (chunk) => (bytes += chunk.length));
          res.on('end', () => resolve(`${method} ${target} ${res.statusCode} ${bytes}`));
        },
      );
      req.on('error', reject);
      req.end(payload);
    });

  const http2Requests = (targets) =>
    new Promise((resolve, reject) => {
      const session = http2.connect(`https://127.0.0.1:${port}`, { ca });
      session.on('error', reject);
      const lines = [];
      const next = (i) => {
        if (i === targets.length) {
          session.close(() => resolve(lines));
          return;
        }
        const stream = session.request({ ':method': 'GET', ':path': targets[i] });
        let status = 0;
        let bytes = 0;
        stream.on('response', (headers) => (status = headers[':status']));
        stream.on('data', (chunk) => (bytes += chunk.length));
        stream.on('end', () => {
          lines.push(`GET ${targets[i]} ${status} ${bytes}`);
          next(i + 1);
        });
        stream.on('error', reject);
        stream.end();
      };
      next(0);
    });

  (async () => {
    console.log(await http1('GET', '/one'));
    console.log(await http1('GET', '/missing'));
    console.log(await http1('POST', '/submit', 'name=netsonde&kind=test'));
    agent.destroy();
    for (const line of await http2Requests(['/h2/one', '/missing'])) {
      console.log(line);
    }
  })().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  console.error('usage: node_tls.js server KEY CERT PORT | client CA PORT');
  process.exit(2);
}
