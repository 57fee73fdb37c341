// Package boundaries of fedlora, checked by `npm test` (and `npm run boundaries`):
//   shared/ and certs/   import nothing from coordinator/, site-agent/ or cli/ (they are what both sides share);
//   coordinator/, site-agent/  never import each other (they meet only through shared/ and the wire);
//   site-agent/engine/   is entered only through site-agent/engine/index.ts.
// Tests: test/engine/ and test/bench/ test and measure the engine's internals, so they may import
// them; every other test uses the engine through index.ts like the product does.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'shared-is-independent',
      comment: 'shared/ is used by the coordinator, the site agent and the CLI: it imports none of them.',
      severity: 'error',
      from: { path: '^shared/' },
      to: { path: '^(coordinator|site-agent|cli)/' },
    },
    {
      name: 'certs-is-independent',
      comment: 'certs/ (CA, join tokens) is used by both sides: it imports neither, nor the CLI.',
      severity: 'error',
      from: { path: '^certs/' },
      to: { path: '^(coordinator|site-agent|cli)/' },
    },
    {
      name: 'coordinator-not-to-site-agent',
      comment: 'The coordinator and the site agent share code only through shared/.',
      severity: 'error',
      from: { path: '^coordinator/' },
      to: { path: '^site-agent/' },
    },
    {
      name: 'site-agent-not-to-coordinator',
      comment: 'The coordinator and the site agent share code only through shared/.',
      severity: 'error',
      from: { path: '^site-agent/' },
      to: { path: '^coordinator/' },
    },
    {
      name: 'engine-only-through-index',
      comment: 'Outside site-agent/engine/ only site-agent/engine/index.ts is imported (tests of engine internals excepted).',
      severity: 'error',
      from: { pathNot: '^(site-agent/engine/|test/engine/|test/bench/)' },
      to: { path: '^site-agent/engine/', pathNot: '^site-agent/engine/index\\.ts$' },
    },
    {
      name: 'product-not-to-test',
      comment: 'Product code never imports test code.',
      severity: 'error',
      from: { path: '^(shared|certs|coordinator|site-agent|cli)/' },
      to: { path: '^test/' },
    },
    {
      name: 'no-circular',
      comment: 'Modules depend on each other one way (parts get what they need passed in). The cycles still in '
        + 'coordinator/http/ and site-agent/serve/ (server <-> route plugins, types only) and site-agent/ (agent <-> '
        + 'workspace, outbox delivery, cross-eval; deid, synth, engine graph) are exempt until they are untangled; '
        + 'a new cycle anywhere else fails.',
      severity: 'error',
      from: { pathNot: '^(coordinator/http|site-agent/(agent|data|engine/graph|serve))/' },
      to: { circular: true },
    },
    {
      name: 'resolvable',
      comment: 'Every relative import resolves to a file. The assistant\'s pages import /static/common.js, a URL the '
        + 'server maps to site-agent/serve/page/common.js (site-agent/serve/routes/static-page.ts).',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true, pathNot: '^(node:|/static/)' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|test-artifacts)/' },
    tsPreCompilationDeps: true, // type-only imports count too
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.mjs', '.js', '.json'], exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
