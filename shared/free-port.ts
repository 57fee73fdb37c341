// A free TCP port on 127.0.0.1 for a server started as a separate process (`fedlora demo`, the
// fault-test harness: the port goes into its config, so it cannot simply bind port 0). Chosen at random BELOW the kernel's
// ephemeral range (Linux: 32768-60999): a port from listen(0) is free only until it is closed,
// and in the meantime any other process's outgoing connection or listen(0) may be given the same
// one — with many test files in parallel that race made a server fail to start now and then.
// Outside the ephemeral range only another explicit choice like this one can collide.
import { createServer } from 'node:net';

const LOW = 20_000;
const HIGH = 32_000;

function tryListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (await tryListen(port)) return port;
  }
  throw new Error(`no free TCP port found in ${LOW}-${HIGH} on 127.0.0.1 after 200 tries`);
}
