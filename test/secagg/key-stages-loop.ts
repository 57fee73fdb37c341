// Child process of keygen-gc.test.ts, run with a 1 MiB young generation so that scavenges are
// frequent: the key stages of secure aggregation (X25519 key generation and JWK export in
// advertiseKeys, the private-key export, Diffie-Hellman and Shamir sharing in shareKeys) for two
// sites, over and over, printing one line per 100 iterations so the parent sees progress.
// argv[2]: the number of iterations.
import { advertiseKeys, collectAdvertise, shareKeys, type SecAggConfig } from '../../shared/secagg/protocol.ts';

const iterations = Number(process.argv[2] ?? 1000);
const cfg: SecAggConfig = { round: 1, threshold: 2, clipRange: 1, dim: 4 };
console.log('ready');
for (let i = 1; i <= iterations; i++) {
  const a = advertiseKeys('a', cfg);
  const b = advertiseKeys('b', cfg);
  const roster = collectAdvertise(cfg, [a.msg, b.msg]);
  shareKeys(a.state, roster);
  shareKeys(b.state, roster);
  if (i % 100 === 0) console.log(`iteration ${i}`);
}
console.log('done');
