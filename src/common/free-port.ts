import { createServer } from 'node:net';

/**
 * A TCP port the kernel just had free on 127.0.0.1. Another process can take it before it is used;
 * a server that then fails to bind says so in its log (restore-test reports that line).
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
